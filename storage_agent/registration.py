"""Registration with the engine (SPEC §3.9): RegisterHost at start, Heartbeat every interval.

Runs on a daemon thread. The engine may be down or restarting: every failure is retried with
capped backoff, and a heartbeat the engine rejects (it lost the host) re-registers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from disksnap._certs import CertificateFiles, Stamp
from disksnap.engine.v1 import registry_pb2, registry_pb2_grpc
from storage_agent.ops.capabilities import capabilities
from storage_agent.runtime import Runtime

log = logging.getLogger(__name__)

RETRY_START_S = 0.5
RETRY_CAP_S = 3.0
CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServedDomain:
    """A domain this agent serves, with its filesystem space."""

    domain_id: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class HostReport:
    """What the agent tells the engine about itself."""

    name: str
    address: str
    agent_version: str
    qemu_img_version: str
    operations: tuple[str, ...]


def start_registration(rt: Runtime, address: str) -> EngineRegistration | None:
    """Register with the configured engine (if any) and keep heartbeating.

    The agent dials the engine with its own certificate when mTLS is configured; the engine
    checks that the certificate names this host (SPEC §7).
    """
    settings = rt.settings
    if not settings.engine:
        return None
    caps = capabilities(rt)

    def domains() -> list[ServedDomain]:
        return [
            ServedDomain(d.domain_id, d.free_bytes, d.total_bytes) for d in capabilities(rt).domains
        ]

    registration = EngineRegistration(
        [engine.strip() for engine in settings.engine.split(",")],
        settings.certificate_files() if settings.tls else None,
        HostReport(
            name=settings.host_name,
            address=settings.advertise or address,
            agent_version=caps.agent_version,
            qemu_img_version=caps.qemu_img_version,
            operations=tuple(caps.operations),
        ),
        domains,
    )
    registration.start()
    return registration


class EngineRegistration:
    """Keeps this agent's host row at the engine current."""

    def __init__(
        self,
        engines: list[str],
        tls: CertificateFiles | None,
        report: HostReport,
        domains: Callable[[], list[ServedDomain]],
    ) -> None:
        # Several engine replicas may be listed; a failing one hands over to the next.
        self._engines = engines
        self._tls = tls
        self._stamp: Stamp | None = None
        self._channels: list[grpc.Channel] = []
        self._current = 0
        self._report = report
        self._domains = domains
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-registration", daemon=True)
        self.host_id: str | None = None

    def start(self) -> None:
        """Start registering and heartbeating in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop heartbeating."""
        self._stop.set()
        self._thread.join(timeout=CALL_TIMEOUT_S)

    def _stub(self) -> registry_pb2_grpc.AgentRegistryServiceStub:
        """The current engine's stub, on channels dialed again once the certificate files
        changed (rotation), so the engine always sees the certificate on disk."""
        stamp = self._tls_stamp()
        if not self._channels or stamp != self._stamp:
            old, self._channels = self._channels, [self._dial(e) for e in self._engines]
            self._stamp = stamp
            for channel in old:
                channel.close()
        return registry_pb2_grpc.AgentRegistryServiceStub(self._channels[self._current])

    def _tls_stamp(self) -> Stamp | None:
        if self._tls is None:
            return None
        try:
            return self._tls.stamp()
        except OSError as exc:  # a file being replaced right now: keep the current channels
            log.warning("cannot read the TLS files (%s); keeping the current ones", exc)
            return self._stamp

    def _dial(self, engine: str) -> grpc.Channel:
        if self._tls is None:
            return grpc.insecure_channel(engine)
        return grpc.secure_channel(engine, self._tls.channel_credentials())

    def _domain_messages(self) -> list[registry_pb2.DomainSpace]:
        return [
            registry_pb2.DomainSpace(
                domain_id=d.domain_id, free_bytes=d.free_bytes, total_bytes=d.total_bytes
            )
            for d in self._domains()
        ]

    def _register(self) -> float:
        r = self._report
        resp = self._stub().RegisterHost(
            registry_pb2.RegisterHostRequest(
                name=r.name,
                address=r.address,
                domains=self._domain_messages(),
                capabilities=registry_pb2.HostCapabilities(
                    live_ops=False,
                    qemu_img_version=r.qemu_img_version,
                    operations=list(r.operations),
                ),
                agent_version=r.agent_version,
            ),
            timeout=CALL_TIMEOUT_S,
        )
        self.host_id = resp.host_id
        log.info("registered with the engine as host %s (%s)", r.name, resp.host_id)
        return float(max(1, resp.heartbeat_interval_s))

    def _run(self) -> None:
        delay = RETRY_START_S
        interval = 0.0
        while not self._stop.is_set():
            try:
                if self.host_id is None:
                    interval = self._register()
                else:
                    self._stub().Heartbeat(
                        registry_pb2.HeartbeatRequest(
                            host_id=self.host_id,
                            name=self._report.name,
                            domains=self._domain_messages(),
                        ),
                        timeout=CALL_TIMEOUT_S,
                    )
                delay = RETRY_START_S
                self._stop.wait(interval)
            except grpc.RpcError as exc:
                code = exc.code()
                if code is grpc.StatusCode.NOT_FOUND:
                    self.host_id = None
                self._current = (self._current + 1) % len(self._engines)
                log.warning("engine registration failed (%s); retrying", code)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_CAP_S)
