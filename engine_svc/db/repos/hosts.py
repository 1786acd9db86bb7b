"""Hosts, storage domains and which host serves which domain."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.orm import Session

from engine_svc.db.models import Host, HostDomain, StorageDomain
from engine_svc.db.repos.rows import conflict_insert

# Core statements on the table (reports are upserts).
HOST_DOMAINS = cast(Table, HostDomain.__table__)

# Built once: a statement object caches its compiled form and cache key (hot path).
_DOMAINS_SERVED = (
    select(StorageDomain, HostDomain, Host)
    .outerjoin(HostDomain, HostDomain.domain_id == StorageDomain.id)
    .outerjoin(Host, Host.id == HostDomain.host_id)
    .where(StorageDomain.id.in_(bindparam("ids", expanding=True)))
    .order_by(StorageDomain.id, Host.name)
)


class HostRepository:
    """Hosts and storage domains (they are read together for every storage check)."""

    def __init__(self, session: Session, *, postgres: bool) -> None:
        self.session = session
        self.postgres = postgres

    def get(self, host_id: str) -> Host | None:
        """The host, or None."""
        return self.session.get(Host, host_id)

    def by_name(self, name: str) -> Host | None:
        """The host registered under ``name``, or None."""
        return self.session.scalar(select(Host).where(Host.name == name))

    def names_at(self, address: str) -> list[str]:
        """Names of the hosts registered at ``address`` (normally one)."""
        return list(self.session.scalars(select(Host.name).where(Host.address == address)))

    def list(self) -> Sequence[Host]:
        """Every host, by name."""
        return self.session.scalars(select(Host).order_by(Host.name)).all()

    def add(self, host: Host) -> None:
        """Insert a host."""
        self.session.add(host)

    def domain(self, domain_id: str) -> StorageDomain | None:
        """The storage domain, or None."""
        return self.session.get(StorageDomain, domain_id)

    def domain_by_name(self, name: str) -> StorageDomain | None:
        """The storage domain named ``name``, or None."""
        return self.session.scalar(select(StorageDomain).where(StorageDomain.name == name))

    def domains(self) -> Sequence[StorageDomain]:
        """Every storage domain, by name."""
        return self.session.scalars(select(StorageDomain).order_by(StorageDomain.name)).all()

    def add_domain(self, domain: StorageDomain) -> None:
        """Insert a storage domain."""
        self.session.add(domain)

    def serving(self, domain_id: str) -> Sequence[tuple[HostDomain, Host]]:
        """(report, host) for every host serving the domain, by host name (none if the
        domain does not exist)."""
        found = self.domains_served([domain_id]).get(domain_id)
        return found[1] if found is not None else []

    def domains_served(
        self, domain_ids: Iterable[str]
    ) -> dict[str, tuple[StorageDomain, Sequence[tuple[HostDomain, Host]]]]:
        """Each existing domain among ``domain_ids`` with ``serving``'s list, in one query."""
        rows = self.session.execute(_DOMAINS_SERVED, {"ids": sorted(set(domain_ids))}).all()
        domains = {domain.id: domain for domain, _, _ in rows}
        serving: dict[str, list[tuple[HostDomain, Host]]] = {d: [] for d in domains}
        for domain, report, host in rows:
            if report is not None and host is not None:
                serving[domain.id].append((report, host))
        return {d: (domains[d], serving[d]) for d in domains}

    def host_domains(self, host_id: str) -> Sequence[HostDomain]:
        """The domains a host serves."""
        return self.session.scalars(select(HostDomain).where(HostDomain.host_id == host_id)).all()

    def all_host_domains(self) -> Sequence[HostDomain]:
        """Every (host, domain) report."""
        return self.session.scalars(select(HostDomain)).all()

    def report_domain(
        self,
        host_id: str,
        domain_id: str,
        free: int,
        total: int,
        at: datetime,
        *,
        replace: bool = True,
    ) -> None:
        """Record that a host serves a domain, with the space it reported; ``replace=False``
        keeps a report already recorded. One INSERT … ON CONFLICT: a heartbeat and a
        domain's creation may report the same pair at the same time."""
        stmt = conflict_insert(HOST_DOMAINS, postgres=self.postgres).values(
            host_id=host_id, domain_id=domain_id, free_bytes=free, total_bytes=total, reported_at=at
        )
        key = [HOST_DOMAINS.c.host_id, HOST_DOMAINS.c.domain_id]
        if replace:
            excluded = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=key,
                set_={
                    "free_bytes": excluded.free_bytes,
                    "total_bytes": excluded.total_bytes,
                    "reported_at": excluded.reported_at,
                },
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=key)
        self.session.execute(stmt)

    def forget_domains(self, host_id: str, keep: set[str], *, reported_before: datetime) -> None:
        """Drop the host's reports for domains it no longer serves: those not in ``keep``
        and last reported before ``reported_before``."""
        self.session.execute(
            delete(HostDomain).where(
                HostDomain.host_id == host_id,
                HostDomain.domain_id.not_in(keep),
                HostDomain.reported_at < reported_before,
            )
        )


def host_is_up(host: Host, now: datetime, heartbeat_interval: timedelta) -> bool:
    """SPEC §1.7: UP iff the last heartbeat is at most 3 intervals old."""
    return now - host.last_heartbeat_at <= 3 * heartbeat_interval
