"""CommitPreview admission (SPEC §3.3): a DB decision (D13); the job only cleans up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from engine_svc.commands.admission import (
    Envelope,
    existing_job,
    finish_db_only,
    locked_vm,
    new_job,
    request_hash,
    require_down,
    take_locks,
)
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job, Snapshot, Vm
from engine_svc.db.repos import Repositories
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, disk_lock, is_uuid, utcnow, vm_lock
from engine_svc.errors import PreconditionFailed, invalid_field
from engine_svc.previews import Garbage, Plan, finalize_commit, plan_garbage_cleanup


@dataclass(frozen=True)
class CommitPreview:
    """Input of CommitPreview."""

    vm_id: str
    delete_detached_disks: bool = False
    envelope: Envelope = field(default_factory=Envelope)


def admit_end_of_preview(
    tx: Repositories, vm_id: str, job: Job, now: datetime
) -> tuple[Vm, Snapshot]:
    """Checks shared by commit and undo: VM exists, locks, in preview, DOWN."""
    vm = locked_vm(tx, vm_id)
    preview = tx.snapshots.preview_of(vm.id)
    plan_disks = (
        [e.disk_id for e in Plan.from_json(preview.preview_plan).entries]
        if preview is not None and preview.preview_plan
        else []
    )
    disks = tx.disks.get_many(plan_disks, for_update=True)
    take_locks(
        tx, [vm_lock(vm.id), *(disk_lock(d) for d in disks)], job, vm=vm, disks=disks, now=now
    )
    if preview is None:
        raise PreconditionFailed(
            "VM_SNAPSHOT_NOT_IN_PREVIEW", f"VM {vm.name} is not in preview", vm_id=vm.id
        )
    require_down(vm)
    return vm, preview


def enqueue_cleanup(
    tx: Repositories,
    settings: EngineSettings,
    job: Job,
    garbage: list[Garbage],
    now: datetime,
) -> None:
    """Add the job with its cleanup steps, or finish it at once if there is nothing to delete."""
    plan, steps = plan_garbage_cleanup(tx, settings, job, garbage, now)
    job.params = {**job.params, "cleanup": plan}
    if steps:
        tx.jobs.add(job, steps)
        return
    finish_db_only(job, now)
    tx.jobs.add(job)
    tx.locks.release_job(job.id)


def commit_preview(db: Database, settings: EngineSettings, cmd: CommitPreview) -> Job:
    """Admit and finalize CommitPreview; the job deletes the pre-preview heads."""
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    cmd.envelope.validate()
    digest = request_hash(
        JobKind.COMMIT_PREVIEW,
        {"vm_id": cmd.vm_id, "delete_detached_disks": cmd.delete_detached_disks},
    )
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.COMMIT_PREVIEW, digest)) is not None:
            return job
        now = utcnow()
        job = new_job(
            JobKind.COMMIT_PREVIEW,
            cmd.envelope,
            digest,
            now,
            vm_id=cmd.vm_id,
            targets=[cmd.vm_id],
            params={},
        )
        vm, preview = admit_end_of_preview(tx, cmd.vm_id, job, now)
        outcomes, garbage = finalize_commit(
            tx, vm, preview, delete_detached_disks=cmd.delete_detached_disks
        )
        job.outcomes = outcomes
        job.result = {"vm_id": vm.id}
        enqueue_cleanup(tx, settings, job, garbage, now)
        return job
