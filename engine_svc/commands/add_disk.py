"""AddDisk (SPEC §3.9): a disk row and its base volume, optionally attached to a VM."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    OVERLAY_BYTES,
    Envelope,
    existing_job,
    finish_db_only,
    locked_vm,
    new_job,
    pick_host,
    plan_step,
    request_hash,
    require_domains,
    require_down,
    require_not_in_preview,
    take_locks,
)
from engine_svc.commands.validation import validate_alias, validate_text
from engine_svc.config import EngineSettings
from engine_svc.db.models import Attachment, Disk, Job, Volume
from engine_svc.db.repos import Repositories
from engine_svc.db.uow import Database
from engine_svc.domain import (
    AttachmentState,
    DiskInterface,
    DiskKind,
    DiskOutcome,
    JobKind,
    StepKind,
    TiB,
    VolumeFormat,
    VolumeStatus,
    disk_lock,
    is_uuid,
    new_id,
    utcnow,
    vm_lock,
)
from engine_svc.errors import PreconditionFailed, invalid_field

MIN_SIZE = 1024 * 1024
MAX_SIZE = 64 * TiB


@dataclass(frozen=True)
class AddDisk:
    """Input of AddDisk."""

    alias: str
    kind: DiskKind = DiskKind.IMAGE
    description: str = ""
    shareable: bool = False
    domain_id: str = ""
    virtual_size: int = 0
    format: VolumeFormat = VolumeFormat.COW
    lun_id: str = ""
    vm_id: str = ""
    interface: DiskInterface = DiskInterface.VIRTIO
    bootable: bool = False
    envelope: Envelope = field(default_factory=Envelope)


def _validate(cmd: AddDisk) -> None:
    validate_alias("alias", cmd.alias)
    validate_text("description", cmd.description)
    if cmd.vm_id and not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    if cmd.kind is DiskKind.IMAGE:
        if not is_uuid(cmd.domain_id):
            raise invalid_field("domain_id", "an IMAGE disk needs a storage domain id")
        if not MIN_SIZE <= cmd.virtual_size <= MAX_SIZE or cmd.virtual_size % 512:
            raise invalid_field("virtual_size", "1 MiB..64 TiB and a multiple of 512")
        if cmd.lun_id:
            raise invalid_field("lun_id", "only LUN disks have a lun_id")
    elif not cmd.lun_id or len(cmd.lun_id) > 255:
        raise invalid_field("lun_id", "a LUN disk needs a lun_id")
    cmd.envelope.validate()


def _check_boot(tx: Repositories, vm_id: str, vm_name: str, alias: str) -> None:
    for attachment in tx.disks.attachments_of_vm(vm_id):
        if attachment.bootable and attachment.state == AttachmentState.ATTACHED:
            other = tx.disks.get(attachment.disk_id)
            raise PreconditionFailed(
                "DISK_BOOT_IN_USE",
                f"VM {vm_name} already has a bootable disk",
                vm_name=vm_name,
                disk_aliases=other.alias if other else alias,
            )


def add_disk(db: Database, settings: EngineSettings, cmd: AddDisk) -> Job:
    """Admit AddDisk; an IMAGE disk gets a CREATE_VOLUME step for its base volume."""
    _validate(cmd)
    digest = request_hash(
        JobKind.ADD_DISK,
        {
            "alias": cmd.alias,
            "kind": cmd.kind,
            "description": cmd.description,
            "shareable": cmd.shareable,
            "domain_id": cmd.domain_id,
            "virtual_size": cmd.virtual_size,
            "format": cmd.format,
            "lun_id": cmd.lun_id,
            "vm_id": cmd.vm_id,
            "interface": cmd.interface,
            "bootable": cmd.bootable,
        },
    )
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.ADD_DISK, digest)) is not None:
            return job
        now = utcnow()
        disk_id = new_id()
        job = new_job(
            JobKind.ADD_DISK,
            cmd.envelope,
            digest,
            now,
            vm_id=cmd.vm_id or None,
            targets=[disk_id],
            params={},
            deadline=settings.prepare_deadline,
        )
        vm = None
        if cmd.vm_id:
            vm = locked_vm(tx, cmd.vm_id)
        image = cmd.kind is DiskKind.IMAGE
        take_locks(
            tx,
            [disk_lock(disk_id), *([vm_lock(vm.id)] if vm else [])],
            job,
            vm=vm,
            disks={},
            now=now,
        )
        if vm is not None:
            require_not_in_preview(tx, vm)
            require_down(vm)
            if cmd.bootable:
                _check_boot(tx, vm.id, vm.name, cmd.alias)
        if image:
            space = cmd.virtual_size if cmd.format is VolumeFormat.RAW else OVERLAY_BYTES
            require_domains(tx, settings, {cmd.domain_id: space}, now)
        disk = Disk(
            id=disk_id,
            alias=cmd.alias,
            description=cmd.description,
            kind=cmd.kind,
            shareable=cmd.shareable,
            domain_id=cmd.domain_id if image else None,
            virtual_size=cmd.virtual_size if image else None,
            base_format=cmd.format if image else None,
            lun_id=None if image else cmd.lun_id,
            created_at=now,
            version=1,
        )
        tx.disks.add(disk)
        tx.session.flush()
        if vm is not None:
            tx.disks.add_attachment(
                Attachment(
                    vm_id=vm.id,
                    disk_id=disk_id,
                    interface=cmd.interface,
                    bootable=cmd.bootable,
                    state=AttachmentState.ATTACHED,
                )
            )
        job.result = {"disk_id": disk_id}
        if not image:
            job.outcomes = [
                {
                    "disk_id": disk_id,
                    "disk_alias": cmd.alias,
                    "volume_ids": [],
                    "outcome": DiskOutcome.CREATED,
                    "reason": "",
                    "message": "",
                }
            ]
            finish_db_only(job, now)
            tx.jobs.add(job)
            tx.locks.release_job(job.id)
            return job
        owner = None
        if vm is not None and not cmd.shareable:
            owner = tx.snapshots.active_of(vm.id).id
        volume_id = new_id()
        tx.volumes.add(
            Volume(
                id=volume_id,
                disk_id=disk_id,
                domain_id=cmd.domain_id,
                parent_id=None,
                owner_snapshot_id=owner,
                active=True,
                status=VolumeStatus.LOCKED,
                pending_delete=False,
                format=cmd.format,
                virtual_size=cmd.virtual_size,
                actual_size=0,
                created_at=now,
            )
        )
        job.params = {"disk_id": disk_id, "volume_id": volume_id}
        step = plan_step(
            job,
            1,
            StepKind.CREATE_VOLUME,
            host_id=pick_host(tx, settings, cmd.domain_id, now),
            domain_id=cmd.domain_id,
            disk_id=disk_id,
            volume_ids=[volume_id],
            params={"virtual_size": cmd.virtual_size, "format": cmd.format},
        )
        tx.jobs.add(job, [step])
        return job
