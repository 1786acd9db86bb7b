"""RemoveVm (SPEC §3.9): delete a VM, its snapshots and its snapshot-able disks.

Admission finalizes, as RemoveDisk does: every snapshot-able disk attached to the VM or
whose history VM it is gets RemoveDisk semantics (garbage volumes, row deleted); shareable
and LUN disks are only detached; the snapshots (with their memory references) and the VM
row go. The job then deletes the volume files leaf-first (``saga/flows/remove_vm.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    Envelope,
    existing_job,
    finish_db_only,
    locked_vm,
    new_job,
    request_hash,
    require_down,
    require_not_in_preview,
)
from engine_svc.commands.remove_disk import deleted_outcome, lock_all, plan_cleanup, retire_disk
from engine_svc.config import EngineSettings
from engine_svc.db.models import Disk, Job, Volume
from engine_svc.db.uow import Database
from engine_svc.domain import DiskKind, JobKind, disk_lock, is_uuid, utcnow, vm_lock
from engine_svc.errors import invalid_field


@dataclass(frozen=True)
class RemoveVm:
    """Input of RemoveVm."""

    vm_id: str
    envelope: Envelope = field(default_factory=Envelope)


def remove_vm(db: Database, settings: EngineSettings, cmd: RemoveVm) -> Job:
    """Admit RemoveVm: finalize at once; the job (if any volume) deletes the files."""
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    cmd.envelope.validate()
    digest = request_hash(JobKind.REMOVE_VM, {"vm_id": cmd.vm_id})
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.REMOVE_VM, digest)) is not None:
            return job
        now = utcnow()
        vm = locked_vm(tx, cmd.vm_id)
        attachments = list(tx.disks.attachments_of_vm(vm.id))
        disk_ids = {a.disk_id for a in attachments} | tx.volumes.history_disk_ids(vm.id)
        disks = tx.disks.get_many(disk_ids, for_update=True)
        doomed = sorted(
            (d for d in disks.values() if d.kind == DiskKind.IMAGE and not d.shareable),
            key=lambda d: d.id,
        )
        # Under the invariants a doomed disk is attached to this VM or floating; should
        # one be attached elsewhere, that VM's lock is taken too.
        others = sorted(
            {
                a.vm_id
                for d in doomed
                for a in tx.disks.attachments_of_disk(d.id)
                if a.vm_id != vm.id
            }
        )
        other_vms = [v for v in (tx.vms.get(i, for_update=True) for i in others) if v]
        job = new_job(
            JobKind.REMOVE_VM,
            cmd.envelope,
            digest,
            now,
            vm_id=vm.id,
            targets=[vm.id],
            params={},
        )
        lock_all(
            tx,
            [vm_lock(vm.id), *(vm_lock(v.id) for v in other_vms), *map(disk_lock, disks)],
            job,
            vms=[vm, *other_vms],
            disks=disks,
            now=now,
        )
        require_not_in_preview(tx, vm)
        require_down(vm)

        retired: list[tuple[Disk, list[Volume]]] = [(d, retire_disk(tx, d)) for d in doomed]
        for attachment in tx.disks.attachments_of_vm(vm.id):
            tx.disks.delete_attachment(attachment)
        tx.session.flush()
        for snapshot in tx.snapshots.of_vm(vm.id):
            # v1 hosts never save memory (live_ops=false), so a memory reference has no
            # state on storage to clean up; it goes with its row.
            tx.snapshots.delete(snapshot)
        tx.session.flush()
        tx.vms.delete(vm)
        tx.session.flush()

        plan, steps = plan_cleanup(tx, settings, job, [r for r in retired if r[1]], now)
        job.params = {"cleanup": plan}
        job.result = {"vm_id": vm.id}
        job.outcomes = [deleted_outcome(d.id, d.alias) for d, volumes in retired if not volumes]
        if not steps:
            finish_db_only(job, now)
            tx.jobs.add(job)
            tx.locks.release_job(job.id)
            return job
        tx.jobs.add(job, steps)
        return job
