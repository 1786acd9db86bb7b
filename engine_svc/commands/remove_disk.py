"""RemoveDisk (SPEC §3.9): a DB decision at admission, then cleanup of the volumes.

Admission finalizes (D13): the disk leaves every snapshot configuration, its attachments
go, all its volumes become garbage (INV-12) and its row is deleted. The job then deletes the
volume files leaf-first, one DELETE_VOLUME step per volume (``saga/flows/remove_disk.py``);
a volume that cannot be deleted stays garbage for the reaper. Nothing is ever rolled back.

``retire_disk`` and ``plan_cleanup`` are shared with RemoveVm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine_svc.commands.admission import (
    Envelope,
    existing_job,
    finish_db_only,
    new_job,
    plan_step,
    request_hash,
    require_down,
    require_not_in_preview,
    take_locks,
)
from engine_svc.config import EngineSettings
from engine_svc.db.models import Disk, Job, JobStep, Vm, Volume
from engine_svc.db.repos import Repositories
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import (
    DiskOutcome,
    JobKind,
    StepKind,
    VolumeStatus,
    disk_lock,
    is_uuid,
    utcnow,
    vm_lock,
)
from engine_svc.errors import NotFound, invalid_field
from engine_svc.snapshot_config import parse, restrict


@dataclass(frozen=True)
class RemoveDisk:
    """Input of RemoveDisk."""

    disk_id: str
    envelope: Envelope = field(default_factory=Envelope)


def lock_all(
    tx: Repositories,
    keys: Iterable[str],
    job: Job,
    *,
    vms: Sequence[Vm],
    disks: Mapping[str, Disk],
    now: datetime,
) -> None:
    """``take_locks`` when several VMs are involved: the reason names the VM whose lock is held."""
    keys = sorted(set(keys))
    held = tx.locks.holders(keys)
    vm = next((v for v in vms if vm_lock(v.id) in held), vms[0] if vms else None)
    take_locks(tx, keys, job, vm=vm, disks=disks, now=now)


def leaf_first(volumes: Iterable[Volume]) -> list[Volume]:
    """Volumes ordered so that every child comes before its parent (deepest, then newest)."""
    by_id = {v.id: v for v in volumes}
    depth: dict[str, int] = {}

    def depth_of(volume: Volume) -> int:
        seen: set[str] = set()
        node: Volume | None = volume
        n = 0
        while node is not None and node.parent_id is not None and node.id not in seen:
            seen.add(node.id)
            node = by_id.get(node.parent_id)
            n += 1
        return n

    for v in by_id.values():
        depth[v.id] = depth_of(v)
    return sorted(by_id.values(), key=lambda v: (-depth[v.id], -v.created_at.timestamp(), v.id))


def retire_disk(tx: Repositories, disk: Disk) -> list[Volume]:
    """Finalize a disk's removal in the caller's transaction; returns its volumes leaf-first.

    The disk is dropped from every snapshot configuration that lists it (a snapshot left
    with no disks stays as configuration-only), its attachments are removed, every volume
    becomes garbage (INV-12) and the disk row is deleted (volumes.disk_id is no foreign key,
    so the garbage rows outlive it until cleanup or the reaper confirms the deletion).
    """
    volumes = list(tx.volumes.of_disk(disk.id))
    attachments = list(tx.disks.attachments_of_disk(disk.id))
    vm_ids = {a.vm_id for a in attachments} | tx.volumes.history_vm_ids(disk.id)
    snapshot_ids = {v.owner_snapshot_id for v in volumes if v.owner_snapshot_id}
    snapshots = {s.id: s for vm_id in sorted(vm_ids) for s in tx.snapshots.of_vm(vm_id)}
    for snapshot_id in sorted(snapshot_ids - set(snapshots)):
        owner = tx.snapshots.get(snapshot_id)
        if owner is not None:
            snapshots[owner.id] = owner
    for snapshot in snapshots.values():
        if snapshot.config is None:
            continue
        listed = [d["disk_id"] for d in parse(snapshot.config)["disks"]]
        if disk.id in listed:
            snapshot.config = restrict(snapshot.config, [d for d in listed if d != disk.id])
    for attachment in attachments:
        tx.disks.delete_attachment(attachment)
    for volume in volumes:
        volume.pending_delete = True
        volume.status = VolumeStatus.ILLEGAL
        volume.owner_snapshot_id = None
        volume.active = False
    tx.session.flush()
    tx.disks.delete(disk)
    tx.session.flush()
    return leaf_first(volumes)


def _cleanup_host(
    tx: Repositories, settings: EngineSettings, domain_id: str, now: datetime
) -> str | None:
    """Step affinity for a deletion: an UP host if any (cleanup never needs one to admit)."""
    serving = [h for _, h in tx.hosts.serving(domain_id)]
    for host in serving:
        if host_is_up(host, now, settings.heartbeat_interval):
            return host.id
    return serving[0].id if serving else None


def plan_cleanup(
    tx: Repositories,
    settings: EngineSettings,
    job: Job,
    retired: Sequence[tuple[Disk, list[Volume]]],
    now: datetime,
    *,
    outcome: DiskOutcome = DiskOutcome.DELETED,
    after_seq: int = 0,
) -> tuple[list[dict[str, Any]], list[JobStep]]:
    """One DELETE_VOLUME step per volume, leaf-first per disk; returns (plan, steps).

    ``outcome`` is what a disk reports once all its volumes are gone; step numbers start
    after ``after_seq`` (a job may already have steps).
    """
    plan: list[dict[str, Any]] = []
    steps: list[JobStep] = []
    seq = after_seq
    for disk, volumes in retired:
        seqs = []
        for volume in volumes:
            seq += 1
            step = plan_step(
                job,
                seq,
                StepKind.DELETE_VOLUME,
                host_id=_cleanup_host(tx, settings, volume.domain_id, now) or "",
                domain_id=volume.domain_id,
                disk_id=disk.id,
                volume_ids=[volume.id],
            )
            step.host_id = step.host_id or None
            steps.append(step)
            seqs.append(seq)
        plan.append(
            {
                "disk_id": disk.id,
                "alias": disk.alias,
                "volume_ids": [v.id for v in volumes],
                "seqs": seqs,
                "outcome": outcome,
            }
        )
    return plan, steps


def deleted_outcome(disk_id: str, alias: str) -> dict[str, Any]:
    """The outcome of a disk whose removal needed no storage work."""
    return {
        "disk_id": disk_id,
        "disk_alias": alias,
        "volume_ids": [],
        "outcome": DiskOutcome.DELETED,
        "reason": "",
        "message": "",
    }


def remove_disk(db: Database, settings: EngineSettings, cmd: RemoveDisk) -> Job:
    """Admit RemoveDisk: finalize at once; the job (if any volume) deletes the files."""
    if not is_uuid(cmd.disk_id):
        raise invalid_field("disk_id", "must be a lowercase UUID")
    cmd.envelope.validate()
    digest = request_hash(JobKind.REMOVE_DISK, {"disk_id": cmd.disk_id})
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.REMOVE_DISK, digest)) is not None:
            return job
        now = utcnow()
        # Row locks in the order every admission takes them: VMs, then the disk. The
        # disk's VMs are read again once it is locked, in case they changed meanwhile.
        disk = tx.disks.get(cmd.disk_id)
        vms: dict[str, Vm] = {}
        seen: set[str] = set()
        disk_locked = False
        while True:
            if disk is None:
                raise NotFound(
                    "DISKS_NOT_EXIST", f"disk {cmd.disk_id} does not exist", disk_ids=cmd.disk_id
                )
            attached_ids = {a.vm_id for a in tx.disks.attachments_of_disk(disk.id)}
            wanted = attached_ids | tx.volumes.history_vm_ids(disk.id)
            if disk_locked and wanted <= seen:
                break
            for vm_id in sorted(wanted - seen):
                seen.add(vm_id)
                if (vm := tx.vms.get(vm_id, for_update=True)) is not None:
                    vms[vm.id] = vm
            disk = tx.disks.get(cmd.disk_id, for_update=True)
            disk_locked = True
        involved = sorted(
            (vms[i] for i in wanted if i in vms), key=lambda v: (v.id not in attached_ids, v.id)
        )
        job = new_job(
            JobKind.REMOVE_DISK,
            cmd.envelope,
            digest,
            now,
            vm_id=involved[0].id if involved else None,
            targets=[disk.id],
            params={},
        )
        lock_all(
            tx,
            [disk_lock(disk.id), *(vm_lock(v.id) for v in involved)],
            job,
            vms=involved,
            disks={disk.id: disk},
            now=now,
        )
        for vm in involved:
            require_not_in_preview(tx, vm)
        for vm in involved:
            if vm.id in attached_ids:
                require_down(vm)
        alias = disk.alias
        volumes = retire_disk(tx, disk)
        plan, steps = plan_cleanup(tx, settings, job, [(disk, volumes)], now)
        job.params = {"cleanup": plan}
        job.result = {"disk_id": disk.id}
        if not steps:
            job.outcomes = [deleted_outcome(disk.id, alias)]
            finish_db_only(job, now)
            tx.jobs.add(job)
            tx.locks.release_job(job.id)
            return job
        tx.jobs.add(job, steps)
        return job
