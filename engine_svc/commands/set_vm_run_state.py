"""SetVmRunState (SPEC §3.9): record that a VM runs on a host (UP) or not (DOWN). DB only."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    Envelope,
    existing_job,
    finish_db_only,
    locked_vm,
    new_job,
    request_hash,
    take_locks,
)
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, RunState, is_uuid, utcnow, vm_lock
from engine_svc.errors import NotFound, PreconditionFailed, invalid_field


@dataclass(frozen=True)
class SetVmRunState:
    """Input of SetVmRunState; ``host_id`` is required for UP and must be empty for DOWN."""

    vm_id: str
    run_state: RunState
    host_id: str = ""
    envelope: Envelope = field(default_factory=Envelope)


def set_vm_run_state(db: Database, settings: EngineSettings, cmd: SetVmRunState) -> Job:
    """Record the run state; the returned job is already SUCCEEDED."""
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    if cmd.run_state is RunState.UP and not is_uuid(cmd.host_id):
        raise invalid_field("host_id", "UP needs the id of the host the VM runs on")
    if cmd.run_state is RunState.DOWN and cmd.host_id:
        raise invalid_field("host_id", "must be empty for DOWN")
    cmd.envelope.validate()
    digest = request_hash(
        JobKind.SET_VM_RUN_STATE,
        {"vm_id": cmd.vm_id, "run_state": cmd.run_state, "host_id": cmd.host_id},
    )
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.SET_VM_RUN_STATE, digest)) is not None:
            return job
        now = utcnow()
        vm = locked_vm(tx, cmd.vm_id)
        host = None
        if cmd.run_state is RunState.UP:
            host = tx.hosts.get(cmd.host_id)
            if host is None:
                raise NotFound(
                    "HOST_NOT_EXIST", f"host {cmd.host_id} does not exist", host_id=cmd.host_id
                )
        job = new_job(
            JobKind.SET_VM_RUN_STATE,
            cmd.envelope,
            digest,
            now,
            vm_id=vm.id,
            targets=[vm.id],
            params={},
        )
        take_locks(tx, [vm_lock(vm.id)], job, vm=vm, disks={}, now=now)
        if host is not None and not host_is_up(host, now, settings.heartbeat_interval):
            raise PreconditionFailed(
                "HOST_NOT_UP", f"host {host.name} is DOWN", host_id=host.id, host_name=host.name
            )
        if cmd.run_state is RunState.UP and vm.run_state == RunState.DOWN:
            # Starting consumes ACTIVE's memory reference (SPEC §1.6). v1 hosts save no
            # memory states, so nothing on storage becomes garbage.
            tx.snapshots.active_of(vm.id).memory = None
        vm.run_state = cmd.run_state
        vm.host_id = host.id if host is not None else None
        vm.version += 1
        job.result = {"vm_id": vm.id}
        finish_db_only(job, now)
        tx.jobs.add(job)
        tx.locks.release_job(job.id)
        return job
