"""The engine gRPC server: ``create_server(settings) -> (server, port)`` and ``serve()``."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from disksnap._certs import CertificateFiles, reloading_server_credentials
from disksnap.engine.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from engine_svc.agents.client import GrpcAgentClient
from engine_svc.app import EngineApp
from engine_svc.auth import TokenAuthInterceptor, load_tokens
from engine_svc.config import EngineSettings
from engine_svc.db.migrate import upgrade
from engine_svc.db.session import make_engine
from engine_svc.db.uow import Database
from engine_svc.saga.reaper import Reaper
from engine_svc.saga.runner import JobRunner
from engine_svc.servicers.admin import AdminServicer
from engine_svc.servicers.inventory import InventoryServicer
from engine_svc.servicers.jobs import JobServicer
from engine_svc.servicers.registry import RegistryServicer
from engine_svc.servicers.snapshots import SnapshotServicer

log = logging.getLogger(__name__)

MAX_MESSAGE = 4 * 1024 * 1024
SERVICE_NAMES = (
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    snapshots_pb2.DESCRIPTOR.services_by_name["SnapshotService"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    registry_pb2.DESCRIPTOR.services_by_name["AgentRegistryService"].full_name,
)


@dataclass
class RunningEngine:
    """A started engine: its servers, ports and application."""

    server: grpc.Server
    port: int
    health_server: grpc.Server | None
    health_port: int | None
    health: health.HealthServicer
    app: EngineApp
    reaper: Reaper
    agent_server: grpc.Server | None
    agent_port: int | None

    def stop(self, grace: float = 5.0) -> None:
        """Drain (see ``EngineSettings.shutdown_drain``), stop serving and let running jobs
        reach a step boundary."""
        self.app.shutting_down.set()
        self.health.enter_graceful_shutdown()
        time.sleep(self.app.settings.shutdown_drain.total_seconds())
        self.server.stop(grace).wait()
        if self.agent_server is not None:
            self.agent_server.stop(grace).wait()
        if self.health_server is not None:
            self.health_server.stop(0)
        self.reaper.stop()
        self.app.runner.stop()
        if isinstance(self.app.agents, GrpcAgentClient):
            self.app.agents.close()
        self.app.db.dispose()


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registered_host_name(db: Database, address: str) -> str | None:
    """The name of the one host registered at ``address`` (the name its TLS certificate must
    carry), or None."""
    with db.transaction() as tx:
        names = tx.hosts.names_at(address)
    return names[0] if len(names) == 1 else None


def create_server(settings: EngineSettings, *, migrate: bool = False) -> RunningEngine:
    """Build and start the engine; returns it with the bound port (``:0`` picks one)."""
    tokens = load_tokens(settings.auth_token_file) if settings.auth_token_file else None
    if tokens is None and not settings.insecure_allow_remote and not _is_loopback(settings.listen):
        raise SystemExit(
            f"refusing to listen on {settings.listen} without authentication; "
            "configure --auth-token-file or pass --insecure-allow-remote"
        )
    if migrate:
        upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    bookkeeping = (
        make_engine(settings.db_url, synchronous_commit=False)
        if engine.dialect.name == "postgresql"
        else None
    )
    db = Database(engine, bookkeeping)
    agents = GrpcAgentClient(
        timeout=settings.agent_timeout.total_seconds(),
        tls=settings.agent_tls,
        host_name_at=functools.partial(registered_host_name, db),
    )
    runner = JobRunner(db, agents, settings)
    reaper = Reaper(db, agents, settings)
    app = EngineApp(db, agents, settings, runner)

    interceptors = [TokenAuthInterceptor(tokens)] if tokens is not None else []
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=32, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=options,
    )
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryServicer(app), server)
    snapshots_pb2_grpc.add_SnapshotServiceServicer_to_server(SnapshotServicer(app), server)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(app), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(app), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    agent_server = None
    agent_port = None
    if settings.tls_cert and settings.tls_key:
        # gRPC Python can require client certificates or not ask for them at all, so agents
        # (which must present theirs, SPEC §7) register on a port of their own.
        if not settings.agent_listen or not settings.tls_ca:
            raise SystemExit("with TLS, --agent-listen and --tls-ca are required for agents")
        # Both listeners present the certificate on disk, re-read after a rotation.
        files = CertificateFiles(settings.tls_cert, settings.tls_key, settings.tls_ca)
        port = server.add_secure_port(
            settings.listen, reloading_server_credentials(files, require_client_auth=False)
        )
        agent_server = grpc.server(
            ThreadPoolExecutor(max_workers=8, thread_name_prefix="agents"), options=options
        )
        registry_pb2_grpc.add_AgentRegistryServiceServicer_to_server(
            RegistryServicer(app), agent_server
        )
        agent_port = agent_server.add_secure_port(
            settings.agent_listen, reloading_server_credentials(files, require_client_auth=True)
        )
    else:
        registry_pb2_grpc.add_AgentRegistryServiceServicer_to_server(RegistryServicer(app), server)
        port = server.add_insecure_port(settings.listen)

    health_server = None
    health_port = None
    if settings.health_listen:
        health_server = grpc.server(ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(settings.health_listen)
        health_server.start()
    runner.start()
    reaper.start()
    server.start()
    if agent_server is not None:
        agent_server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningEngine(
        server,
        port,
        health_server,
        health_port,
        health_servicer,
        app,
        reaper,
        agent_server,
        agent_port,
    )


def _write_ready_file(path: Path, engine: RunningEngine, settings: EngineSettings) -> None:
    host = settings.listen.rsplit(":", 1)[0]
    health_address = None
    if settings.health_listen and engine.health_port is not None:
        health_address = f"{settings.health_listen.rsplit(':', 1)[0]}:{engine.health_port}"
    agent_address = f"{host}:{engine.port}"
    if settings.agent_listen and engine.agent_port is not None:
        agent_address = f"{settings.agent_listen.rsplit(':', 1)[0]}:{engine.agent_port}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "address": f"{host}:{engine.port}",
                "agent_address": agent_address,
                "health_address": health_address,
                "pid": os.getpid(),
            }
        )
    )
    tmp.replace(path)


def serve(settings: EngineSettings, *, migrate: bool) -> None:
    """Run the engine until SIGTERM or SIGINT."""
    engine = create_server(settings, migrate=migrate)
    log.info("engine %s listening on port %s", engine.app.runner.owner, engine.port)
    if settings.ready_file:
        _write_ready_file(settings.ready_file, engine, settings)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    engine.stop()
