"""CreateVm (SPEC §3.9): a VM and its ACTIVE snapshot. DB only."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    Envelope,
    existing_job,
    finish_db_only,
    new_job,
    request_hash,
)
from engine_svc.commands.validation import validate_vm_config
from engine_svc.db.models import Job, Snapshot, Vm
from engine_svc.db.uow import Database
from engine_svc.domain import (
    JobKind,
    RunState,
    SnapshotStatus,
    SnapshotType,
    VmConfig,
    new_id,
    utcnow,
)
from engine_svc.errors import AlreadyExists, NotFound

ACTIVE_DESCRIPTION = "Active VM"


@dataclass(frozen=True)
class CreateVm:
    """Input of CreateVm."""

    config: VmConfig
    envelope: Envelope = field(default_factory=Envelope)


def nics_json(config: VmConfig) -> list[dict[str, str]]:
    """NICs as stored in the VM row and in configuration documents."""
    return [{"name": n.name, "mac": n.mac, "network": n.network} for n in config.nics]


def create_vm(db: Database, cmd: CreateVm) -> Job:
    """Create the VM; the returned job is already SUCCEEDED (result.vm_id)."""
    validate_vm_config(cmd.config)
    cmd.envelope.validate()
    cfg = cmd.config
    digest = request_hash(
        JobKind.CREATE_VM,
        {
            "name": cfg.name,
            "description": cfg.description,
            "cpu_count": cfg.cpu_count,
            "memory_mb": cfg.memory_mb,
            "custom_properties": sorted(cfg.custom_properties),
            "nics": nics_json(cfg),
            "home_domain_id": cfg.home_domain_id,
        },
    )
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.CREATE_VM, digest)) is not None:
            return job
        if tx.vms.by_name(cfg.name) is not None:
            raise AlreadyExists(
                "NAME_ALREADY_USED", f"a VM is already named {cfg.name}", name=cfg.name, entity="vm"
            )
        if cfg.home_domain_id and tx.hosts.domain(cfg.home_domain_id) is None:
            raise NotFound(
                "STORAGE_DOMAIN_NOT_EXIST",
                f"storage domain {cfg.home_domain_id} does not exist",
                domain_id=cfg.home_domain_id,
            )
        now = utcnow()
        vm = Vm(
            id=new_id(),
            name=cfg.name,
            description=cfg.description,
            cpu_count=cfg.cpu_count,
            memory_mb=cfg.memory_mb,
            custom_properties=dict(cfg.custom_properties),
            nics=nics_json(cfg),
            home_domain_id=cfg.home_domain_id,
            run_state=RunState.DOWN,
            host_id=None,
            created_at=now,
            version=1,
        )
        tx.vms.add(vm)
        tx.session.flush()
        tx.snapshots.add(
            Snapshot(
                id=new_id(),
                vm_id=vm.id,
                type=SnapshotType.ACTIVE,
                status=SnapshotStatus.OK,
                description=ACTIVE_DESCRIPTION,
                created_at=now,
                config=None,
                memory=None,
                preview_plan=None,
            )
        )
        job = new_job(
            JobKind.CREATE_VM, cmd.envelope, digest, now, vm_id=vm.id, targets=[vm.id], params={}
        )
        job.result = {"vm_id": vm.id}
        finish_db_only(job, now)
        tx.jobs.add(job)
        return job
