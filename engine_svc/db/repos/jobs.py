"""Jobs, their steps and their leases (SPEC §5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete, func, or_, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from engine_svc.db.models import Job, JobStep
from engine_svc.db.repos.rows import insert_new, swap_each, sync_loaded
from engine_svc.domain import (
    ACTIVE_JOB_STATES,
    TERMINAL_JOB_STATES,
    JobKind,
    JobState,
    StepState,
    check_job_transition,
    utcnow,
)


@dataclass(frozen=True)
class Claim:
    """A job this worker now holds: its lease epoch, its state after the claim, its kind."""

    job_id: str
    epoch: int
    state: JobState
    kind: JobKind


class LeaseLost(Exception):
    """This worker no longer holds the job's lease and must stop touching it."""


# Built once: a statement object caches its compiled form and cache key (hot path).
_STEPS = select(JobStep).where(JobStep.job_id == bindparam("job_id")).order_by(JobStep.seq)
_FENCE = (
    update(Job)
    .where(Job.id == bindparam("job_id"), Job.lease_epoch == bindparam("epoch"))
    .values(version=Job.version + 1)
    .returning(Job)
    .execution_options(populate_existing=True)
)
_JOBS = cast(Table, Job.__table__)
_FENCE_KNOWN = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.lease_epoch == bindparam("epoch"))
    .values(version=_JOBS.c.version + 1)
)
_TRANSITION = (
    update(_JOBS)
    .where(
        _JOBS.c.id == bindparam("job_id"),
        _JOBS.c.state == bindparam("old_state"),
        _JOBS.c.lease_epoch == bindparam("epoch"),
    )
    .values(version=_JOBS.c.version + 1)
)
_JOB_STEPS = cast(Table, JobStep.__table__)
_RECORD_DONE = (
    update(_JOB_STEPS)
    .where(
        _JOB_STEPS.c.job_id == bindparam("step_job_id"),
        _JOB_STEPS.c.seq == bindparam("step_seq"),
        _JOB_STEPS.c.state == StepState.STARTED,
    )
    .values(state=StepState.DONE, progress=100)
)


class JobRepository:
    """Job and step rows, and the lease compare-and-swaps."""

    def __init__(self, session: Session, *, postgres: bool) -> None:
        self.session = session
        self.postgres = postgres
        self._steps: dict[str, list[JobStep]] = {}

    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        return self.session.get(Job, job_id)

    def by_request_id(self, request_id: str) -> Job | None:
        """The job created by ``request_id``, or None."""
        return self.session.scalar(select(Job).where(Job.request_id == request_id))

    def add(self, job: Job, steps: Sequence[JobStep] = ()) -> None:
        """Insert a job and its planned steps now. Admission writes them last and whole: the
        objects are not tracked, so later changes to them would not be saved."""
        insert_new(self.session, [job])
        insert_new(self.session, steps)

    def steps(self, job_id: str) -> Sequence[JobStep]:
        """The job's steps in order (read once per transaction: the session's objects are
        the rows, and steps added later go through ``add_step``)."""
        known = self.steps_read(job_id)
        if known is not None:
            return known
        steps = self.session.scalars(_STEPS, {"job_id": job_id}).all()
        self._steps[job_id] = list(steps)
        return steps

    def steps_read(self, job_id: str) -> Sequence[JobStep] | None:
        """The job's steps in order if this transaction read them all (``steps``), else None;
        no SQL."""
        steps = self._steps.get(job_id)
        return None if steps is None else sorted(steps, key=lambda s: s.seq)

    def step(self, job_id: str, seq: int) -> JobStep:
        """One step."""
        step = self.session.get(JobStep, (job_id, seq))
        if step is None:
            raise LookupError(f"step {job_id}:{seq} does not exist")
        return step

    def record_done(self, job_id: str, results: Mapping[int, dict[str, Any] | None]) -> None:
        """STARTED → DONE for steps ``seq: result`` (a None result keeps the recorded one), in
        one executemany compare-and-swap per shape; loaded steps are kept in step."""
        now = utcnow()
        with_result = [
            {"step_job_id": job_id, "step_seq": seq, "ended_at": now, "result": result}
            for seq, result in results.items()
            if result is not None
        ]
        without = [
            {"step_job_id": job_id, "step_seq": seq, "ended_at": now}
            for seq, result in results.items()
            if result is None
        ]
        for rows in (with_result, without):
            if not rows:
                continue
            # Parameters named after columns (ended_at, result) become SET clauses.
            swap_each(
                self.session, _RECORD_DONE, rows, f"steps of job {job_id} are not all STARTED"
            )
            for row in rows:
                written = {k: v for k, v in row.items() if not k.startswith("step_")}
                written |= {"state": StepState.DONE, "progress": 100}
                sync_loaded(self.session, JobStep, [(job_id, row["step_seq"])], written)

    def add_step(self, step: JobStep) -> None:
        """Insert a step planned after admission (e.g. a compensation)."""
        self.session.add(step)
        if step.job_id in self._steps:
            self._steps[step.job_id].append(step)

    def list(
        self,
        *,
        vm_id: str = "",
        state: str = "",
        kind: str = "",
        correlation_id: str = "",
        before: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> Sequence[Job]:
        """Jobs newest first; ``before`` is the (created_at, id) of the previous page's last."""
        stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if vm_id:
            stmt = stmt.where(Job.vm_id == vm_id)
        if state:
            stmt = stmt.where(Job.state == state)
        if kind:
            stmt = stmt.where(Job.kind == kind)
        if correlation_id:
            stmt = stmt.where(Job.correlation_id == correlation_id)
        if before is not None:
            at, job_id = before
            stmt = stmt.where(or_(Job.created_at < at, (Job.created_at == at) & (Job.id < job_id)))
        return self.session.scalars(stmt).all()

    def prune(self, ended_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` terminal jobs that ended before ``ended_before``, with their
        steps (SPEC §5.1 retention; their request_ids can then be used again)."""
        ids = self.session.scalars(
            select(Job.id)
            .where(Job.state.in_(sorted(TERMINAL_JOB_STATES)), Job.ended_at < ended_before)
            .order_by(Job.ended_at)
            .limit(limit)
        ).all()
        if ids:
            self.session.execute(delete(JobStep).where(JobStep.job_id.in_(ids)))
            self.session.execute(delete(Job).where(Job.id.in_(ids)))
        return len(ids)

    def claimable(self, now: datetime, limit: int) -> Sequence[str]:
        """Ids of non-terminal jobs whose lease is free or expired, oldest first."""
        stmt = (
            select(Job.id)
            .where(
                Job.state.in_(sorted(ACTIVE_JOB_STATES)),
                or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
            )
            .order_by(Job.created_at)
            .limit(limit)
        )
        if self.postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        return self.session.scalars(stmt).all()

    def claim(self, job_id: str, owner: str, now: datetime, until: datetime) -> Claim | None:
        """Take the lease if it is free or expired, or None.

        Claiming a PENDING job starts it (PENDING → RUNNING, SPEC §5.2) in the same update.
        """
        row = self.session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.state.in_(sorted(ACTIVE_JOB_STATES)),
                or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
            )
            .values(
                lease_owner=owner,
                lease_epoch=Job.lease_epoch + 1,
                lease_expires_at=until,
                version=Job.version + 1,
                state=case((Job.state == JobState.PENDING, JobState.RUNNING), else_=Job.state),
                started_at=func.coalesce(Job.started_at, now),
            )
            .returning(Job.lease_epoch, Job.state, Job.kind)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if row is None:
            return None
        return Claim(job_id, int(row.lease_epoch), JobState(row.state), JobKind(row.kind))

    def renew(self, job_id: str, epoch: int, until: datetime) -> bool:
        """Extend our lease; False means it was lost."""
        result = self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_epoch == epoch)
            .values(lease_expires_at=until)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def fence(self, job_id: str, epoch: int) -> Job:
        """Row-lock the job and check we still hold its lease (raises LeaseLost)."""
        job = self.session.scalars(_FENCE, {"job_id": job_id, "epoch": epoch}).one_or_none()
        if job is None:
            raise LeaseLost(job_id)
        return job

    def fence_known(self, job: Job, steps: Sequence[JobStep], epoch: int) -> Job:
        """``fence`` for a job whose row and steps this worker holds exactly as committed
        (admission's objects, before any other transaction of the job): the lock and the
        lease check without reading them back. The objects join this session, as if loaded."""
        result = self.session.execute(_FENCE_KNOWN, {"job_id": job.id, "epoch": epoch})
        if not result.rowcount:  # type: ignore[attr-defined]
            raise LeaseLost(job.id)
        for obj in (job, *steps):
            make_transient_to_detached(obj)
            self.session.add(obj)
        set_committed_value(job, "version", job.version + 1)
        self._steps[job.id] = list(steps)
        return job

    def transition(self, job: Job, new: JobState, epoch: int, **values: Any) -> None:
        """Compare-and-swap the job's state under our lease (SPEC §5.2), writing ``values``
        (other job columns) in the same UPDATE; ``job`` is kept in step with the row."""
        old = JobState(job.state)
        check_job_transition(old, new)
        # Parameters named after columns (state and ``values``) become SET clauses.
        result = self.session.execute(
            _TRANSITION,
            {"job_id": job.id, "old_state": old, "epoch": epoch, "state": new, **values},
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise LeaseLost(job.id)
        for key, value in {**values, "state": new, "version": job.version + 1}.items():
            set_committed_value(job, key, value)
