"""AgentRegistryService: agents register and heartbeat."""

from __future__ import annotations

import grpc

from disksnap.engine.v1 import registry_pb2, registry_pb2_grpc
from engine_svc.app import EngineApp
from engine_svc.commands.register_host import (
    DomainReport,
    Heartbeat,
    RegisterHost,
    heartbeat,
    register_host,
)
from engine_svc.servicers.edge import peer_dns_names, rpc


def _domains(items: object) -> tuple[DomainReport, ...]:
    return tuple(
        DomainReport(d.domain_id, d.free_bytes, d.total_bytes)
        for d in items  # type: ignore[attr-defined]
    )


class RegistryServicer(registry_pb2_grpc.AgentRegistryServiceServicer):
    """Edge of RegisterHost / Heartbeat."""

    def __init__(self, app: EngineApp) -> None:
        self.app = app

    @rpc
    def RegisterHost(
        self, request: registry_pb2.RegisterHostRequest, context: grpc.ServicerContext
    ) -> registry_pb2.RegisterHostResponse:
        host_id = register_host(
            self.app.db,
            RegisterHost(
                name=request.name,
                address=request.address,
                domains=_domains(request.domains),
                live_ops=request.capabilities.live_ops,
                agent_version=request.agent_version,
                qemu_img_version=request.capabilities.qemu_img_version,
                tls_identity=peer_dns_names(context),
                mtls=self.app.settings.tls_cert is not None,
            ),
            self.app.settings.heartbeat_interval,
        )
        return registry_pb2.RegisterHostResponse(
            host_id=host_id,
            heartbeat_interval_s=max(1, int(self.app.settings.heartbeat_interval.total_seconds())),
        )

    @rpc
    def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> registry_pb2.HeartbeatResponse:
        heartbeat(
            self.app.db,
            Heartbeat(
                host_id=request.host_id,
                name=request.name,
                domains=_domains(request.domains),
                tls_identity=peer_dns_names(context),
                mtls=self.app.settings.tls_cert is not None,
            ),
            self.app.settings.heartbeat_interval,
        )
        return registry_pb2.HeartbeatResponse()
