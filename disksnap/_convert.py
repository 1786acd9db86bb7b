"""Proto ↔ SDK conversion: the only module that reads or builds engine messages' fields.

``*_from_proto`` turn responses into the frozen dataclasses of ``disksnap._types``;
``*_to_proto`` build request parts from SDK inputs. Enum values map by name: the SDK member
``X`` is the proto value ``<PREFIX>_X``; an unset (0) value becomes ``None`` where the type
allows it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from disksnap._types import (
    Attachment,
    AttachmentState,
    ConfigDisk,
    Disk,
    DiskFormat,
    DiskInterface,
    DiskKind,
    DiskOutcome,
    DiskOutcomeKind,
    DiskSelection,
    DiskStatus,
    DomainStatus,
    ErrorCause,
    Host,
    HostStatus,
    Job,
    JobError,
    JobKind,
    JobResult,
    JobState,
    JobStep,
    MemoryOutcome,
    MemoryRef,
    Nic,
    PreviewCategory,
    PreviewPlan,
    PreviewPlanEntry,
    RunState,
    Snapshot,
    SnapshotConfig,
    SnapshotDetail,
    SnapshotDisk,
    SnapshotStatus,
    SnapshotType,
    StepKind,
    StepState,
    StorageDomain,
    Violation,
    Vm,
    VmConfig,
    VolumeNode,
    VolumeOwner,
    VolumeStatus,
    VolumeTree,
)
from disksnap.engine.v1 import (
    admin_pb2,
    common_pb2,
    inventory_pb2,
    snapshots_pb2,
)

E = TypeVar("E", bound=enum.StrEnum)

_PREFIXES: dict[type[enum.StrEnum], tuple[Any, str]] = {
    HostStatus: (inventory_pb2.HostStatus, "HOST_STATUS_"),
    DomainStatus: (inventory_pb2.DomainStatus, "DOMAIN_STATUS_"),
    RunState: (inventory_pb2.RunState, "RUN_STATE_"),
    DiskKind: (inventory_pb2.DiskKind, "DISK_KIND_"),
    DiskFormat: (inventory_pb2.DiskFormat, "DISK_FORMAT_"),
    DiskInterface: (inventory_pb2.DiskInterface, "DISK_INTERFACE_"),
    AttachmentState: (inventory_pb2.AttachmentState, "ATTACHMENT_STATE_"),
    DiskStatus: (inventory_pb2.DiskStatus, "DISK_STATUS_"),
    SnapshotType: (snapshots_pb2.SnapshotType, "SNAPSHOT_TYPE_"),
    SnapshotStatus: (snapshots_pb2.SnapshotStatus, "SNAPSHOT_STATUS_"),
    VolumeStatus: (snapshots_pb2.VolumeStatus, "VOLUME_STATUS_"),
    PreviewCategory: (snapshots_pb2.PreviewCategory, "PREVIEW_CATEGORY_"),
    JobKind: (common_pb2.JobKind, "JOB_KIND_"),
    JobState: (common_pb2.JobState, "JOB_STATE_"),
    StepKind: (common_pb2.StepKind, "STEP_KIND_"),
    StepState: (common_pb2.StepState, "STEP_STATE_"),
    DiskOutcomeKind: (common_pb2.DiskOutcomeKind, "DISK_OUTCOME_KIND_"),
    MemoryOutcome: (common_pb2.MemoryOutcome, "MEMORY_OUTCOME_"),
}


class ProtocolError(ValueError):
    """The engine sent a value this SDK cannot represent (a newer or broken server)."""


def enum_from_proto(cls: type[E], value: int) -> E:
    """The SDK member for a proto enum number; 0 or an unknown number is a ProtocolError."""
    proto_enum, prefix = _PREFIXES[cls]
    try:
        name = str(proto_enum.Name(value))
        return cls(name.removeprefix(prefix))
    except ValueError as exc:
        raise ProtocolError(f"unexpected {cls.__name__} value {value}") from exc


def optional_enum_from_proto(cls: type[E], value: int) -> E | None:
    """Like ``enum_from_proto`` but 0 (unset) is ``None``."""
    return None if value == 0 else enum_from_proto(cls, value)


def enum_to_proto(member: enum.StrEnum) -> Any:
    """The proto enum number of an SDK member (typed ``Any``: each proto enum is its own type)."""
    proto_enum, prefix = _PREFIXES[type(member)]
    return int(proto_enum.Value(prefix + member.value))


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _optional_time(msg: Any, field: str) -> datetime | None:
    return _time(getattr(msg, field)) if msg.HasField(field) else None


def _opt(value: str) -> str | None:
    return value or None


def _map(values: Mapping[str, str]) -> dict[str, str]:
    return dict(values)


# -- inventory ------------------------------------------------------------------------------


def host_from_proto(h: inventory_pb2.Host) -> Host:
    """A Host."""
    return Host(
        id=h.id,
        name=h.name,
        address=h.address,
        status=enum_from_proto(HostStatus, h.status),
        live_ops=h.live_ops,
        agent_version=h.agent_version,
        qemu_img_version=h.qemu_img_version,
        domain_ids=tuple(h.domain_ids),
        last_heartbeat_at=_optional_time(h, "last_heartbeat_at"),
    )


def domain_from_proto(d: inventory_pb2.StorageDomain) -> StorageDomain:
    """A StorageDomain."""
    return StorageDomain(
        id=d.id,
        name=d.name,
        status=enum_from_proto(DomainStatus, d.status),
        free_bytes=d.free_bytes,
        total_bytes=d.total_bytes,
        host_ids=tuple(d.host_ids),
    )


def vm_config_from_proto(c: inventory_pb2.VmConfig) -> VmConfig:
    """A VmConfig."""
    return VmConfig(
        name=c.name,
        description=c.description,
        cpu_count=c.cpu_count,
        memory_mb=c.memory_mb,
        custom_properties=_map(c.custom_properties),
        nics=tuple(Nic(name=n.name, mac=n.mac, network=n.network) for n in c.nics),
        home_domain_id=_opt(c.home_domain_id),
    )


def vm_config_to_proto(
    *,
    name: str = "",
    description: str = "",
    cpu_count: int = 0,
    memory_mb: int = 0,
    custom_properties: Mapping[str, str] | None = None,
    nics: Iterable[Nic] = (),
    home_domain_id: str | None = None,
) -> inventory_pb2.VmConfig:
    """A VmConfig message from SDK values."""
    return inventory_pb2.VmConfig(
        name=name,
        description=description,
        cpu_count=cpu_count,
        memory_mb=memory_mb,
        custom_properties=dict(custom_properties or {}),
        nics=[inventory_pb2.Nic(name=n.name, mac=n.mac, network=n.network) for n in nics],
        home_domain_id=home_domain_id or "",
    )


def disk_from_proto(d: inventory_pb2.Disk) -> Disk:
    """A Disk."""
    return Disk(
        id=d.id,
        alias=d.alias,
        description=d.description,
        kind=enum_from_proto(DiskKind, d.kind),
        shareable=d.shareable,
        domain_id=_opt(d.domain_id),
        virtual_size=d.virtual_size,
        base_format=optional_enum_from_proto(DiskFormat, d.base_format),
        lun_id=_opt(d.lun_id),
        created_at=_time(d.created_at),
        status=enum_from_proto(DiskStatus, d.status),
        attachments=tuple(
            Attachment(
                vm_id=a.vm_id,
                disk_id=a.disk_id,
                interface=enum_from_proto(DiskInterface, a.interface),
                bootable=a.bootable,
                state=enum_from_proto(AttachmentState, a.state),
            )
            for a in d.attachments
        ),
        head_volume_id=_opt(d.head_volume_id),
        history_vm_id=_opt(d.history_vm_id),
    )


def vm_from_proto(v: inventory_pb2.Vm) -> Vm:
    """A Vm with its disks."""
    return Vm(
        id=v.id,
        config=vm_config_from_proto(v.config),
        run_state=enum_from_proto(RunState, v.run_state),
        host_id=_opt(v.host_id),
        created_at=_time(v.created_at),
        active_snapshot_id=v.active_snapshot_id,
        in_preview=v.in_preview,
        locked=v.locked,
        disks=tuple(disk_from_proto(d) for d in v.disks),
    )


# -- snapshots ------------------------------------------------------------------------------


def snapshot_from_proto(s: snapshots_pb2.Snapshot) -> Snapshot:
    """A Snapshot summary."""
    return Snapshot(
        id=s.id,
        vm_id=s.vm_id,
        type=enum_from_proto(SnapshotType, s.type),
        status=enum_from_proto(SnapshotStatus, s.status),
        description=s.description,
        created_at=_time(s.created_at),
        has_memory=s.has_memory,
        config_available=s.config_available,
        disks=tuple(
            SnapshotDisk(
                disk_id=d.disk_id,
                volume_id=d.volume_id,
                alias=d.alias,
                status=enum_from_proto(VolumeStatus, d.status),
            )
            for d in s.disks
        ),
    )


def snapshot_detail_from_proto(r: snapshots_pb2.GetSnapshotResponse) -> SnapshotDetail:
    """GetSnapshot's answer."""
    config = None
    if r.HasField("config"):
        c = r.config
        config = SnapshotConfig(
            schema_version=c.schema_version,
            vm=vm_config_from_proto(c.vm),
            disks=tuple(
                ConfigDisk(
                    disk_id=d.disk_id,
                    volume_id=d.volume_id,
                    alias=d.alias,
                    interface=enum_from_proto(DiskInterface, d.interface),
                    bootable=d.bootable,
                    virtual_size=d.virtual_size,
                    format=enum_from_proto(DiskFormat, d.format),
                )
                for d in c.disks
            ),
            captured_at=_time(c.captured_at),
        )
    memory = None
    if r.HasField("memory"):
        memory = MemoryRef(
            memory_id=r.memory.memory_id,
            domain_id=r.memory.domain_id,
            size_bytes=r.memory.size_bytes,
        )
    plan = None
    if r.HasField("preview_plan"):
        p = r.preview_plan
        plan = PreviewPlan(
            config_snapshot_id=_opt(p.config_snapshot_id),
            restore_memory=p.restore_memory,
            entries=tuple(
                PreviewPlanEntry(
                    disk_id=e.disk_id,
                    category=enum_from_proto(PreviewCategory, e.category),
                    chosen_volume_id=_opt(e.chosen_volume_id),
                    source_snapshot_id=_opt(e.source_snapshot_id),
                    overlay_volume_id=_opt(e.overlay_volume_id),
                    pre_preview_head_id=_opt(e.pre_preview_head_id),
                    reattached=e.reattached,
                )
                for e in p.entries
            ),
        )
    return SnapshotDetail(
        snapshot=snapshot_from_proto(r.snapshot), config=config, memory=memory, preview_plan=plan
    )


def volume_tree_from_proto(r: snapshots_pb2.GetDiskVolumeTreeResponse) -> VolumeTree:
    """GetDiskVolumeTree's answer."""
    volumes = []
    for v in r.volumes:
        owner = None
        if v.HasField("owner"):
            owner = VolumeOwner(
                snapshot_id=v.owner.snapshot_id,
                type=enum_from_proto(SnapshotType, v.owner.type),
                description=v.owner.description,
                vm_id=v.owner.vm_id,
            )
        volumes.append(
            VolumeNode(
                id=v.id,
                parent_id=_opt(v.parent_id),
                owner=owner,
                active=v.active,
                status=enum_from_proto(VolumeStatus, v.status),
                format=enum_from_proto(DiskFormat, v.format),
                virtual_size=v.virtual_size,
                actual_size=v.actual_size,
                created_at=_time(v.created_at),
                pending_delete=v.pending_delete,
            )
        )
    return VolumeTree(
        disk=disk_from_proto(r.disk),
        volumes=tuple(volumes),
        root_id=_opt(r.root_id),
        head_id=_opt(r.head_id),
    )


def disk_selection_to_proto(s: DiskSelection) -> snapshots_pb2.DiskSelection:
    """A DiskSelection message (exactly one source set)."""
    if s.snapshot_id is not None:
        return snapshots_pb2.DiskSelection(disk_id=s.disk_id, snapshot_id=s.snapshot_id)
    return snapshots_pb2.DiskSelection(disk_id=s.disk_id, volume_id=s.volume_id or "")


# -- jobs -----------------------------------------------------------------------------------


def _job_error(msg: Any, present: bool) -> JobError | None:
    if not present:
        return None
    cause = None
    if msg.HasField("cause"):
        cause = ErrorCause(
            reason=msg.cause.reason,
            domain=msg.cause.domain,
            message=msg.cause.message,
            metadata=_map(msg.cause.metadata),
        )
    return JobError(
        reason=msg.reason, message=msg.message, metadata=_map(msg.metadata), cause=cause
    )


def job_from_proto(j: common_pb2.Job) -> Job:
    """A Job with steps and outcomes."""
    return Job(
        id=j.id,
        kind=enum_from_proto(JobKind, j.kind),
        state=enum_from_proto(JobState, j.state),
        vm_id=_opt(j.vm_id),
        target_ids=tuple(j.target_ids),
        request_id=_opt(j.request_id),
        correlation_id=_opt(j.correlation_id),
        created_at=_time(j.created_at),
        started_at=_optional_time(j, "started_at"),
        ended_at=_optional_time(j, "ended_at"),
        progress=j.progress,
        steps=tuple(
            JobStep(
                seq=s.seq,
                kind=enum_from_proto(StepKind, s.kind),
                disk_id=_opt(s.disk_id),
                volume_ids=tuple(s.volume_ids),
                host_id=_opt(s.host_id),
                op_id=s.op_id,
                state=enum_from_proto(StepState, s.state),
                attempts=s.attempts,
                progress=s.progress,
                error=_job_error(s.error, s.HasField("error")),
                compensates=s.compensates,
                started_at=_optional_time(s, "started_at"),
                ended_at=_optional_time(s, "ended_at"),
            )
            for s in j.steps
        ),
        outcomes=tuple(
            DiskOutcome(
                disk_id=o.disk_id,
                disk_alias=o.disk_alias,
                volume_ids=tuple(o.volume_ids),
                outcome=enum_from_proto(DiskOutcomeKind, o.outcome),
                reason=o.reason,
                message=o.message,
                metadata=_map(o.metadata),
            )
            for o in j.outcomes
        ),
        memory_outcome=optional_enum_from_proto(MemoryOutcome, j.memory_outcome),
        result=JobResult(
            snapshot_id=_opt(j.result.snapshot_id),
            vm_id=_opt(j.result.vm_id),
            disk_id=_opt(j.result.disk_id),
            domain_id=_opt(j.result.domain_id),
        ),
        error=_job_error(j.error, j.HasField("error")),
    )


def violation_from_proto(v: admin_pb2.Violation) -> Violation:
    """A consistency Violation."""
    return Violation(invariant=v.invariant, entity_id=v.entity_id, detail=v.detail)
