"""CreateSnapshot flow (SPEC §3.1): overlays per disk, per-disk compensation, finalize.

prepare   every selected disk's CREATE_VOLUME step runs in parallel; a disk whose step
          fails for good is compensated at once (its overlay deleted, its head OK again).
finalize  one transaction: the surviving disks' heads move to the snapshot and their
          overlays become heads; the job ends SUCCEEDED or SUCCEEDED_PARTIAL.
rollback  when every disk failed, or atomic=true and one did: COMPENSATING, undo the rest,
          delete the snapshot, FAILED. The state equals the state before the request.
"""

from __future__ import annotations

from typing import Any

from engine_svc.domain import DiskOutcome, JobState, SnapshotStatus, StepState, VolumeStatus
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows.common import (
    drop_or_garbage,
    finish,
    run_parallel,
    undo_created_volume,
    with_outcome,
)
from engine_svc.saga.steps import StepResult, StepRunner, done_result
from engine_svc.snapshot_config import restrict


def run(ctx: JobContext) -> None:
    """Drive a CreateSnapshot job from whatever state it is in to a terminal one."""
    state = ctx.claimed_state
    if state is JobState.RUNNING:
        state = _finalize(ctx, _prepare(ctx))
    if state is JobState.COMPENSATING:
        _rollback(ctx)


def _prepare(ctx: JobContext) -> dict[int, StepResult]:
    """Run every pending step; successes are returned for ``_finalize`` to record."""
    runner = StepRunner(ctx)
    if ctx.started is not None:  # admission started every step: call the agents now
        job = ctx.started.job
        entries = {int(e["seq"]): e for e in job.params["disks"]}
        deadline = job.prepare_deadline
        begun = runner.started(ctx.started)
    else:
        with ctx.tx() as (tx, job):
            entries = {int(e["seq"]): e for e in job.params["disks"]}
            deadline = job.prepare_deadline
            pending = [
                s
                for s in tx.jobs.steps(job.id)
                if s.seq in entries and s.state != StepState.COMPENSATED
            ]
            begun = runner.begin(tx, pending)

    def one_disk(seq: int) -> StepResult:
        result = runner.drive(begun[seq], deadline=deadline, record_success=False)
        if not result.ok:
            _compensate_disk(ctx, entries[seq])
        return result

    return run_parallel(ctx, begun, one_disk)


def _compensate_disk(ctx: JobContext, entry: dict[str, Any]) -> None:
    deleted = undo_created_volume(ctx, int(entry["seq"]))
    with ctx.tx() as (tx, _job):
        drop_or_garbage(tx, tx.volumes.get(entry["volume_id"]), deleted=deleted)
        head = tx.volumes.get(entry["head_id"])
        if head is not None and head.status == VolumeStatus.LOCKED:
            head.status = VolumeStatus.OK


def _finalize(ctx: JobContext, results: dict[int, StepResult]) -> JobState:
    with ctx.tx() as (tx, job):
        params = job.params
        steps = {s.seq: s for s in tx.jobs.steps(job.id)}
        tx.jobs.record_done(
            job.id,
            {
                seq: done_result(outcome.operation)
                for seq, outcome in results.items()
                if outcome.ok and steps[seq].state == StepState.STARTED
            },
        )
        entries = params["disks"]
        ok = [e for e in entries if steps[int(e["seq"])].state == StepState.DONE]
        failed = [e for e in entries if e not in ok]
        if not ok or (failed and params["atomic"]):
            tx.jobs.transition(job, JobState.COMPENSATING, ctx.epoch)
            first = next(
                (steps[int(e["seq"])].error for e in failed if steps[int(e["seq"])].error), None
            )
            job.error = first
            return JobState.COMPENSATING
        snapshot_id = params["snapshot_id"]
        tx.volumes.capture(snapshot_id, [e["head_id"] for e in ok])
        tx.volumes.activate({e["volume_id"]: _actual_size(steps[int(e["seq"])].result) for e in ok})
        outcomes = job.outcomes
        for e in ok:
            outcomes = with_outcome(
                outcomes,
                e["disk_id"],
                disk_alias=e["disk_alias"],
                volume_ids=[e["head_id"]],
                outcome=DiskOutcome.SNAPSHOTTED,
            )
        for e in failed:
            error = steps[int(e["seq"])].error or {}
            outcomes = with_outcome(
                outcomes,
                e["disk_id"],
                disk_alias=e["disk_alias"],
                outcome=DiskOutcome.FAILED_EXCLUDED,
                reason=error.get("reason", ""),
                message=error.get("message", ""),
            )
        if failed:
            snapshot = tx.snapshots.get(snapshot_id)
            assert snapshot is not None and snapshot.config is not None
            snapshot.config = restrict(snapshot.config, [e["disk_id"] for e in ok])
        if not tx.snapshots.set_status(
            snapshot_id, SnapshotStatus.OK, expected=SnapshotStatus.LOCKED
        ):
            raise LookupError(f"snapshot {snapshot_id} is not LOCKED at finalize")
        final = JobState.SUCCEEDED_PARTIAL if failed else JobState.SUCCEEDED
        finish(tx, job, final, ctx.epoch, outcomes=outcomes)
        return final


def _actual_size(recorded: dict[str, Any] | None) -> int | None:
    """The overlay's allocation the agent reported (None: the step's record has none)."""
    volume = (recorded or {}).get("volume")
    return int(volume["actual_size"]) if volume else None


def _rollback(ctx: JobContext) -> None:
    with ctx.tx() as (tx, job):
        params = dict(job.params)
        steps = {s.seq: s for s in tx.jobs.steps(job.id)}
    to_undo = [e for e in params["disks"] if steps[int(e["seq"])].state != StepState.COMPENSATED]
    for entry in to_undo:
        _compensate_disk(ctx, entry)
    with ctx.tx() as (tx, job):
        steps = {s.seq: s for s in tx.jobs.steps(job.id)}
        outcomes = job.outcomes
        for e in params["disks"]:
            error = steps[int(e["seq"])].error or {}
            outcomes = with_outcome(
                outcomes,
                e["disk_id"],
                disk_alias=e["disk_alias"],
                outcome=DiskOutcome.ROLLED_BACK,
                reason=error.get("reason", ""),
                message=error.get("message", ""),
            )
        snapshot = tx.snapshots.get(params["snapshot_id"])
        if snapshot is not None:
            tx.snapshots.delete(snapshot)
        finish(tx, job, JobState.FAILED, ctx.epoch, error=job.error, outcomes=outcomes)
