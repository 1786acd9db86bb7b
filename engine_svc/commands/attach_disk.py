"""AttachDisk (SPEC §3.9): attach a floating (or shareable) disk to a VM. DB only."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    Envelope,
    existing_job,
    finish_db_only,
    new_job,
    request_hash,
    require_down,
    require_not_in_preview,
    take_locks,
)
from engine_svc.db.models import Attachment, Job
from engine_svc.db.repos import Repositories
from engine_svc.db.uow import Database
from engine_svc.domain import (
    AttachmentState,
    DiskInterface,
    DiskKind,
    JobKind,
    disk_lock,
    is_uuid,
    utcnow,
    vm_lock,
)
from engine_svc.errors import NotFound, PreconditionFailed, invalid_field, join_ids


@dataclass(frozen=True)
class AttachDisk:
    """Input of AttachDisk."""

    disk_id: str
    vm_id: str
    interface: DiskInterface = DiskInterface.VIRTIO
    bootable: bool = False
    envelope: Envelope = field(default_factory=Envelope)


def require_boot_free(tx: Repositories, vm_id: str, vm_name: str, *, except_disk: str) -> None:
    """DISK_BOOT_IN_USE if another ATTACHED disk of the VM is bootable."""
    for attachment in tx.disks.attachments_of_vm(vm_id):
        if (
            attachment.disk_id != except_disk
            and attachment.bootable
            and attachment.state == AttachmentState.ATTACHED
        ):
            other = tx.disks.get(attachment.disk_id)
            raise PreconditionFailed(
                "DISK_BOOT_IN_USE",
                f"VM {vm_name} already has a bootable disk",
                vm_name=vm_name,
                disk_aliases=other.alias if other else attachment.disk_id,
            )


def attach_disk(db: Database, cmd: AttachDisk) -> Job:
    """Attach the disk; the returned job is already SUCCEEDED."""
    if not is_uuid(cmd.disk_id):
        raise invalid_field("disk_id", "must be a lowercase UUID")
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    cmd.envelope.validate()
    digest = request_hash(
        JobKind.ATTACH_DISK,
        {
            "disk_id": cmd.disk_id,
            "vm_id": cmd.vm_id,
            "interface": cmd.interface,
            "bootable": cmd.bootable,
        },
    )
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.ATTACH_DISK, digest)) is not None:
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
            JobKind.ATTACH_DISK,
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
        attachments = list(tx.disks.attachments_of_disk(disk.id))
        # A preview-detached disk belongs to its VM's preview (SPEC §3.2 "while in preview");
        # commit and undo lock it, so the disk lock taken above serialises with them.
        for a in attachments:
            if a.state == AttachmentState.PREVIEW_DETACHED and (other := tx.vms.get(a.vm_id)):
                require_not_in_preview(tx, other)
        require_down(vm)
        here = next((a for a in attachments if a.vm_id == vm.id), None)
        if here is not None or (attachments and not disk.shareable):
            holder = here or attachments[0]
            raise PreconditionFailed(
                "DISK_ALREADY_ATTACHED",
                f"disk {disk.alias} is already attached to VM {holder.vm_id}",
                disk_ids=disk.id,
                vm_id=holder.vm_id,
            )
        history = tx.volumes.history_vm_ids(disk.id) - {vm.id}
        if history:
            raise PreconditionFailed(
                "DISK_SNAPSHOTS_BELONG_TO_ANOTHER_VM",
                f"snapshots of disk {disk.alias} belong to another VM",
                disk_ids=disk.id,
                vm_id=join_ids(history),
            )
        if cmd.bootable:
            require_boot_free(tx, vm.id, vm.name, except_disk=disk.id)
        tx.disks.add_attachment(
            Attachment(
                vm_id=vm.id,
                disk_id=disk.id,
                interface=cmd.interface,
                bootable=cmd.bootable,
                state=AttachmentState.ATTACHED,
            )
        )
        if disk.kind == DiskKind.IMAGE and not disk.shareable:
            head = tx.volumes.heads([disk.id]).get(disk.id)
            if head is not None:
                head.owner_snapshot_id = tx.snapshots.active_of(vm.id).id
        disk.version += 1
        job.result = {"vm_id": vm.id, "disk_id": disk.id}
        finish_db_only(job, now)
        tx.jobs.add(job)
        tx.locks.release_job(job.id)
        return job
