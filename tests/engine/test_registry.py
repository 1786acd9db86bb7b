"""Heartbeats, domain creation and the domains a host serves, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from engine_svc.commands.create_storage_domain import CreateStorageDomain, create_storage_domain
from engine_svc.commands.register_host import (
    DomainReport,
    Heartbeat,
    RegisterHost,
    heartbeat,
    register_host,
)
from engine_svc.config import EngineSettings
from engine_svc.db.migrate import upgrade
from engine_svc.db.models import StorageDomain
from engine_svc.db.session import make_engine
from engine_svc.db.uow import Database
from engine_svc.domain import JobState, StepState, new_id, utcnow
from engine_svc.saga.context import JobContext
from engine_svc.saga.events import JobEvents
from engine_svc.saga.flows import create_domain

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


def test_reports_of_one_pair_at_the_same_time_both_succeed(db: Database) -> None:
    host_id = register_host(db, RegisterHost(name="host0", address="127.0.0.1:1"), INTERVAL)
    domain_id = new_id()
    with db.transaction() as tx:
        tx.session.add(StorageDomain(id=domain_id, name="sd", created_at=utcnow()))
    second: list[BaseException] = []

    def report(free: int) -> None:
        try:
            with db.transaction() as tx:
                tx.hosts.report_domain(host_id, domain_id, free, 10, utcnow())
        except BaseException as exc:
            second.append(exc)

    with db.transaction() as tx:
        tx.hosts.report_domain(host_id, domain_id, 1, 10, utcnow())
        # The second report waits for this transaction (row lock or database lock), then
        # finds the row this one inserted.
        other = threading.Thread(target=report, args=(2,))
        other.start()
        time.sleep(0.3)
    other.join(10)
    assert not other.is_alive() and second == []
    assert _served(db, host_id) == {domain_id: 2}

    # replace=False (a domain's creation) keeps the report that is there.
    with db.transaction() as tx:
        tx.hosts.report_domain(host_id, domain_id, 3, 10, utcnow(), replace=False)
    assert _served(db, host_id) == {domain_id: 2}


def test_a_resumed_domain_creation_records_the_space_its_step_recorded(
    db: Database, db_url: str
) -> None:
    settings = EngineSettings(db_url=db_url)
    host_id = register_host(db, RegisterHost(name="host0", address="127.0.0.1:1"), INTERVAL)
    job = create_storage_domain(db, settings, CreateStorageDomain(name="sd", host_id=host_id))
    domain_id = job.result["domain_id"]
    # An engine claimed the job, recorded INIT_DOMAIN DONE and died before finalizing.
    with db.transaction() as tx:
        now = utcnow()
        claim = tx.jobs.claim(job.id, "engine-a", now, now + timedelta(seconds=30))
        assert claim is not None
        step = tx.jobs.step(job.id, 1)
        step.state = StepState.STARTED
        tx.session.flush()
        recorded = {"domain_free_bytes": 5 << 30, "domain_total_bytes": 8 << 30}
        tx.jobs.record_done(job.id, {1: recorded})

    ctx = JobContext(
        db,
        agents=None,  # type: ignore[arg-type]  # the step is DONE: no agent is called
        settings=settings,
        job_id=job.id,
        epoch=claim.epoch,
        claimed_state=claim.state,
        stopping=threading.Event(),
        events=JobEvents(),
    )
    create_domain.run(ctx)

    with db.transaction() as tx:
        assert tx.jobs.get(job.id).state == JobState.SUCCEEDED  # type: ignore[union-attr]
    assert _served(db, host_id) == {domain_id: 5 << 30}
