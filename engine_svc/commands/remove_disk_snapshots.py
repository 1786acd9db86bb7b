"""RemoveDiskSnapshots admission (SPEC §3.7): remove volumes of one disk from their snapshots.

Only ``disk:<id>`` is locked, so jobs on the VM's other disks go on meanwhile. The volumes
are removed one at a time, deepest first (ties: newest first); every M(B) is planned now on
a model of the disk's tree that each planned merge updates, so the later merges see the tree
as the earlier ones leave it (``saga/flows/remove_disk_snapshots.py`` executes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine_svc.agents.client import AgentClient
from engine_svc.commands.admission import (
    Envelope,
    disk_metadata,
    existing_job,
    new_job,
    pick_host,
    request_hash,
    require_not_in_preview,
    take_locks,
)
from engine_svc.commands.remove_snapshot import require_snapshot_type, require_space
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job, JobStep, Vm
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, VolumeStatus, disk_lock, is_uuid, utcnow
from engine_svc.errors import InvalidArgument, NotFound, PreconditionFailed, invalid_field, join_ids
from engine_svc.saga.flows.merge import TreeModel, lock_volumes, measured_sizes, plan_unit

MAX_IDS = 256


@dataclass(frozen=True)
class RemoveDiskSnapshots:
    """Input of RemoveDiskSnapshots: volumes of one disk."""

    volume_ids: tuple[str, ...]
    envelope: Envelope = field(default_factory=Envelope)


def _validate(cmd: RemoveDiskSnapshots) -> None:
    ids = cmd.volume_ids
    if not 1 <= len(ids) <= MAX_IDS:
        raise invalid_field("volume_ids", f"1..{MAX_IDS} volume ids")
    for volume_id in ids:
        if not is_uuid(volume_id):
            raise invalid_field("volume_ids", f"{volume_id!r} is not a lowercase UUID")
    dupes = {v for v in ids if ids.count(v) > 1}
    if dupes:
        raise InvalidArgument(
            "DUPLICATE_DISK_IDS", "a volume is named twice", volume_ids=join_ids(dupes)
        )
    cmd.envelope.validate()


def remove_disk_snapshots(
    db: Database,
    settings: EngineSettings,
    cmd: RemoveDiskSnapshots,
    agents: AgentClient | None = None,
) -> Job:
    """Admit a RemoveDiskSnapshots; returns the PENDING job.

    ``agents`` measures the volumes' current allocation for the space check (SPEC §3.7 #8).
    """
    _validate(cmd)
    digest = request_hash(JobKind.REMOVE_DISK_SNAPSHOTS, {"volume_ids": sorted(cmd.volume_ids)})
    measured = measured_sizes(db, agents, settings, cmd.volume_ids) if agents else {}
    with db.transaction() as tx:
        if (
            job := existing_job(tx, cmd.envelope, JobKind.REMOVE_DISK_SNAPSHOTS, digest)
        ) is not None:
            return job
        now = utcnow()
        found = tx.volumes.get_many(cmd.volume_ids)
        missing = [v for v in cmd.volume_ids if v not in found or found[v].pending_delete]
        if missing:
            raise NotFound(
                "DISK_SNAPSHOTS_NOT_EXIST",
                "these disk snapshots do not exist",
                volume_ids=join_ids(missing),
            )
        volumes = [found[v] for v in cmd.volume_ids]
        if len({v.disk_id for v in volumes}) > 1:
            raise PreconditionFailed(
                "DISKS_SNAPSHOTS_DONT_BELONG_TO_SAME_DISK",
                "the disk snapshots belong to several disks",
                volume_ids=join_ids(cmd.volume_ids),
            )
        heads = [v.id for v in volumes if v.active]
        if heads:
            raise PreconditionFailed(
                "DISK_SNAPSHOTS_ACTIVE",
                "the active volume of a disk cannot be removed",
                volume_ids=join_ids(heads),
            )
        disk_id = volumes[0].disk_id
        # Row locks in the order every admission takes them: the VM, then the disk.
        vms: list[Vm] = []
        for vm_id in sorted(tx.volumes.history_vm_ids(disk_id)):
            if (vm := tx.vms.get(vm_id, for_update=True)) is not None:
                vms.append(vm)
        disk = tx.disks.get(disk_id, for_update=True)
        assert disk is not None, f"disk {disk_id} of volume {volumes[0].id} is missing"
        job = new_job(
            JobKind.REMOVE_DISK_SNAPSHOTS,
            cmd.envelope,
            digest,
            now,
            vm_id=vms[0].id if vms else None,
            targets=[disk.id],
            params={},
            deadline=settings.merge_deadline,
        )
        take_locks(tx, [disk_lock(disk.id)], job, vm=None, disks={disk.id: disk}, now=now)
        for vm in vms:
            require_not_in_preview(tx, vm)
        owners = {}
        for volume in volumes:
            owner = tx.snapshots.get(volume.owner_snapshot_id or "")
            if owner is None:
                raise PreconditionFailed(
                    "VM_SNAPSHOT_TYPE_NOT_ALLOWED",
                    f"volume {volume.id} is owned by no snapshot",
                    snapshot_id="",
                    snapshot_type="",
                    supported_snapshot_types="REGULAR",
                )
            require_snapshot_type(owner)
            owners[volume.id] = owner
        head = tx.volumes.heads([disk.id]).get(disk.id)
        if head is not None and head.status == VolumeStatus.ILLEGAL:
            raise PreconditionFailed(
                "DISKS_ILLEGAL", "the head of this disk is ILLEGAL", **disk_metadata([disk])
            )
        require_space(tx, settings, volumes, measured)

        model = TreeModel(tx.volumes.of_disk(disk.id))
        # Deepest first, ties newest first (then by id, for a stable plan).
        ordered = sorted(
            volumes, key=lambda v: (-model.depth(v.id), -v.created_at.timestamp(), v.id)
        )
        host_id = pick_host(tx, settings, disk.domain_id or volumes[0].domain_id, now)
        units: list[dict[str, Any]] = []
        steps: list[JobStep] = []
        prior: dict[str, str] = {}
        for volume in ordered:
            unit, unit_steps = plan_unit(
                job,
                model,
                volume,
                owner_id=owners[volume.id].id,
                disk_alias=disk.alias,
                first_seq=len(steps) + 1,
                host_id=host_id,
            )
            lock_volumes(tx, unit.locked, prior)
            units.append(unit.to_json())
            steps.extend(unit_steps)
        job.params = {"disk_id": disk.id, "units": units, "prior": prior}
        job.result = {"disk_id": disk.id}
        tx.jobs.add(job, steps)
        return job
