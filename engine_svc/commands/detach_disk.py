"""DetachDisk (SPEC §3.9): the disk leaves the VM and becomes floating. DB only."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    Envelope,
    disk_metadata,
    existing_job,
    finish_db_only,
    new_job,
    request_hash,
    require_down,
    require_not_in_preview,
    take_locks,
)
from engine_svc.db.models import Job
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, disk_lock, is_uuid, utcnow, vm_lock
from engine_svc.errors import NotFound, PreconditionFailed, invalid_field


@dataclass(frozen=True)
class DetachDisk:
    """Input of DetachDisk."""

    disk_id: str
    vm_id: str
    envelope: Envelope = field(default_factory=Envelope)


def detach_disk(db: Database, cmd: DetachDisk) -> Job:
    """Detach the disk; the returned job is already SUCCEEDED."""
    if not is_uuid(cmd.disk_id):
        raise invalid_field("disk_id", "must be a lowercase UUID")
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    cmd.envelope.validate()
    digest = request_hash(JobKind.DETACH_DISK, {"disk_id": cmd.disk_id, "vm_id": cmd.vm_id})
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.DETACH_DISK, digest)) is not None:
            return job
        now = utcnow()
        # Row locks VM first, then disk (as every admission); the disk's check comes first.
        vm = tx.vms.get(cmd.vm_id, for_update=True)
        disk = tx.disks.get(cmd.disk_id, for_update=True)
        if disk is None:
            raise NotFound(
                "DISKS_NOT_EXIST", f"disk {cmd.disk_id} does not exist", disk_ids=cmd.disk_id
            )
        if vm is None:
            raise NotFound("VM_NOT_EXIST", f"VM {cmd.vm_id} does not exist", vm_id=cmd.vm_id)
        job = new_job(
            JobKind.DETACH_DISK,
            cmd.envelope,
            digest,
            now,
            vm_id=vm.id,
            targets=[disk.id],
            params={},
        )
        take_locks(
            tx, [vm_lock(vm.id), disk_lock(disk.id)], job, vm=vm, disks={disk.id: disk}, now=now
        )
        require_not_in_preview(tx, vm)
        require_down(vm)
        if tx.volumes.has_regular_owner(disk.id):
            raise PreconditionFailed(
                "CANNOT_DETACH_DISK_WITH_SNAPSHOT",
                f"disk {disk.alias} has snapshots; remove them before detaching it",
                disk_ids=disk.id,
            )
        attachment = tx.disks.attachment(vm.id, disk.id)
        if attachment is None:
            raise PreconditionFailed(
                "DISKS_NOT_ATTACHED_TO_VM",
                f"disk {disk.alias} is not attached to VM {vm.name}",
                vm_name=vm.name,
                **disk_metadata([disk]),
            )
        tx.disks.delete_attachment(attachment)
        for volume in tx.volumes.of_disk(disk.id, include_garbage=False):
            if volume.active:
                volume.owner_snapshot_id = None
        disk.version += 1
        job.result = {"vm_id": vm.id, "disk_id": disk.id}
        finish_db_only(job, now)
        tx.jobs.add(job)
        tx.locks.release_job(job.id)
        return job
