"""UpdateVm (SPEC §3.9): change the fields a field mask names. DB only; allowed in preview.

VM paths: name, description, cpu_count, memory_mb, custom_properties, nics, home_domain_id.
Per attached disk: alias (a disk attribute), interface and bootable (attachment attributes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    Envelope,
    disk_metadata,
    existing_job,
    finish_db_only,
    locked_vm,
    new_job,
    request_hash,
    take_locks,
)
from engine_svc.commands.create_vm import nics_json
from engine_svc.commands.validation import validate_alias, validate_vm_config
from engine_svc.db.models import Job
from engine_svc.db.uow import Database
from engine_svc.domain import (
    AttachmentState,
    DiskInterface,
    JobKind,
    VmConfig,
    is_uuid,
    utcnow,
    vm_lock,
)
from engine_svc.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    invalid_field,
    join_ids,
)

VM_PATHS = frozenset(
    {
        "name",
        "description",
        "cpu_count",
        "memory_mb",
        "custom_properties",
        "nics",
        "home_domain_id",
    }
)
DISK_PATHS = frozenset({"alias", "interface", "bootable"})
MAX_DISKS = 256


@dataclass(frozen=True)
class DiskUpdate:
    """Per-disk changes; only the attributes named in ``paths`` are applied."""

    disk_id: str
    paths: frozenset[str]
    alias: str = ""
    interface: DiskInterface | None = None
    bootable: bool = False


@dataclass(frozen=True)
class UpdateVm:
    """Input of UpdateVm; only the fields named in ``paths`` are taken from ``config``."""

    vm_id: str
    config: VmConfig
    paths: frozenset[str]
    disks: tuple[DiskUpdate, ...] = ()
    envelope: Envelope = field(default_factory=Envelope)


def _validate(cmd: UpdateVm) -> None:
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    unknown = sorted(cmd.paths - VM_PATHS)
    if unknown:
        raise invalid_field("update_mask", f"unknown paths {','.join(unknown)}")
    if not cmd.paths and not cmd.disks:
        raise invalid_field("update_mask", "names no field and no disk is updated")
    cfg, paths = cmd.config, cmd.paths
    # Fields outside the mask are replaced by valid placeholders: only masked ones are checked.
    validate_vm_config(
        VmConfig(
            name=cfg.name if "name" in paths else "placeholder",
            description=cfg.description if "description" in paths else "",
            cpu_count=cfg.cpu_count if "cpu_count" in paths else 1,
            memory_mb=cfg.memory_mb if "memory_mb" in paths else 64,
            custom_properties=cfg.custom_properties if "custom_properties" in paths else (),
            nics=cfg.nics if "nics" in paths else (),
            home_domain_id=cfg.home_domain_id if "home_domain_id" in paths else None,
        )
    )
    if len(cmd.disks) > MAX_DISKS:
        raise invalid_field("disks", f"at most {MAX_DISKS} entries")
    for d in cmd.disks:
        if not is_uuid(d.disk_id):
            raise invalid_field("disks.disk_id", f"{d.disk_id!r} is not a lowercase UUID")
        unknown = sorted(d.paths - DISK_PATHS)
        if unknown:
            raise invalid_field("disks.update_mask", f"unknown paths {','.join(unknown)}")
        if not d.paths:
            raise invalid_field("disks.update_mask", f"names no attribute of disk {d.disk_id}")
        if "alias" in d.paths:
            validate_alias("disks.alias", d.alias)
        if "interface" in d.paths and d.interface is None:
            raise invalid_field("disks.interface", "must be set")
    ids = [d.disk_id for d in cmd.disks]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise InvalidArgument(
            "DUPLICATE_DISK_IDS", "a disk is named twice", disk_ids=join_ids(dupes)
        )
    cmd.envelope.validate()


def _request_params(cmd: UpdateVm) -> dict[str, object]:
    cfg, paths = cmd.config, cmd.paths
    values: dict[str, object] = {
        "name": cfg.name,
        "description": cfg.description,
        "cpu_count": cfg.cpu_count,
        "memory_mb": cfg.memory_mb,
        "custom_properties": sorted(cfg.custom_properties),
        "nics": nics_json(cfg),
        "home_domain_id": cfg.home_domain_id,
    }
    return {
        "vm_id": cmd.vm_id,
        "config": {p: values[p] for p in sorted(paths)},
        "disks": sorted(
            (
                {
                    "disk_id": d.disk_id,
                    **{
                        p: {"alias": d.alias, "interface": d.interface, "bootable": d.bootable}[p]
                        for p in sorted(d.paths)
                    },
                }
                for d in cmd.disks
            ),
            key=lambda e: str(e["disk_id"]),
        ),
    }


def update_vm(db: Database, cmd: UpdateVm) -> Job:
    """Apply the masked changes; the returned job is already SUCCEEDED."""
    _validate(cmd)
    digest = request_hash(JobKind.UPDATE_VM, _request_params(cmd))
    cfg, paths = cmd.config, cmd.paths
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.UPDATE_VM, digest)) is not None:
            return job
        now = utcnow()
        vm = locked_vm(tx, cmd.vm_id)
        requested = [d.disk_id for d in cmd.disks]
        found = tx.disks.get_many(requested, for_update=True)
        missing = [d for d in requested if d not in found]
        if missing:
            raise NotFound("DISKS_NOT_EXIST", "disks do not exist", disk_ids=join_ids(missing))
        home = cfg.home_domain_id if "home_domain_id" in paths else None
        if home and tx.hosts.domain(home) is None:
            raise NotFound(
                "STORAGE_DOMAIN_NOT_EXIST",
                f"storage domain {home} does not exist",
                domain_id=home,
            )
        job = new_job(
            JobKind.UPDATE_VM,
            cmd.envelope,
            digest,
            now,
            vm_id=vm.id,
            targets=[vm.id],
            params={},
        )
        take_locks(tx, [vm_lock(vm.id)], job, vm=vm, disks=found, now=now)
        if "name" in paths and cfg.name != vm.name and tx.vms.by_name(cfg.name) is not None:
            raise AlreadyExists(
                "NAME_ALREADY_USED", f"a VM is already named {cfg.name}", name=cfg.name, entity="vm"
            )
        attachments = {a.disk_id: a for a in tx.disks.attachments_of_vm(vm.id)}
        foreign = [found[d] for d in requested if d not in attachments]
        if foreign:
            raise PreconditionFailed(
                "DISKS_NOT_ATTACHED_TO_VM",
                f"disks are not attached to VM {vm.name}",
                vm_name=vm.name,
                **disk_metadata(foreign),
            )
        for d in cmd.disks:
            attachment = attachments[d.disk_id]
            if "interface" in d.paths and d.interface is not None:
                attachment.interface = d.interface
            if "bootable" in d.paths:
                attachment.bootable = d.bootable
        bootable = [
            a for a in attachments.values() if a.bootable and a.state == AttachmentState.ATTACHED
        ]
        if len(bootable) > 1:
            disks = tx.disks.get_many(a.disk_id for a in bootable)
            raise PreconditionFailed(
                "DISK_BOOT_IN_USE",
                f"VM {vm.name} can have only one bootable disk",
                vm_name=vm.name,
                disk_aliases=join_ids(disks[a.disk_id].alias for a in bootable),
            )
        for d in cmd.disks:
            if "alias" in d.paths and found[d.disk_id].alias != d.alias:
                found[d.disk_id].alias = d.alias
                found[d.disk_id].version += 1
        if "name" in paths:
            vm.name = cfg.name
        if "description" in paths:
            vm.description = cfg.description
        if "cpu_count" in paths:
            vm.cpu_count = cfg.cpu_count
        if "memory_mb" in paths:
            vm.memory_mb = cfg.memory_mb
        if "custom_properties" in paths:
            vm.custom_properties = dict(cfg.custom_properties)
        if "nics" in paths:
            vm.nics = nics_json(cfg)
        if "home_domain_id" in paths:
            vm.home_domain_id = cfg.home_domain_id
        vm.version += 1
        job.result = {"vm_id": vm.id}
        finish_db_only(job, now)
        tx.jobs.add(job)
        tx.locks.release_job(job.id)
        return job
