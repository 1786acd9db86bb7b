"""RegisterHost and Heartbeat (SPEC §3.9): agents keep their host row current."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine_svc.db.models import Host
from engine_svc.db.repos import Repositories
from engine_svc.db.uow import Database
from engine_svc.domain import new_id, utcnow
from engine_svc.errors import NotFound, PermissionDenied, invalid_field

HOST_NAME_MAX = 255


@dataclass(frozen=True)
class DomainReport:
    """A domain an agent serves, with its space."""

    domain_id: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class RegisterHost:
    """Input of RegisterHost; ``tls_identity`` holds the client certificate's DNS SANs.

    ``mtls`` is True when the engine serves TLS: then an agent must present a certificate.
    """

    name: str
    address: str
    domains: tuple[DomainReport, ...] = ()
    live_ops: bool = False
    agent_version: str = ""
    qemu_img_version: str = ""
    tls_identity: frozenset[str] | None = None
    mtls: bool = False


@dataclass(frozen=True)
class Heartbeat:
    """Input of Heartbeat."""

    host_id: str
    name: str
    domains: tuple[DomainReport, ...] = field(default_factory=tuple)
    tls_identity: frozenset[str] | None = None
    mtls: bool = False


def _check_identity(name: str, tls_identity: frozenset[str] | None, mtls: bool) -> None:
    """With mTLS the agent's certificate must name the host it registers as (SPEC §7)."""
    if mtls and tls_identity is None:
        raise PermissionDenied(
            "HOST_IDENTITY_MISMATCH",
            "agents must present a client certificate naming their host",
            host_name=name,
        )
    if tls_identity is not None and name not in tls_identity:
        raise PermissionDenied(
            "HOST_IDENTITY_MISMATCH",
            f"the client certificate names {sorted(tls_identity)}, not {name!r}",
            host_name=name,
        )


def register_host(db: Database, cmd: RegisterHost, interval: timedelta) -> str:
    """Create or update the host row; returns the host id (stable per name). ``interval``:
    the heartbeat interval (see ``heartbeat``)."""
    if not cmd.name or len(cmd.name) > HOST_NAME_MAX or not cmd.name.isprintable():
        raise invalid_field("name", "1..255 printable characters")
    if not cmd.address or ":" not in cmd.address:
        raise invalid_field("address", "host:port of the agent")
    _check_identity(cmd.name, cmd.tls_identity, cmd.mtls)
    now = utcnow()
    with db.transaction() as tx:
        host = tx.hosts.by_name(cmd.name)
        if host is None:
            host = Host(id=new_id(), name=cmd.name, registered_at=now)
            tx.hosts.add(host)
        host.address = cmd.address
        host.live_ops = cmd.live_ops
        host.agent_version = cmd.agent_version
        host.qemu_img_version = cmd.qemu_img_version
        host.last_heartbeat_at = now
        tx.session.flush()
        _record_domains(tx, host.id, cmd.domains, now, interval)
        return host.id


def heartbeat(db: Database, cmd: Heartbeat, interval: timedelta) -> None:
    """Record liveness and space; unknown domain ids are ignored.

    A served domain the report leaves out is forgotten once no report has named it for
    ``interval`` (the heartbeat interval): a heartbeat the agent sent before a domain was
    created on it must not undo the creation (the domain would be INACTIVE until the next).
    """
    _check_identity(cmd.name, cmd.tls_identity, cmd.mtls)
    now = utcnow()
    with db.transaction() as tx:
        host = tx.hosts.get(cmd.host_id)
        if host is None or host.name != cmd.name:
            raise NotFound(
                "HOST_NOT_EXIST", f"host {cmd.host_id} is not registered", host_id=cmd.host_id
            )
        host.last_heartbeat_at = now
        _record_domains(tx, host.id, cmd.domains, now, interval)


def _record_domains(
    tx: Repositories,
    host_id: str,
    reports: tuple[DomainReport, ...],
    now: datetime,
    interval: timedelta,
) -> None:
    known = {d.id for d in tx.hosts.domains()}
    served = {r.domain_id for r in reports if r.domain_id in known}
    for report in reports:
        if report.domain_id in served:
            tx.hosts.report_domain(
                host_id, report.domain_id, report.free_bytes, report.total_bytes, now
            )
    tx.hosts.forget_domains(host_id, served, reported_before=now - interval)
