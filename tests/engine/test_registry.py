"""Heartbeats and the domains a host serves, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine_svc.commands.register_host import (
    DomainReport,
    Heartbeat,
    RegisterHost,
    heartbeat,
    register_host,
)
from engine_svc.db.migrate import upgrade
from engine_svc.db.models import StorageDomain
from engine_svc.db.session import make_engine
from engine_svc.db.uow import Database
from engine_svc.domain import new_id, utcnow

INTERVAL = timedelta(seconds=10)


@pytest.fixture
def db(db_url: str) -> Database:
    upgrade(db_url)
    return Database(make_engine(db_url))


def _served(db: Database, host_id: str) -> dict[str, int]:
    with db.transaction() as tx:
        return {hd.domain_id: hd.free_bytes for hd in tx.hosts.host_domains(host_id)}


def test_a_heartbeat_sent_before_a_domain_was_created_keeps_it(db: Database) -> None:
    host_id = register_host(db, RegisterHost(name="host0", address="127.0.0.1:1"), INTERVAL)
    old, new = new_id(), new_id()
    with db.transaction() as tx:
        now = utcnow()
        tx.session.add_all(
            [
                StorageDomain(id=old, name="sd-old", created_at=now),
                StorageDomain(id=new, name="sd-new", created_at=now),
            ]
        )
        tx.session.flush()
        # `old` was last reported two intervals ago; `new` was just created on the host
        # (what CreateStorageDomain's finalize records).
        tx.hosts.report_domain(host_id, old, 1, 2, now - 2 * INTERVAL)
        tx.hosts.report_domain(host_id, new, 5, 6, now)

    # A heartbeat the agent assembled before `new` existed names neither of them.
    heartbeat(db, Heartbeat(host_id=host_id, name="host0"), INTERVAL)
    assert _served(db, host_id) == {new: 5}

    # Reports renew the domains they name; one left out for an interval is forgotten.
    report = DomainReport(domain_id=new, free_bytes=7, total_bytes=8)
    heartbeat(db, Heartbeat(host_id=host_id, name="host0", domains=(report,)), INTERVAL)
    assert _served(db, host_id) == {new: 7}
    heartbeat(db, Heartbeat(host_id=host_id, name="host0"), timedelta(0))
    assert _served(db, host_id) == {}
