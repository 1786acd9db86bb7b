"""Proto conversion for the engine API: the only module that builds engine messages.

Servicers call ``*_to_proto`` on read models and ``*_from_proto`` on requests; commands and
flows never import generated code.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from disksnap.engine.v1 import common_pb2, inventory_pb2, snapshots_pb2
from engine_svc.commands.admission import Envelope
from engine_svc.commands.preview_snapshot import DiskSelection, PreviewSnapshot
from engine_svc.commands.update_vm import DiskUpdate
from engine_svc.domain import DiskInterface, DiskKind, Nic, RunState, VmConfig, VolumeFormat
from engine_svc.errors import invalid_field
from engine_svc.queries import (
    DiskView,
    DomainView,
    HostView,
    JobView,
    SnapshotView,
    VmView,
    VolumeTreeView,
)
from engine_svc.snapshot_config import parse


def ts(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None."""
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def _enum(enum_type: Any, prefix: str, name: str | None) -> Any:
    if not name:
        return 0
    return int(enum_type.Value(f"{prefix}_{name}"))


def _enum_name(enum_type: Any, prefix: str, value: int, field: str) -> str:
    if value == 0:
        raise invalid_field(field, "must be set")
    try:
        return str(enum_type.Name(value)).removeprefix(prefix + "_")
    except ValueError as exc:
        raise invalid_field(field, f"unknown value {value}") from exc


def envelope_from_proto(env: common_pb2.RequestEnvelope) -> Envelope:
    """The request envelope."""
    return Envelope(env.request_id, env.correlation_id, env.wait_timeout_s)


def vm_config_from_proto(cfg: inventory_pb2.VmConfig) -> VmConfig:
    """A VM configuration from its message."""
    return VmConfig(
        name=cfg.name,
        description=cfg.description,
        cpu_count=cfg.cpu_count,
        memory_mb=cfg.memory_mb,
        custom_properties=tuple(sorted(cfg.custom_properties.items())),
        nics=tuple(Nic(n.name, n.mac, n.network) for n in cfg.nics),
        home_domain_id=cfg.home_domain_id or None,
    )


def disk_kind_from_proto(value: int) -> DiskKind:
    """IMAGE (the default when unset) or LUN."""
    if value == 0:
        return DiskKind.IMAGE
    return DiskKind(_enum_name(inventory_pb2.DiskKind, "DISK_KIND", value, "kind"))


def format_from_proto(value: int) -> VolumeFormat:
    """COW (the default when unset) or RAW."""
    if value == 0:
        return VolumeFormat.COW
    return VolumeFormat(_enum_name(inventory_pb2.DiskFormat, "DISK_FORMAT", value, "format"))


def interface_from_proto(value: int) -> DiskInterface:
    """VIRTIO (the default when unset) or another interface."""
    if value == 0:
        return DiskInterface.VIRTIO
    return DiskInterface(
        _enum_name(inventory_pb2.DiskInterface, "DISK_INTERFACE", value, "interface")
    )


def job_to_proto(view: JobView) -> common_pb2.Job:
    """A Job message with steps and outcomes."""
    job = view.job
    out = common_pb2.Job(
        id=job.id,
        kind=_enum(common_pb2.JobKind, "JOB_KIND", job.kind),
        state=_enum(common_pb2.JobState, "JOB_STATE", job.state),
        vm_id=job.vm_id or "",
        target_ids=list(job.target_ids),
        request_id=job.request_id or "",
        correlation_id=job.correlation_id,
        created_at=ts(job.created_at),
        started_at=ts(job.started_at),
        ended_at=ts(job.ended_at),
        progress=job.progress,
        memory_outcome=_enum(common_pb2.MemoryOutcome, "MEMORY_OUTCOME", job.memory_outcome),
        result=common_pb2.JobResult(**{k: v for k, v in job.result.items() if v}),
    )
    if job.error:
        out.error.CopyFrom(_job_error(job.error))
    for step in view.steps:
        s = out.steps.add(
            seq=step.seq,
            kind=_enum(common_pb2.StepKind, "STEP_KIND", step.kind),
            disk_id=step.disk_id or "",
            volume_ids=list(step.volume_ids),
            host_id=step.host_id or "",
            op_id=step.op_id,
            state=_enum(common_pb2.StepState, "STEP_STATE", step.state),
            attempts=step.attempts,
            progress=step.progress,
            compensates=step.compensates or 0,
            started_at=ts(step.started_at),
            ended_at=ts(step.ended_at),
        )
        if step.error:
            s.error.CopyFrom(_job_error(step.error))
    for o in job.outcomes:
        out.outcomes.add(
            disk_id=o["disk_id"],
            disk_alias=o.get("disk_alias", ""),
            volume_ids=list(o.get("volume_ids", [])),
            outcome=_enum(common_pb2.DiskOutcomeKind, "DISK_OUTCOME_KIND", o["outcome"]),
            reason=o.get("reason", ""),
            message=o.get("message", ""),
            metadata={k: str(v) for k, v in o.get("metadata", {}).items()},
        )
    return out


def _job_error(error: dict[str, Any]) -> common_pb2.JobError:
    out = common_pb2.JobError(
        reason=error.get("reason", ""),
        message=error.get("message", ""),
        metadata={k: str(v) for k, v in (error.get("metadata") or {}).items()},
    )
    cause = error.get("cause")
    if cause:
        out.cause.CopyFrom(
            common_pb2.ErrorCause(
                reason=cause.get("reason", ""),
                domain=cause.get("domain", ""),
                message=cause.get("message", ""),
                metadata={k: str(v) for k, v in (cause.get("metadata") or {}).items()},
            )
        )
    return out


def host_to_proto(view: HostView) -> inventory_pb2.Host:
    """A Host message."""
    h = view.host
    return inventory_pb2.Host(
        id=h.id,
        name=h.name,
        address=h.address,
        status=inventory_pb2.HOST_STATUS_UP if view.up else inventory_pb2.HOST_STATUS_DOWN,
        live_ops=h.live_ops,
        agent_version=h.agent_version,
        qemu_img_version=h.qemu_img_version,
        domain_ids=view.domain_ids,
        last_heartbeat_at=ts(h.last_heartbeat_at),
    )


def domain_to_proto(view: DomainView) -> inventory_pb2.StorageDomain:
    """A StorageDomain message."""
    return inventory_pb2.StorageDomain(
        id=view.domain.id,
        name=view.domain.name,
        status=inventory_pb2.DOMAIN_STATUS_ACTIVE
        if view.active
        else inventory_pb2.DOMAIN_STATUS_INACTIVE,
        free_bytes=view.free_bytes,
        total_bytes=view.total_bytes,
        host_ids=view.host_ids,
    )


def disk_to_proto(view: DiskView) -> inventory_pb2.Disk:
    """A Disk message."""
    d = view.disk
    return inventory_pb2.Disk(
        id=d.id,
        alias=d.alias,
        description=d.description,
        kind=_enum(inventory_pb2.DiskKind, "DISK_KIND", d.kind),
        shareable=d.shareable,
        domain_id=d.domain_id or "",
        virtual_size=d.virtual_size or 0,
        base_format=_enum(inventory_pb2.DiskFormat, "DISK_FORMAT", d.base_format),
        lun_id=d.lun_id or "",
        created_at=ts(d.created_at),
        status=_enum(inventory_pb2.DiskStatus, "DISK_STATUS", view.status),
        attachments=[
            inventory_pb2.Attachment(
                vm_id=a.vm_id,
                disk_id=a.disk_id,
                interface=_enum(inventory_pb2.DiskInterface, "DISK_INTERFACE", a.interface),
                bootable=a.bootable,
                state=_enum(inventory_pb2.AttachmentState, "ATTACHMENT_STATE", a.state),
            )
            for a in view.attachments
        ],
        head_volume_id=view.head_id,
        history_vm_id=view.history_vm_id,
    )


def _vm_config(vm: dict[str, Any], home_domain_id: str = "") -> inventory_pb2.VmConfig:
    return inventory_pb2.VmConfig(
        name=vm["name"],
        description=vm["description"],
        cpu_count=vm["cpu_count"],
        memory_mb=vm["memory_mb"],
        custom_properties=vm["custom_properties"],
        nics=[inventory_pb2.Nic(**n) for n in vm["nics"]],
        home_domain_id=home_domain_id,
    )


def vm_to_proto(view: VmView) -> inventory_pb2.Vm:
    """A Vm message with its disks."""
    vm = view.vm
    return inventory_pb2.Vm(
        id=vm.id,
        config=_vm_config(
            {
                "name": vm.name,
                "description": vm.description,
                "cpu_count": vm.cpu_count,
                "memory_mb": vm.memory_mb,
                "custom_properties": vm.custom_properties,
                "nics": vm.nics,
            },
            vm.home_domain_id or "",
        ),
        run_state=_enum(inventory_pb2.RunState, "RUN_STATE", vm.run_state),
        host_id=vm.host_id or "",
        created_at=ts(vm.created_at),
        active_snapshot_id=view.active_snapshot_id,
        in_preview=view.in_preview,
        locked=view.locked,
        disks=[disk_to_proto(d) for d in view.disks],
    )


def snapshot_to_proto(view: SnapshotView) -> snapshots_pb2.Snapshot:
    """A Snapshot summary message."""
    s = view.snapshot
    return snapshots_pb2.Snapshot(
        id=s.id,
        vm_id=s.vm_id,
        type=_enum(snapshots_pb2.SnapshotType, "SNAPSHOT_TYPE", s.type),
        status=_enum(snapshots_pb2.SnapshotStatus, "SNAPSHOT_STATUS", s.status),
        description=s.description,
        created_at=ts(s.created_at),
        has_memory=s.memory is not None,
        config_available=s.config is not None,
        disks=[
            snapshots_pb2.SnapshotDisk(
                disk_id=d.disk_id,
                volume_id=d.volume_id,
                alias=d.alias,
                status=_enum(snapshots_pb2.VolumeStatus, "VOLUME_STATUS", d.status),
            )
            for d in view.disks
        ],
    )


def snapshot_config_to_proto(text: str) -> snapshots_pb2.SnapshotConfig:
    """A stored configuration document as a message."""
    doc = parse(text)
    captured = Timestamp()
    captured.FromJsonString(doc["captured_at"].replace("+00:00", "Z"))
    return snapshots_pb2.SnapshotConfig(
        schema_version=doc["schema_version"],
        vm=_vm_config(doc["vm"]),
        disks=[
            snapshots_pb2.ConfigDisk(
                disk_id=d["disk_id"],
                volume_id=d["volume_id"],
                alias=d["alias"],
                interface=_enum(inventory_pb2.DiskInterface, "DISK_INTERFACE", d["interface"]),
                bootable=d["bootable"],
                virtual_size=d["virtual_size"],
                format=_enum(inventory_pb2.DiskFormat, "DISK_FORMAT", d["format"]),
            )
            for d in doc["disks"]
        ],
        captured_at=captured,
    )


def active_config_to_proto(view: VmView) -> snapshots_pb2.SnapshotConfig:
    """ACTIVE's configuration, rendered live from the VM (SPEC §3.8)."""
    vm = vm_to_proto(view)
    out = snapshots_pb2.SnapshotConfig(
        schema_version=1, vm=vm.config, captured_at=ts(view.vm.created_at)
    )
    for disk in vm.disks:
        attachment = next(a for a in disk.attachments if a.vm_id == view.vm.id)
        if disk.kind != inventory_pb2.DISK_KIND_IMAGE or disk.shareable:
            continue
        if attachment.state != inventory_pb2.ATTACHMENT_STATE_ATTACHED:
            continue
        out.disks.add(
            disk_id=disk.id,
            volume_id=disk.head_volume_id,
            alias=disk.alias,
            interface=attachment.interface,
            bootable=attachment.bootable,
            virtual_size=disk.virtual_size,
            format=disk.base_format,
        )
    return out


def volume_tree_to_proto(view: VolumeTreeView) -> snapshots_pb2.GetDiskVolumeTreeResponse:
    """GetDiskVolumeTree's response."""
    out = snapshots_pb2.GetDiskVolumeTreeResponse(
        disk=disk_to_proto(view.disk), root_id=view.root_id, head_id=view.head_id
    )
    for v in view.volumes:
        node = out.volumes.add(
            id=v.id,
            parent_id=v.parent_id or "",
            active=v.active,
            status=_enum(snapshots_pb2.VolumeStatus, "VOLUME_STATUS", v.status),
            format=_enum(inventory_pb2.DiskFormat, "DISK_FORMAT", v.format),
            virtual_size=v.virtual_size,
            actual_size=v.actual_size,
            created_at=ts(v.created_at),
            pending_delete=v.pending_delete,
        )
        owner = view.owners.get(v.owner_snapshot_id or "")
        if owner is not None:
            node.owner.CopyFrom(
                snapshots_pb2.VolumeOwner(
                    snapshot_id=owner.id,
                    type=_enum(snapshots_pb2.SnapshotType, "SNAPSHOT_TYPE", owner.type),
                    description=owner.description,
                    vm_id=owner.vm_id,
                )
            )
    return out


def mask_paths(mask: field_mask_pb2.FieldMask) -> frozenset[str]:
    """The paths of a field mask."""
    return frozenset(mask.paths)


def run_state_from_proto(value: int) -> RunState:
    """UP or DOWN (INVALID_FIELD when unset)."""
    return RunState(_enum_name(inventory_pb2.RunState, "RUN_STATE", value, "run_state"))


def disk_update_from_proto(attrs: inventory_pb2.DiskAttributes) -> DiskUpdate:
    """UpdateVm's per-disk changes; an unset interface in the mask is left for validation."""
    paths = mask_paths(attrs.update_mask)
    interface = None
    if "interface" in paths and attrs.interface:
        interface = DiskInterface(
            _enum_name(
                inventory_pb2.DiskInterface, "DISK_INTERFACE", attrs.interface, "disks.interface"
            )
        )
    return DiskUpdate(
        disk_id=attrs.disk_id,
        paths=paths,
        alias=attrs.alias,
        interface=interface,
        bootable=attrs.bootable,
    )


def preview_from_proto(
    vm_id: str,
    config_snapshot_id: str,
    restore_memory: bool,
    disks: Iterable[snapshots_pb2.DiskSelection],
    exclude_disk_ids: Iterable[str],
    envelope: common_pb2.RequestEnvelope,
) -> PreviewSnapshot:
    """A preview request (also the preview half of a restore)."""
    return PreviewSnapshot(
        vm_id=vm_id,
        config_snapshot_id=config_snapshot_id,
        restore_memory=restore_memory,
        disks=tuple(
            DiskSelection(
                s.disk_id,
                snapshot_id=s.snapshot_id if s.WhichOneof("source") == "snapshot_id" else "",
                volume_id=s.volume_id if s.WhichOneof("source") == "volume_id" else "",
            )
            for s in disks
        ),
        exclude_disk_ids=tuple(exclude_disk_ids),
        envelope=envelope_from_proto(envelope),
    )


def preview_plan_to_proto(plan: dict[str, Any]) -> snapshots_pb2.PreviewPlan:
    """A PREVIEW snapshot's stored plan."""
    return snapshots_pb2.PreviewPlan(
        config_snapshot_id=plan.get("config_snapshot_id", ""),
        restore_memory=plan.get("restore_memory", False),
        entries=[
            snapshots_pb2.PreviewPlanEntry(
                disk_id=e["disk_id"],
                category=_enum(snapshots_pb2.PreviewCategory, "PREVIEW_CATEGORY", e["category"]),
                chosen_volume_id=e["chosen_volume_id"],
                source_snapshot_id=e["source_snapshot_id"],
                overlay_volume_id=e["overlay_volume_id"],
                pre_preview_head_id=e["pre_preview_head_id"],
                reattached=e["reattached"],
            )
            for e in plan.get("entries", [])
        ],
    )
