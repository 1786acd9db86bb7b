"""PreviewSnapshot and RestoreSnapshot flows (SPEC §3.2, §3.5).

prepare    one CREATE_VOLUME step per PREVIEWED disk (an overlay on the chosen volume), in
           parallel. Any failure rolls the whole preview back: COMPENSATING, overlays
           deleted, the PREVIEW row deleted, FAILED with the VM exactly as before.
finalize   one transaction switches the VM to the previewed state. A restore commits in
           the same transaction and plans the deletion of the pre-preview heads, which the
           cleanup phase then runs (``phase`` = "cleanup" in the job's params).
"""

from __future__ import annotations

from engine_svc.domain import DiskOutcome, JobKind, JobState, StepKind, StepState, utcnow
from engine_svc.previews import finalize_commit, finalize_preview, plan_garbage_cleanup
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows.cleanup import clean_up
from engine_svc.saga.flows.common import (
    drop_or_garbage,
    finish,
    run_parallel,
    set_outcome,
    undo_created_volume,
)
from engine_svc.saga.steps import StepResult, StepRunner


def run(ctx: JobContext) -> None:
    """Drive a preview or restore job from whatever state it is in to a terminal one."""
    state = ctx.claimed_state
    if state is JobState.RUNNING:
        with ctx.tx() as (_tx, job):
            cleaning = job.params.get("phase") == "cleanup"
        if not cleaning:
            state = _prepare_and_finalize(ctx)
        if state is JobState.RUNNING:
            clean_up(ctx)
    if state is JobState.COMPENSATING:
        _rollback(ctx)


def _overlay_steps(ctx: JobContext) -> list[int]:
    with ctx.tx() as (tx, job):
        return [
            s.seq
            for s in tx.jobs.steps(job.id)
            if s.kind == StepKind.CREATE_VOLUME and s.compensates is None
        ]


def _prepare_and_finalize(ctx: JobContext) -> JobState:
    with ctx.tx() as (_tx, job):
        deadline = job.prepare_deadline

    def one_disk(seq: int) -> StepResult:
        return StepRunner(ctx).run(seq, deadline=deadline)

    results = run_parallel(ctx, _overlay_steps(ctx), one_disk)
    with ctx.tx() as (tx, job):
        failed = [seq for seq, r in sorted(results.items()) if not r.ok]
        if failed:
            tx.jobs.transition(job, JobState.COMPENSATING, ctx.epoch)
            job.error = tx.jobs.step(job.id, failed[0]).error
            return JobState.COMPENSATING
        vm = tx.vms.get(job.vm_id or "", for_update=True)
        preview = tx.snapshots.get(job.params["preview_id"], for_update=True)
        assert vm is not None and preview is not None
        for seq, result in results.items():
            step = tx.jobs.step(job.id, seq)
            overlay = tx.volumes.get(step.volume_ids[0])
            if overlay is not None and result.operation and result.operation.volume:
                overlay.actual_size = result.operation.volume.actual_size
        outcomes = finalize_preview(tx, vm, preview)
        if job.kind == JobKind.PREVIEW_SNAPSHOT:
            job.outcomes = outcomes
            finish(tx, job, JobState.SUCCEEDED, ctx.epoch)
            return JobState.SUCCEEDED
        outcomes, garbage = finalize_commit(
            tx, vm, preview, delete_detached_disks=bool(job.params["delete_detached_disks"])
        )
        last = max(s.seq for s in tx.jobs.steps(job.id))
        plan, steps = plan_garbage_cleanup(tx, ctx.settings, job, garbage, utcnow(), after_seq=last)
        for step in steps:
            tx.jobs.add_step(step)
        job.params = {**job.params, "phase": "cleanup", "cleanup": plan}
        job.outcomes = outcomes
        return JobState.RUNNING


def _rollback(ctx: JobContext) -> None:
    for seq in _overlay_steps(ctx):
        with ctx.tx() as (tx, job):
            step = tx.jobs.step(job.id, seq)
            if step.state == StepState.COMPENSATED:
                continue
            overlay_id = step.volume_ids[0]
        deleted = undo_created_volume(ctx, seq)
        with ctx.tx() as (tx, _job):
            drop_or_garbage(tx, tx.volumes.get(overlay_id), deleted=deleted)
    with ctx.tx() as (tx, job):
        preview = tx.snapshots.get(job.params["preview_id"])
        entries = (preview.preview_plan or {}).get("entries", []) if preview else []
        disks = tx.disks.get_many(e["disk_id"] for e in entries)
        for e in entries:
            disk = disks.get(e["disk_id"])
            set_outcome(
                job,
                e["disk_id"],
                disk_alias=disk.alias if disk else "",
                outcome=DiskOutcome.ROLLED_BACK,
            )
        if preview is not None:
            tx.snapshots.delete(preview)
        finish(tx, job, JobState.FAILED, ctx.epoch, error=job.error)
