"""Cleanup (SPEC §3.3, §3.4, §3.9, §5.9): delete garbage volumes after a DB decision.

RemoveDisk, RemoveVm, CommitPreview and UndoPreview decide at admission (volumes become
garbage there), and RestoreSnapshot after its preview phase, so cleanup only moves forward.
``job.params["cleanup"]`` lists per disk the DELETE_VOLUME steps in leaf-first order and the
outcome the disk gets when they all succeed; disks run in parallel. A step that succeeds
deletes its volume's row. The first step of a disk that keeps failing stops that disk (a
parent cannot go before its child): its remaining volumes stay garbage for the reaper, the
disk's outcome is CLEANUP_PENDING and the job ends SUCCEEDED_PARTIAL.
"""

from __future__ import annotations

from typing import Any

from engine_svc.domain import DiskOutcome, JobState, StepState
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows.common import finish, run_parallel, set_outcome
from engine_svc.saga.steps import StepResult, StepRunner


def run(ctx: JobContext) -> None:
    """Drive a job whose work is only cleanup to a terminal state."""
    if ctx.claimed_state is JobState.RUNNING:
        clean_up(ctx)


def clean_up(ctx: JobContext) -> None:
    """Run the job's planned cleanup, record the outcomes and end the job."""
    with ctx.tx() as (_tx, job):
        plan: list[dict[str, Any]] = [dict(d) for d in job.params.get("cleanup", [])]
    by_first = {int(d["seqs"][0]): d for d in plan if d["seqs"]}

    def one_disk(first: int) -> StepResult:
        return _delete_chain(ctx, by_first[first])

    run_parallel(ctx, by_first, one_disk)
    _finish(ctx, plan)


def _delete_chain(ctx: JobContext, entry: dict[str, Any]) -> StepResult:
    """Delete one disk's volumes leaf-first; stop at the first step that fails for good."""
    result = StepResult(True)
    for seq, volume_id in zip(entry["seqs"], entry["volume_ids"], strict=True):
        result = StepRunner(ctx).run(int(seq), deadline=None)
        if not result.ok:
            break
        with ctx.tx() as (tx, _job):
            volume = tx.volumes.get(volume_id)
            if volume is not None and volume.pending_delete:
                tx.volumes.delete(volume)
    return result


def _finish(ctx: JobContext, plan: list[dict[str, Any]]) -> None:
    with ctx.tx() as (tx, job):
        steps = {s.seq: s for s in tx.jobs.steps(job.id)}
        partial = False
        for entry in plan:
            left = sorted(tx.volumes.get_many(entry["volume_ids"]))
            if not left:
                set_outcome(
                    job,
                    entry["disk_id"],
                    disk_alias=entry["alias"],
                    volume_ids=list(entry["volume_ids"]),
                    outcome=entry["outcome"],
                )
                continue
            partial = True
            failed = next(
                (
                    steps[int(s)]
                    for s in entry["seqs"]
                    if int(s) in steps and steps[int(s)].state == StepState.FAILED
                ),
                None,
            )
            error = (failed.error if failed is not None else None) or {}
            set_outcome(
                job,
                entry["disk_id"],
                disk_alias=entry["alias"],
                volume_ids=left,
                outcome=DiskOutcome.CLEANUP_PENDING,
                reason=error.get("reason", ""),
                message=error.get("message", ""),
            )
        finish(tx, job, JobState.SUCCEEDED_PARTIAL if partial else JobState.SUCCEEDED, ctx.epoch)
