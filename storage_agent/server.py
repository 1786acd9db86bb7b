"""The agent's gRPC servers: StorageAgentService + health + reflection, and an optional
plaintext health-only server for Kubernetes probes (which cannot present a client cert)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from disksnap._certs import reloading_server_credentials
from disksnap.agent.v1 import agent_pb2_grpc
from storage_agent.config import AgentSettings
from storage_agent.layout import atomic_write_json
from storage_agent.ops import resumable_job
from storage_agent.registration import start_registration
from storage_agent.runtime import Runtime, build_runtime
from storage_agent.servicer import SERVICE_NAME, StorageAgentServicer

MAX_RECEIVE_BYTES = 1 << 20
RPC_WORKERS = 16
STOP_GRACE_S = 10.0
MAINTENANCE_INTERVAL_S = 3600.0
_log = logging.getLogger(__name__)


def new_health() -> health.HealthServicer:
    """A health servicer reporting SERVING for "" and the agent service."""
    servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def create_server(
    settings: AgentSettings, rt: Runtime, health_servicer: health.HealthServicer
) -> tuple[grpc.Server, int]:
    """A server (not started) bound to ``settings.listen``, and its port.

    mTLS when certificate, key and CA are configured, plaintext only with ``insecure``.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=RPC_WORKERS, thread_name_prefix="rpc"),
        options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
    )
    agent_pb2_grpc.add_StorageAgentServiceServicer_to_server(StorageAgentServicer(rt), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if settings.tls:
        creds = reloading_server_credentials(settings.certificate_files(), require_client_auth=True)
        port = server.add_secure_port(settings.listen, creds)
    elif settings.insecure:
        port = server.add_insecure_port(settings.listen)
    else:
        raise ValueError("refusing to serve plaintext without --insecure; configure mTLS")
    return server, port


def create_health_server(
    address: str, health_servicer: health.HealthServicer
) -> tuple[grpc.Server, int]:
    """A plaintext server (not started) with only grpc.health.v1, and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
        options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, server.add_insecure_port(address)


def _maintain(rt: Runtime, stop: threading.Event) -> None:
    while True:
        try:
            records, tombstones, trash = rt.prune()
            if records or tombstones or trash:
                _log.info(
                    "pruned %d operation records, %d tombstones, %d trash files",
                    records,
                    tombstones,
                    trash,
                )
        except Exception:
            _log.exception("pruning failed")
        if stop.wait(MAINTENANCE_INTERVAL_S):
            return


def serve(settings: AgentSettings) -> None:
    """Run the agent until SIGTERM or SIGINT, then stop gracefully."""
    rt = build_runtime(settings)
    health_servicer = new_health()
    server, port = create_server(settings, rt, health_servicer)
    health_server = None
    health_address = None
    if settings.health_listen:
        health_server, health_port = create_health_server(settings.health_listen, health_servicer)
        health_address = _with_port(settings.health_listen, health_port)
    resumed = rt.runner.resume_unfinished(lambda record: resumable_job(rt, record))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if health_server is not None:
        health_server.start()
    maintenance = threading.Thread(
        target=_maintain, args=(rt, stop), name="maintenance", daemon=True
    )
    maintenance.start()
    address = _with_port(settings.listen, port)
    if settings.ready_file is not None:
        atomic_write_json(
            settings.ready_file,
            {"address": address, "health_address": health_address, "pid": os.getpid()},
        )
    registration = start_registration(rt, address)
    _log.info(
        "serving on %s (%s, root %s, state %s, %d operations resumed)",
        address,
        "mTLS" if settings.tls else "plaintext",
        rt.layout.root,
        settings.state_dir,
        resumed,
    )
    while not stop.wait(1.0):
        pass
    if registration is not None:
        registration.stop()
    health_servicer.enter_graceful_shutdown()
    server.stop(STOP_GRACE_S).wait()
    rt.runner.shutdown()
    if health_server is not None:
        health_server.stop(0).wait()
    _log.info("stopped")


def _with_port(listen: str, port: int) -> str:
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"
