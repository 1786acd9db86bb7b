"""RemoveSnapshot admission (SPEC §3.6): validate, lock, plan M(B) for every disk.

A snapshot owning no volume is deleted in the request transaction (the job is returned
SUCCEEDED). Otherwise the snapshot goes LOCKED and every step of every disk's merge
procedure is planned now, with its op_id, so the flow (``saga/flows/remove_snapshot.py``)
only executes and records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine_svc.agents.client import AgentClient
from engine_svc.commands.admission import (
    Envelope,
    disk_metadata,
    existing_job,
    finish_db_only,
    locked_vm,
    new_job,
    pick_host,
    request_hash,
    require_domains,
    require_not_in_preview,
    take_locks,
)
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job, JobStep, Snapshot, Volume
from engine_svc.db.repos import Repositories
from engine_svc.db.uow import Database
from engine_svc.domain import (
    NIL_UUID,
    JobKind,
    SnapshotStatus,
    SnapshotType,
    VolumeStatus,
    disk_lock,
    is_uuid,
    utcnow,
    vm_lock,
)
from engine_svc.errors import InvalidArgument, NotFound, PreconditionFailed, invalid_field
from engine_svc.saga.flows.merge import TreeModel, lock_volumes, measured_sizes, plan_unit


@dataclass(frozen=True)
class RemoveSnapshot:
    """Input of RemoveSnapshot."""

    vm_id: str
    snapshot_id: str
    envelope: Envelope = field(default_factory=Envelope)


def validate_snapshot_id(name: str, value: str) -> None:
    """CORRUPTED_VM_SNAPSHOT_ID for the nil UUID, INVALID_FIELD for anything malformed."""
    if value == NIL_UUID:
        raise InvalidArgument("CORRUPTED_VM_SNAPSHOT_ID", f"{name} is the nil UUID", field=name)
    if not is_uuid(value):
        raise invalid_field(name, "must be a lowercase UUID")


def require_snapshot_type(snapshot: Snapshot) -> None:
    """VM_SNAPSHOT_TYPE_NOT_ALLOWED unless the snapshot is REGULAR."""
    if snapshot.type != SnapshotType.REGULAR:
        raise PreconditionFailed(
            "VM_SNAPSHOT_TYPE_NOT_ALLOWED",
            f"a {snapshot.type} snapshot cannot be removed; only REGULAR snapshots can",
            snapshot_id=snapshot.id,
            snapshot_type=snapshot.type,
            supported_snapshot_types=SnapshotType.REGULAR,
        )


def require_space(
    tx: Repositories,
    settings: EngineSettings,
    volumes: list[Volume],
    measured: dict[str, int],
) -> None:
    """Domains usable, with free ≥ Σ actual_size of the volumes to merge plus the reserve.

    Sizes the agents just measured replace the recorded ones (kept, as the latest report).
    """
    needs: dict[str, int] = {}
    for volume in volumes:
        if volume.id in measured:
            volume.actual_size = measured[volume.id]
        needs[volume.domain_id] = needs.get(volume.domain_id, 0) + volume.actual_size
    require_domains(tx, settings, needs, utcnow())


def _owned_volume_ids(db: Database, snapshot_id: str) -> list[str]:
    with db.transaction() as tx:
        return [v.id for v in tx.volumes.owned_by(snapshot_id) if not v.pending_delete]


def remove_snapshot(
    db: Database,
    settings: EngineSettings,
    cmd: RemoveSnapshot,
    agents: AgentClient | None = None,
) -> Job:
    """Admit a RemoveSnapshot; returns the job (PENDING, or SUCCEEDED if nothing to merge).

    ``agents`` measures the volumes' current allocation for the space check (SPEC §3.6 #7).
    """
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    validate_snapshot_id("snapshot_id", cmd.snapshot_id)
    cmd.envelope.validate()
    digest = request_hash(
        JobKind.REMOVE_SNAPSHOT, {"vm_id": cmd.vm_id, "snapshot_id": cmd.snapshot_id}
    )
    measured: dict[str, int] = {}
    if agents is not None:
        measured = measured_sizes(db, agents, settings, _owned_volume_ids(db, cmd.snapshot_id))
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.REMOVE_SNAPSHOT, digest)) is not None:
            return job
        now = utcnow()
        vm = locked_vm(tx, cmd.vm_id)
        snapshot = tx.snapshots.get(cmd.snapshot_id)
        if snapshot is None or snapshot.vm_id != vm.id:
            raise NotFound(
                "VM_SNAPSHOT_DOES_NOT_EXIST",
                f"snapshot {cmd.snapshot_id} of VM {vm.name} does not exist",
                vm_id=vm.id,
                snapshot_id=cmd.snapshot_id,
            )
        owned = [v for v in tx.volumes.owned_by(snapshot.id) if not v.pending_delete]
        disks = tx.disks.get_many((v.disk_id for v in owned), for_update=True)
        job = new_job(
            JobKind.REMOVE_SNAPSHOT,
            cmd.envelope,
            digest,
            now,
            vm_id=vm.id,
            targets=[snapshot.id],
            params={},
            deadline=settings.merge_deadline,
        )
        take_locks(
            tx,
            [vm_lock(vm.id), *(disk_lock(d) for d in disks)],
            job,
            vm=vm,
            disks=disks,
            now=now,
        )
        require_not_in_preview(tx, vm)
        require_snapshot_type(snapshot)
        heads = tx.volumes.heads(disks)
        illegal = [
            disks[d]
            for d in sorted(disks)
            if d in heads and heads[d].status == VolumeStatus.ILLEGAL
        ]
        if illegal:
            raise PreconditionFailed(
                "DISKS_ILLEGAL", "the heads of these disks are ILLEGAL", **disk_metadata(illegal)
            )
        require_space(tx, settings, owned, measured)
        job.result = {"snapshot_id": snapshot.id}
        if not owned:
            # Configuration only: nothing on storage. v1 hosts never save memory
            # (live_ops=false), so a memory reference has no state to clean up either.
            tx.snapshots.delete(snapshot)
            job.params = {"snapshot_id": snapshot.id, "units": [], "prior": {}}
            finish_db_only(job, now)
            tx.jobs.add(job)
            tx.locks.release_job(job.id)
            return job

        snapshot.status = SnapshotStatus.LOCKED
        units: list[dict[str, Any]] = []
        steps: list[JobStep] = []
        prior: dict[str, str] = {}
        for base in sorted(owned, key=lambda v: v.disk_id):
            unit, unit_steps = plan_unit(
                job,
                TreeModel(tx.volumes.of_disk(base.disk_id)),
                base,
                owner_id=snapshot.id,
                disk_alias=disks[base.disk_id].alias,
                first_seq=len(steps) + 1,
                host_id=pick_host(tx, settings, base.domain_id, now),
            )
            lock_volumes(tx, unit.locked, prior)
            units.append(unit.to_json())
            steps.extend(unit_steps)
        job.params = {"snapshot_id": snapshot.id, "units": units, "prior": prior}
        tx.jobs.add(job, steps)
        return job
