"""RemoveSnapshot flow (SPEC §3.6): M(B) per disk, in parallel, then decide about the snapshot.

merge   every disk's unit (``merge.run_unit``) runs its planned steps in order; disks run in
        parallel. A unit's end (MERGED: the snapshot's config drops the disk; NOT_MERGED or
        FAILED_ILLEGAL: B stays owned) is recorded with its outcome and its volumes unlocked.
end     every disk MERGED → the snapshot is deleted, SUCCEEDED. Some → the snapshot is OK
        again, owning only the unmerged disks, without memory, SUCCEEDED_PARTIAL. None → the
        snapshot is OK again, FAILED with the first failed step's error. Nothing is rolled
        back: merges are forward-only, and a retry of RemoveSnapshot finishes the rest.
"""

from __future__ import annotations

from typing import Any

from engine_svc.db.models import Job
from engine_svc.db.repos import Repositories
from engine_svc.domain import DiskOutcome, JobState, SnapshotStatus, StepState
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows.common import finish, run_parallel, set_outcome
from engine_svc.saga.flows.merge import MergeUnit, UnitEnd, release_volumes, run_unit
from engine_svc.saga.steps import StepResult


def run(ctx: JobContext) -> None:
    """Drive a RemoveSnapshot job from whatever state it is in to a terminal one."""
    if ctx.claimed_state is not JobState.RUNNING:
        return
    with ctx.tx() as (_tx, job):
        params: dict[str, Any] = dict(job.params)
        deadline = job.prepare_deadline
    units = [MergeUnit.from_json(u) for u in params["units"]]
    prior: dict[str, str] = dict(params["prior"])

    def unit_ended(tx: Repositories, job: Job, unit: MergeUnit, end: UnitEnd) -> None:
        error = end.error or {}
        set_outcome(
            job,
            unit.disk_id,
            disk_alias=unit.disk_alias,
            volume_ids=[unit.base_id],
            outcome=end.outcome,
            reason=error.get("reason", ""),
            message=error.get("message", ""),
        )
        release_volumes(tx, unit.locked, prior)

    def one_disk(index: int) -> StepResult:
        return run_unit(ctx, units[index], deadline=deadline, prior=prior, on_end=unit_ended)

    run_parallel(ctx, range(len(units)), one_disk)
    _end(ctx, params, units, prior)


def _end(
    ctx: JobContext, params: dict[str, Any], units: list[MergeUnit], prior: dict[str, str]
) -> None:
    with ctx.tx() as (tx, job):
        outcomes = {o["disk_id"]: o["outcome"] for o in job.outcomes}
        merged = [u for u in units if outcomes.get(u.disk_id) == DiskOutcome.MERGED]
        release_volumes(tx, prior, prior)
        snapshot = tx.snapshots.get(params["snapshot_id"], for_update=True)
        if len(merged) == len(units):
            if snapshot is not None:
                tx.snapshots.delete(snapshot)
            finish(tx, job, JobState.SUCCEEDED, ctx.epoch)
            return
        if snapshot is not None:
            snapshot.status = SnapshotStatus.OK
        if merged:
            if snapshot is not None:
                snapshot.memory = None  # it no longer matches the disks the snapshot keeps
            finish(tx, job, JobState.SUCCEEDED_PARTIAL, ctx.epoch)
            return
        failed = next(
            (s for s in tx.jobs.steps(job.id) if s.state == StepState.FAILED and s.error), None
        )
        finish(tx, job, JobState.FAILED, ctx.epoch, error=failed.error if failed else None)
