"""CreateSnapshot admission (SPEC §3.1): validate, lock, plan one overlay per selected disk."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    OVERLAY_BYTES,
    Envelope,
    Lease,
    Started,
    disk_metadata,
    existing_job,
    finish_db_only,
    locked_vm,
    new_job,
    plan_step,
    request_hash,
    require_domains,
    require_not_in_preview,
    take_locks,
)
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job, Snapshot, Volume
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import (
    AttachmentState,
    DiskKind,
    DiskOutcome,
    JobKind,
    MemoryOutcome,
    SnapshotStatus,
    SnapshotType,
    StepKind,
    VolumeFormat,
    VolumeStatus,
    disk_lock,
    is_uuid,
    new_id,
    utcnow,
    vm_lock,
)
from engine_svc.errors import (
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    invalid_field,
    join_ids,
)
from engine_svc.snapshot_config import disk_entry, render, vm_section

MAX_DESCRIPTION = 4000
MAX_IDS = 256


@dataclass(frozen=True)
class CreateSnapshot:
    """Input of CreateSnapshot. ``disk_ids`` None means "every snapshot-able disk"."""

    vm_id: str
    description: str
    disk_ids: tuple[str, ...] | None
    save_memory: bool = False
    atomic: bool = False
    envelope: Envelope = field(default_factory=Envelope)


def validate_description(text: str) -> None:
    """SPEC §3.1 check 1: 1..4000 printable code points, not all spaces."""
    if not text or not text.strip(" "):
        raise InvalidArgument(
            "DESCRIPTION_EMPTY",
            "the description is empty",
            field="description",
            max_length=MAX_DESCRIPTION,
        )
    if len(text) > MAX_DESCRIPTION:
        raise InvalidArgument(
            "DESCRIPTION_TOO_LONG",
            f"the description is longer than {MAX_DESCRIPTION} characters",
            field="description",
            max_length=MAX_DESCRIPTION,
        )
    if not text.isprintable():
        raise InvalidArgument(
            "DESCRIPTION_INVALID",
            "the description contains non-printable characters",
            field="description",
            max_length=MAX_DESCRIPTION,
        )


def create_snapshot(
    db: Database, settings: EngineSettings, cmd: CreateSnapshot, lease: Lease | None = None
) -> tuple[Job, Started | None]:
    """Admit a CreateSnapshot: the job is PENDING, RUNNING under ``lease`` (then also
    returned as ``Started``), or SUCCEEDED if config-only. A repeated request returns its
    existing job."""
    validate_description(cmd.description)
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    requested = cmd.disk_ids
    if requested is not None:
        if len(requested) > MAX_IDS:
            raise invalid_field("disks.disk_ids", f"at most {MAX_IDS} ids")
        for disk_id in requested:
            if not is_uuid(disk_id):
                raise invalid_field("disks.disk_ids", f"{disk_id!r} is not a lowercase UUID")
        dupes = {d for d in requested if requested.count(d) > 1}
        if dupes:
            raise InvalidArgument(
                "DUPLICATE_DISK_IDS", "a disk is named twice", disk_ids=join_ids(dupes)
            )
    cmd.envelope.validate()
    digest = request_hash(
        JobKind.CREATE_SNAPSHOT,
        {
            "vm_id": cmd.vm_id,
            "description": cmd.description,
            "disk_ids": None if requested is None else sorted(requested),
            "save_memory": cmd.save_memory,
            "atomic": cmd.atomic,
        },
    )
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.CREATE_SNAPSHOT, digest)) is not None:
            return job, None
        now = utcnow()
        vm = locked_vm(tx, cmd.vm_id)
        attached = tx.disks.attached_to(vm.id)
        attachments = {a.disk.id: a.attachment for a in attached}
        attached_disks = {a.disk.id: a.disk for a in attached}
        if requested is None:
            selected = [
                d.id
                for d in attached_disks.values()
                if attachments[d.id].state == AttachmentState.ATTACHED
                and d.kind == DiskKind.IMAGE
                and not d.shareable
            ]
        else:
            found = tx.disks.get_many(requested)
            missing = [d for d in requested if d not in found]
            if missing:
                raise NotFound("DISKS_NOT_EXIST", "disks do not exist", disk_ids=join_ids(missing))
            foreign = [
                found[d]
                for d in requested
                if d not in attachments or attachments[d].state != AttachmentState.ATTACHED
            ]
            if foreign:
                raise PreconditionFailed(
                    "DISKS_NOT_ATTACHED_TO_VM",
                    f"disks are not attached to VM {vm.name}",
                    vm_name=vm.name,
                    **disk_metadata(foreign),
                )
            unsupported = [
                found[d] for d in requested if found[d].kind != DiskKind.IMAGE or found[d].shareable
            ]
            if unsupported:
                raise PreconditionFailed(
                    "DISK_SNAPSHOT_NOT_SUPPORTED",
                    "shareable and LUN disks cannot be snapshotted",
                    **disk_metadata(unsupported),
                )
            selected = list(requested)
        selected.sort()
        job = new_job(
            JobKind.CREATE_SNAPSHOT,
            cmd.envelope,
            digest,
            now,
            vm_id=vm.id,
            targets=[vm.id],
            params={},
            deadline=settings.prepare_deadline,
            lease=lease if selected else None,
        )
        claimed = job.lease_owner is not None
        take_locks(
            tx,
            [vm_lock(vm.id), *(disk_lock(d) for d in selected)],
            job,
            vm=vm,
            disks=attached_disks,
            now=now,
        )
        active = require_not_in_preview(tx, vm)
        if cmd.save_memory:
            if vm.run_state != "UP":
                raise PreconditionFailed(
                    "MEMORY_REQUIRES_RUNNING_VM",
                    f"VM {vm.name} is {vm.run_state}: only a running VM has memory to save",
                    vm_id=vm.id,
                    run_state=vm.run_state,
                )
            host = tx.hosts.get(vm.host_id or "")
            if host is not None and not host_is_up(host, now, settings.heartbeat_interval):
                raise PreconditionFailed(
                    "HOST_NOT_UP",
                    f"host {host.name} of VM {vm.name} is not UP: its memory cannot be saved",
                    host_id=host.id,
                    host_name=host.name,
                )
            if host is None or not host.live_ops:
                raise PreconditionFailed(
                    "HOST_CANNOT_SAVE_MEMORY",
                    "the VM's host has no VM runtime that can save memory (live_ops=false)",
                    host_id=vm.host_id or "",
                    host_name=host.name if host else "",
                )
        heads = {a.disk.id: a.head for a in attached if a.head is not None}
        illegal = [attached_disks[d] for d in selected if heads[d].status == VolumeStatus.ILLEGAL]
        if illegal:
            raise PreconditionFailed(
                "DISKS_ILLEGAL", "the heads of these disks are ILLEGAL", **disk_metadata(illegal)
            )
        needs: dict[str, int] = {}
        for disk_id in selected:
            domain_id = heads[disk_id].domain_id
            needs[domain_id] = needs.get(domain_id, 0) + OVERLAY_BYTES
        hosts = require_domains(tx, settings, needs, now)

        entries = [disk_entry(attached_disks[d], attachments[d], heads[d]) for d in selected]
        snapshot = Snapshot(
            id=new_id(),
            vm_id=vm.id,
            type=SnapshotType.REGULAR,
            status=SnapshotStatus.LOCKED if selected else SnapshotStatus.OK,
            description=cmd.description,
            created_at=now,
            config=render(vm_section(vm), entries, now),
            memory=None,
            preview_plan=None,
        )
        tx.insert_new([snapshot])
        plan = []
        steps = []
        overlays = []
        for seq, disk_id in enumerate(selected, start=1):
            head = heads[disk_id]
            overlay_id = new_id()
            overlays.append(
                Volume(
                    id=overlay_id,
                    disk_id=disk_id,
                    domain_id=head.domain_id,
                    parent_id=head.id,
                    owner_snapshot_id=active.id,
                    active=False,
                    status=VolumeStatus.LOCKED,
                    pending_delete=False,
                    format=VolumeFormat.COW,
                    virtual_size=head.virtual_size,
                    actual_size=0,
                    created_at=now,
                )
            )
            plan.append(
                {
                    "seq": seq,
                    "disk_id": disk_id,
                    "disk_alias": attached_disks[disk_id].alias,
                    "head_id": head.id,
                    "volume_id": overlay_id,
                }
            )
            steps.append(
                plan_step(
                    job,
                    seq,
                    StepKind.CREATE_VOLUME,
                    host_id=hosts[head.domain_id].id,
                    domain_id=head.domain_id,
                    disk_id=disk_id,
                    volume_ids=[overlay_id],
                    params={"parent_id": head.id},
                    started=claimed,
                )
            )
        tx.insert_new(overlays)
        tx.volumes.lock_heads([heads[d].id for d in selected])
        job.params = {"snapshot_id": snapshot.id, "atomic": cmd.atomic, "disks": plan}
        job.result = {"snapshot_id": snapshot.id}
        job.memory_outcome = MemoryOutcome.NOT_REQUESTED
        job.outcomes = [
            {
                "disk_id": d.id,
                "disk_alias": d.alias,
                "volume_ids": [],
                "outcome": DiskOutcome.NOT_SELECTED,
                "reason": "",
                "message": "",
            }
            for d in sorted(attached_disks.values(), key=lambda d: d.id)
            if d.id not in selected and attachments[d.id].state == AttachmentState.ATTACHED
        ]
        if not selected:
            finish_db_only(job, now)
            tx.jobs.add(job)
            tx.locks.release_job(job.id)
        else:
            tx.jobs.add(job, steps)
        if not claimed:
            return job, None
        return job, Started(job, tuple(steps), {h.id: h.address for h in hosts.values()})
