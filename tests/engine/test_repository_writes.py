"""The hot-path Core writes of the repositories, on SQLite and PostgreSQL: rows inserted
without the unit of work, and compare-and-swap updates that keep loaded objects in step."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from engine_svc.commands.admission import Envelope, Lease, Started, new_job, plan_step
from engine_svc.config import EngineSettings
from engine_svc.db.migrate import upgrade
from engine_svc.db.models import Job, JobStep, Snapshot, StorageDomain, Vm, Volume
from engine_svc.db.repos.jobs import LeaseLost
from engine_svc.db.session import make_engine
from engine_svc.db.uow import Database
from engine_svc.domain import (
    JobKind,
    JobState,
    SnapshotStatus,
    SnapshotType,
    StepKind,
    StepState,
    VolumeFormat,
    VolumeStatus,
    new_id,
    utcnow,
)
from engine_svc.saga.context import JobContext
from engine_svc.saga.events import JobEvents

RESULT = {"volume": {"actual_size": 196608}}


@pytest.fixture
def db(db_url: str) -> Database:
    upgrade(db_url)
    return Database(make_engine(db_url))


def _job_with_steps(db: Database, states: list[StepState]) -> tuple[Job, list[JobStep]]:
    """A RUNNING job (lease epoch 1) with one CREATE_VOLUME step per state, and the objects
    its admission wrote."""
    job = new_job(
        JobKind.CREATE_SNAPSHOT,
        Envelope(),
        "digest",
        utcnow(),
        vm_id=None,
        targets=[],
        params={"disks": []},
        lease=Lease("engine-test", timedelta(seconds=30)),
    )
    steps = []
    for seq, state in enumerate(states, start=1):
        step = plan_step(
            job,
            seq,
            StepKind.CREATE_VOLUME,
            host_id=new_id(),
            domain_id=new_id(),
            disk_id=new_id(),
            volume_ids=[new_id()],
            started=state == StepState.STARTED,
        )
        step.state = state
        steps.append(step)
    with db.transaction() as tx:
        tx.jobs.add(job, steps)
    return job, steps


def _steps(db: Database, job_id: str) -> dict[int, JobStep]:
    with db.transaction() as tx:
        return {s.seq: s for s in tx.jobs.steps(job_id)}


def test_add_writes_the_rows_at_once_with_defaults_set_on_the_objects(db: Database) -> None:
    job, _ = _job_with_steps(db, [StepState.STARTED])
    # Columns left unset (attempts, progress) take their defaults, in the row and the object.
    other = new_job(JobKind.REMOVE_VM, Envelope(), "d", utcnow(), vm_id=None, targets=[], params={})
    extra = JobStep(
        job_id=other.id,
        seq=1,
        kind=StepKind.DELETE_VOLUME,
        volume_ids=[new_id()],
        params={},
        op_id=f"{other.id}:1",
        state=StepState.PLANNED,
    )
    with db.transaction() as tx:
        tx.jobs.add(other, [extra])
        assert (extra.attempts, extra.progress) == (0, 0)
        assert extra not in tx.session and other not in tx.session

    with db.transaction() as tx:
        stored = tx.jobs.get(job.id)
        assert stored is not None and stored is not job
        assert (stored.state, stored.lease_owner, stored.lease_epoch, stored.version) == (
            JobState.RUNNING,
            "engine-test",
            1,
            1,
        )
        assert stored.params == {"disks": []}
        [first] = tx.jobs.steps(job.id)
        assert (first.seq, first.state, first.op_id, first.attempts) == (
            1,
            StepState.STARTED,
            f"{job.id}:1",
            1,
        )
        [second] = tx.jobs.steps(other.id)
        assert (second.kind, second.attempts, second.progress, second.result) == (
            StepKind.DELETE_VOLUME,
            0,
            0,
            None,
        )


def test_record_done_is_a_compare_and_swap_from_started(db: Database) -> None:
    job, _ = _job_with_steps(db, [StepState.STARTED, StepState.STARTED, StepState.PLANNED])
    with db.transaction() as tx:
        tx.session.get(JobStep, (job.id, 2)).result = {"kept": True}  # type: ignore[union-attr]

    with db.transaction() as tx:
        loaded = {s.seq: s for s in tx.jobs.steps(job.id)}
        tx.jobs.record_done(job.id, {1: RESULT, 2: None})
        # The objects this transaction loaded show what was written.
        assert (loaded[1].state, loaded[1].progress, loaded[1].result) == (
            StepState.DONE,
            100,
            RESULT,
        )
        assert loaded[2].state == StepState.DONE and loaded[2].ended_at is not None

    stored = _steps(db, job.id)
    assert (stored[1].state, stored[1].progress, stored[1].result) == (StepState.DONE, 100, RESULT)
    assert stored[1].ended_at is not None
    assert (stored[2].state, stored[2].result) == (StepState.DONE, {"kept": True})

    # A step that is not STARTED (PLANNED, or already DONE) fails the whole call.
    for seq in (3, 1):
        with pytest.raises(LookupError), db.transaction() as tx:
            tx.jobs.record_done(job.id, {seq: RESULT})
    after = _steps(db, job.id)
    assert after[3].state == StepState.PLANNED and after[3].result is None
    assert after[1].ended_at == stored[1].ended_at


def test_fence_known_takes_admissions_objects_without_reading_them(db: Database) -> None:
    job, steps = _job_with_steps(db, [StepState.STARTED, StepState.STARTED])
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    # (SQLite's engine begins each transaction with a BEGIN IMMEDIATE of its own.)

    with db.transaction() as tx:
        assert tx.jobs.fence_known(job, steps, 1) is job
        assert list(tx.jobs.steps(job.id)) == steps and tx.jobs.step(job.id, 2) is steps[1]
        # One statement: the fence's UPDATE. The job and its steps are not read back.
        [fence] = [s for s in statements if s != "BEGIN IMMEDIATE"]
        assert fence.startswith("UPDATE jobs")
        assert job.version == 2
        tx.jobs.record_done(job.id, {1: RESULT})
        assert steps[0].state == StepState.DONE
        # The objects are the session's now: the unit of work saves what changes on them.
        job.progress = 50

    stored = _row(db, Job, job.id)
    assert (stored.version, stored.progress) == (2, 50)
    assert _steps(db, job.id)[1].result == RESULT


def test_fence_known_with_a_lost_lease_raises_and_changes_nothing(db: Database) -> None:
    job, steps = _job_with_steps(db, [StepState.STARTED])
    with db.transaction() as tx:  # another engine claimed the job
        tx.session.get(Job, job.id).lease_epoch = 2  # type: ignore[union-attr]

    with pytest.raises(LeaseLost), db.transaction() as tx:
        tx.jobs.fence_known(job, steps, 1)
    stored = _row(db, Job, job.id)
    assert (stored.version, stored.lease_epoch) == (1, 2)


def test_only_the_first_transaction_of_a_started_job_takes_admissions_objects(
    db: Database, db_url: str
) -> None:
    job, steps = _job_with_steps(db, [StepState.STARTED])
    ctx = JobContext(
        db,
        agents=None,  # type: ignore[arg-type]  # transactions only: no agent is called
        settings=EngineSettings(db_url=db_url),
        job_id=job.id,
        epoch=1,
        claimed_state=JobState.RUNNING,
        stopping=threading.Event(),
        events=JobEvents(),
        started=Started(job, tuple(steps), {}),
    )
    with ctx.tx() as (_, fenced):
        assert fenced is job
        fenced.progress = 10
    with ctx.tx() as (_, fenced):
        # Read back: the row, with what the first transaction wrote and both fences.
        assert fenced is not job and (fenced.version, fenced.progress) == (3, 10)


def _vm_with_head(db: Database, head_status: VolumeStatus) -> tuple[Vm, Snapshot, Volume]:
    now = utcnow()
    domain = StorageDomain(id=new_id(), name=f"sd-{new_id()[:8]}", created_at=now)
    vm = Vm(
        id=new_id(),
        name=f"vm-{new_id()[:8]}",
        cpu_count=1,
        memory_mb=512,
        custom_properties={},
        nics=[],
        run_state="DOWN",
        created_at=now,
    )
    snapshot = Snapshot(
        id=new_id(),
        vm_id=vm.id,
        type=SnapshotType.REGULAR,
        status=SnapshotStatus.LOCKED,
        created_at=now,
        config=None,
        memory=None,
        preview_plan=None,
    )
    head = Volume(
        id=new_id(),
        disk_id=new_id(),
        domain_id=domain.id,
        parent_id=None,
        owner_snapshot_id=None,
        active=True,
        status=head_status,
        format=VolumeFormat.COW,
        virtual_size=1 << 20,
        created_at=now,
    )
    with db.transaction() as tx:
        tx.session.add_all([domain, vm])
        tx.session.flush()
        tx.session.add_all([snapshot, head])
    return vm, snapshot, head


def _row(db: Database, model: type[Any], key: str) -> Any:
    with db.transaction() as tx:
        return tx.session.get(model, key)


def test_lock_heads_moves_only_ok_heads(db: Database) -> None:
    _, _, ok_head = _vm_with_head(db, VolumeStatus.OK)
    _, _, illegal_head = _vm_with_head(db, VolumeStatus.ILLEGAL)

    with db.transaction() as tx:
        loaded = tx.volumes.get(ok_head.id)
        tx.volumes.lock_heads([ok_head.id])
        assert loaded is not None and loaded.status == VolumeStatus.LOCKED
    assert _row(db, Volume, ok_head.id).status == VolumeStatus.LOCKED

    # Not OK (already LOCKED, or ILLEGAL): nothing of the call is kept.
    with pytest.raises(LookupError), db.transaction() as tx:
        tx.volumes.lock_heads([ok_head.id, illegal_head.id])
    assert _row(db, Volume, illegal_head.id).status == VolumeStatus.ILLEGAL
    _, _, other = _vm_with_head(db, VolumeStatus.OK)
    with pytest.raises(LookupError), db.transaction() as tx:
        tx.volumes.lock_heads([other.id, illegal_head.id])
    assert _row(db, Volume, other.id).status == VolumeStatus.OK


def test_snapshot_set_status_is_a_compare_and_swap(db: Database) -> None:
    _, snapshot, _ = _vm_with_head(db, VolumeStatus.OK)

    with db.transaction() as tx:
        loaded = tx.snapshots.get(snapshot.id)
        assert not tx.snapshots.set_status(
            snapshot.id, SnapshotStatus.OK, expected=SnapshotStatus.OK
        )
        assert loaded is not None and loaded.status == SnapshotStatus.LOCKED
        assert tx.snapshots.set_status(
            snapshot.id, SnapshotStatus.OK, expected=SnapshotStatus.LOCKED
        )
        assert loaded.status == SnapshotStatus.OK
    assert _row(db, Snapshot, snapshot.id).status == SnapshotStatus.OK
