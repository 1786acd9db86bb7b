"""RemoveDiskSnapshots flow (SPEC §3.7): the planned M(B)s of one disk, one at a time.

Units run in their planned order (deepest first). After each MERGED volume its owner's
configuration drops the disk in a short transaction holding a row lock on the snapshot (an
owner left with no disks stays, as a configuration-only snapshot, memory kept). The first
unit that fails for good stops the job: volumes already merged stay merged, the failed one is
NOT_MERGED or FAILED_ILLEGAL, the rest are NOT_ATTEMPTED and unlocked. The job ends
SUCCEEDED (all merged), SUCCEEDED_PARTIAL (some) or FAILED (none). Outcomes are per volume.
"""

from __future__ import annotations

from typing import Any

from engine_svc.db.models import Job
from engine_svc.db.repos import Repositories
from engine_svc.domain import DiskOutcome, JobState, StepState
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows.common import finish
from engine_svc.saga.flows.merge import MergeUnit, UnitEnd, release_volumes, run_unit


def set_volume_outcome(
    job: Job, unit: MergeUnit, outcome: DiskOutcome, error: dict[str, Any]
) -> None:
    """Insert or replace the outcome entry of one volume (outcomes keep the plan's order)."""
    entry = {
        "disk_id": unit.disk_id,
        "disk_alias": unit.disk_alias,
        "volume_ids": [unit.base_id],
        "outcome": outcome,
        "reason": error.get("reason", ""),
        "message": error.get("message", ""),
        "metadata": {"snapshot_id": unit.owner_id},
    }
    outcomes = [dict(o) for o in job.outcomes if o["volume_ids"] != [unit.base_id]]
    job.outcomes = [*outcomes, entry]


def run(ctx: JobContext) -> None:
    """Drive a RemoveDiskSnapshots job from whatever state it is in to a terminal one."""
    if ctx.claimed_state is not JobState.RUNNING:
        return
    with ctx.tx() as (_tx, job):
        params: dict[str, Any] = dict(job.params)
        deadline = job.prepare_deadline
    units = [MergeUnit.from_json(u) for u in params["units"]]
    prior: dict[str, str] = dict(params["prior"])

    def unit_ended(_tx: Repositories, job: Job, unit: MergeUnit, end: UnitEnd) -> None:
        set_volume_outcome(job, unit, end.outcome, end.error or {})

    for unit in units:
        if not run_unit(ctx, unit, deadline=deadline, prior=prior, on_end=unit_ended).ok:
            break
    _end(ctx, units, prior)


def _end(ctx: JobContext, units: list[MergeUnit], prior: dict[str, str]) -> None:
    with ctx.tx() as (tx, job):
        ended = {o["volume_ids"][0]: o["outcome"] for o in job.outcomes}
        for unit in units:
            if unit.base_id not in ended:
                set_volume_outcome(job, unit, DiskOutcome.NOT_ATTEMPTED, {})
        release_volumes(tx, prior, prior)
        merged = sum(1 for u in units if ended.get(u.base_id) == DiskOutcome.MERGED)
        if merged == len(units):
            finish(tx, job, JobState.SUCCEEDED, ctx.epoch)
        elif merged:
            finish(tx, job, JobState.SUCCEEDED_PARTIAL, ctx.epoch)
        else:
            failed = next(
                (s for s in tx.jobs.steps(job.id) if s.state == StepState.FAILED and s.error),
                None,
            )
            finish(tx, job, JobState.FAILED, ctx.epoch, error=failed.error if failed else None)
