"""AddDisk flow (SPEC §3.9): create the base volume; on failure remove the disk's rows."""

from __future__ import annotations

from engine_svc.domain import DiskOutcome, JobState, StepState, VolumeStatus
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows.common import (
    drop_or_garbage,
    finish,
    set_outcome,
    undo_created_volume,
)
from engine_svc.saga.steps import StepRunner

SEQ = 1


def run(ctx: JobContext) -> None:
    """Drive an AddDisk job to a terminal state."""
    state = ctx.claimed_state
    with ctx.tx() as (_tx, job):
        disk_id, volume_id, deadline = (
            job.params["disk_id"],
            job.params["volume_id"],
            job.prepare_deadline,
        )
    if state is JobState.RUNNING:
        result = StepRunner(ctx).run(SEQ, deadline=deadline)
        with ctx.tx() as (tx, job):
            if result.ok:
                volume = tx.volumes.get(volume_id)
                assert volume is not None
                volume.status = VolumeStatus.OK
                if result.operation is not None and result.operation.volume is not None:
                    volume.actual_size = result.operation.volume.actual_size
                disk = tx.disks.get(disk_id)
                set_outcome(
                    job,
                    disk_id,
                    disk_alias=disk.alias if disk else "",
                    volume_ids=[volume_id],
                    outcome=DiskOutcome.CREATED,
                )
                finish(tx, job, JobState.SUCCEEDED, ctx.epoch)
                return
            tx.jobs.transition(job, JobState.COMPENSATING, ctx.epoch)
            job.error = tx.jobs.step(job.id, SEQ).error
    deleted = undo_created_volume(ctx, SEQ)
    with ctx.tx() as (tx, job):
        volume = tx.volumes.get(volume_id)
        disk = tx.disks.get(disk_id)
        alias = disk.alias if disk else ""
        if deleted:
            drop_or_garbage(tx, volume, deleted=True)
            for attachment in tx.disks.attachments_of_disk(disk_id):
                tx.disks.delete_attachment(attachment)
            tx.session.flush()
            if disk is not None:
                tx.disks.delete(disk)
        else:
            drop_or_garbage(tx, volume, deleted=False)
        error = job.error or {}
        set_outcome(
            job,
            disk_id,
            disk_alias=alias,
            outcome=DiskOutcome.ROLLED_BACK,
            reason=error.get("reason", ""),
            message=error.get("message", ""),
        )
        step = tx.jobs.step(job.id, SEQ)
        assert step.state == StepState.COMPENSATED
        finish(tx, job, JobState.FAILED, ctx.epoch, error=job.error)
