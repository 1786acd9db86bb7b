"""The SDK's value types: enums and frozen dataclasses, free of generated protobuf code.

Every object the :class:`disksnap.Client` returns is one of these. They are plain, immutable
data; ``disksnap._convert`` is the only module that builds them from (or turns inputs into)
protobuf messages. Enum members are ``str`` subclasses whose value is the SPEC name
(``JobState.SUCCEEDED == "SUCCEEDED"``), so they print and serialise as the reason codes and
states documented in SPEC.md.

Conventions: ids are lowercase UUID strings; sizes are bytes; times are timezone-aware UTC
``datetime`` objects; an optional id the engine leaves empty is ``None``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# -- enums ----------------------------------------------------------------------------------


class HostStatus(enum.StrEnum):
    """UP iff the host's last heartbeat is recent (SPEC §1.7)."""

    UP = "UP"
    DOWN = "DOWN"


class DomainStatus(enum.StrEnum):
    """ACTIVE iff at least one UP host serves the domain."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class RunState(enum.StrEnum):
    """Whether the VM is recorded as running on a host."""

    DOWN = "DOWN"
    UP = "UP"


class DiskKind(enum.StrEnum):
    """IMAGE disks have volumes; LUN disks have none."""

    IMAGE = "IMAGE"
    LUN = "LUN"


class DiskFormat(enum.StrEnum):
    """Volume format: RAW, or COW (qcow2)."""

    RAW = "RAW"
    COW = "COW"


class DiskInterface(enum.StrEnum):
    """How a disk is attached to a VM."""

    VIRTIO = "VIRTIO"
    VIRTIO_SCSI = "VIRTIO_SCSI"
    SATA = "SATA"
    IDE = "IDE"


class AttachmentState(enum.StrEnum):
    """ATTACHED, or PREVIEW_DETACHED while a preview excludes the disk."""

    ATTACHED = "ATTACHED"
    PREVIEW_DETACHED = "PREVIEW_DETACHED"


class DiskStatus(enum.StrEnum):
    """Derived disk status (SPEC §1.2)."""

    OK = "OK"
    LOCKED = "LOCKED"
    ILLEGAL = "ILLEGAL"


class SnapshotType(enum.StrEnum):
    """ACTIVE (the current state), REGULAR (a user snapshot) or PREVIEW."""

    ACTIVE = "ACTIVE"
    REGULAR = "REGULAR"
    PREVIEW = "PREVIEW"


class SnapshotStatus(enum.StrEnum):
    """OK, LOCKED (a job works on it) or IN_PREVIEW."""

    OK = "OK"
    LOCKED = "LOCKED"
    IN_PREVIEW = "IN_PREVIEW"


class VolumeStatus(enum.StrEnum):
    """OK, LOCKED or ILLEGAL."""

    OK = "OK"
    LOCKED = "LOCKED"
    ILLEGAL = "ILLEGAL"


class PreviewCategory(enum.StrEnum):
    """What a preview does to one disk (SPEC §3.2)."""

    PREVIEWED = "PREVIEWED"
    KEPT = "KEPT"
    DETACHED = "DETACHED"


class JobKind(enum.StrEnum):
    """The operation a job performs (SPEC §5.1)."""

    CREATE_SNAPSHOT = "CREATE_SNAPSHOT"
    PREVIEW_SNAPSHOT = "PREVIEW_SNAPSHOT"
    COMMIT_PREVIEW = "COMMIT_PREVIEW"
    UNDO_PREVIEW = "UNDO_PREVIEW"
    RESTORE_SNAPSHOT = "RESTORE_SNAPSHOT"
    REMOVE_SNAPSHOT = "REMOVE_SNAPSHOT"
    REMOVE_DISK_SNAPSHOTS = "REMOVE_DISK_SNAPSHOTS"
    CREATE_VM = "CREATE_VM"
    UPDATE_VM = "UPDATE_VM"
    REMOVE_VM = "REMOVE_VM"
    ADD_DISK = "ADD_DISK"
    REMOVE_DISK = "REMOVE_DISK"
    ATTACH_DISK = "ATTACH_DISK"
    DETACH_DISK = "DETACH_DISK"
    SET_VM_RUN_STATE = "SET_VM_RUN_STATE"
    CREATE_STORAGE_DOMAIN = "CREATE_STORAGE_DOMAIN"


class JobState(enum.StrEnum):
    """A job's life cycle (SPEC §5.2)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    SUCCEEDED_PARTIAL = "SUCCEEDED_PARTIAL"
    COMPENSATING = "COMPENSATING"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """SUCCEEDED, SUCCEEDED_PARTIAL and FAILED are terminal."""
        return self in (JobState.SUCCEEDED, JobState.SUCCEEDED_PARTIAL, JobState.FAILED)


class StepKind(enum.StrEnum):
    """The agent operation a step performs (SPEC §5.4)."""

    CREATE_VOLUME = "CREATE_VOLUME"
    DELETE_VOLUME = "DELETE_VOLUME"
    REBASE_VOLUME = "REBASE_VOLUME"
    MERGE_VOLUMES = "MERGE_VOLUMES"
    SAVE_MEMORY = "SAVE_MEMORY"
    DELETE_MEMORY = "DELETE_MEMORY"
    INIT_DOMAIN = "INIT_DOMAIN"


class StepState(enum.StrEnum):
    """A step's life cycle."""

    PLANNED = "PLANNED"
    STARTED = "STARTED"
    DONE = "DONE"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"


class DiskOutcomeKind(enum.StrEnum):
    """What a job did to one disk (or volume)."""

    SNAPSHOTTED = "SNAPSHOTTED"
    NOT_SELECTED = "NOT_SELECTED"
    FAILED_EXCLUDED = "FAILED_EXCLUDED"
    ROLLED_BACK = "ROLLED_BACK"
    PREVIEWED = "PREVIEWED"
    KEPT = "KEPT"
    DETACHED = "DETACHED"
    COMMITTED = "COMMITTED"
    FLOATING = "FLOATING"
    DELETED = "DELETED"
    CLEANUP_PENDING = "CLEANUP_PENDING"
    RESTORED = "RESTORED"
    REATTACHED = "REATTACHED"
    MERGED = "MERGED"
    NOT_MERGED = "NOT_MERGED"
    FAILED_ILLEGAL = "FAILED_ILLEGAL"
    NOT_ATTEMPTED = "NOT_ATTEMPTED"
    CREATED = "CREATED"


class MemoryOutcome(enum.StrEnum):
    """What a snapshot job did with memory state."""

    NOT_REQUESTED = "NOT_REQUESTED"
    SAVED = "SAVED"
    FAILED_EXCLUDED = "FAILED_EXCLUDED"
    ROLLED_BACK = "ROLLED_BACK"


# -- inventory ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """A hypervisor host running a storage agent."""

    id: str
    name: str
    address: str
    status: HostStatus
    live_ops: bool
    agent_version: str
    qemu_img_version: str
    domain_ids: tuple[str, ...]
    last_heartbeat_at: datetime | None


@dataclass(frozen=True)
class StorageDomain:
    """A directory of volumes served by one or more hosts."""

    id: str
    name: str
    status: DomainStatus
    free_bytes: int
    total_bytes: int
    host_ids: tuple[str, ...]


@dataclass(frozen=True)
class Nic:
    """A VM network interface; ``mac`` is lowercase ``xx:xx:xx:xx:xx:xx``."""

    name: str
    mac: str
    network: str = ""


@dataclass(frozen=True)
class VmConfig:
    """A VM's own configuration fields (SPEC §1.1)."""

    name: str
    description: str
    cpu_count: int
    memory_mb: int
    custom_properties: Mapping[str, str]
    nics: tuple[Nic, ...]
    home_domain_id: str | None


@dataclass(frozen=True)
class Attachment:
    """A disk attached to a VM."""

    vm_id: str
    disk_id: str
    interface: DiskInterface
    bootable: bool
    state: AttachmentState


@dataclass(frozen=True)
class Disk:
    """A virtual disk. ``head_volume_id`` is the volume the VM writes to (IMAGE disks)."""

    id: str
    alias: str
    description: str
    kind: DiskKind
    shareable: bool
    domain_id: str | None
    virtual_size: int
    base_format: DiskFormat | None
    lun_id: str | None
    created_at: datetime
    status: DiskStatus
    attachments: tuple[Attachment, ...]
    head_volume_id: str | None
    history_vm_id: str | None

    @property
    def floating(self) -> bool:
        """True when the disk is attached to no VM."""
        return not self.attachments


@dataclass(frozen=True)
class Vm:
    """A virtual machine with its current configuration and disks."""

    id: str
    config: VmConfig
    run_state: RunState
    host_id: str | None
    created_at: datetime
    active_snapshot_id: str
    in_preview: bool
    locked: bool
    disks: tuple[Disk, ...]

    @property
    def name(self) -> str:
        """The VM's name (``config.name``)."""
        return self.config.name


# -- snapshots ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotDisk:
    """One disk as a snapshot lists it, with the volume it holds for that disk."""

    disk_id: str
    volume_id: str
    alias: str
    status: VolumeStatus


@dataclass(frozen=True)
class Snapshot:
    """A snapshot summary (SPEC §3.8)."""

    id: str
    vm_id: str
    type: SnapshotType
    status: SnapshotStatus
    description: str
    created_at: datetime
    has_memory: bool
    config_available: bool
    disks: tuple[SnapshotDisk, ...]


@dataclass(frozen=True)
class ConfigDisk:
    """One disk entry of a snapshot configuration (SPEC §1.5)."""

    disk_id: str
    volume_id: str
    alias: str
    interface: DiskInterface
    bootable: bool
    virtual_size: int
    format: DiskFormat


@dataclass(frozen=True)
class SnapshotConfig:
    """A snapshot's stored configuration document."""

    schema_version: int
    vm: VmConfig
    disks: tuple[ConfigDisk, ...]
    captured_at: datetime


@dataclass(frozen=True)
class MemoryRef:
    """A saved memory state."""

    memory_id: str
    domain_id: str
    size_bytes: int


@dataclass(frozen=True)
class PreviewPlanEntry:
    """One disk of a preview plan."""

    disk_id: str
    category: PreviewCategory
    chosen_volume_id: str | None
    source_snapshot_id: str | None
    overlay_volume_id: str | None
    pre_preview_head_id: str | None
    reattached: bool


@dataclass(frozen=True)
class PreviewPlan:
    """The plan stored on a PREVIEW snapshot; commit and undo execute it."""

    config_snapshot_id: str | None
    restore_memory: bool
    entries: tuple[PreviewPlanEntry, ...]


@dataclass(frozen=True)
class SnapshotDetail:
    """GetSnapshot: the summary plus configuration, memory and (PREVIEW) plan."""

    snapshot: Snapshot
    config: SnapshotConfig | None
    memory: MemoryRef | None
    preview_plan: PreviewPlan | None


@dataclass(frozen=True)
class VolumeOwner:
    """The snapshot owning a volume."""

    snapshot_id: str
    type: SnapshotType
    description: str
    vm_id: str


@dataclass(frozen=True)
class VolumeNode:
    """One volume of a disk's tree."""

    id: str
    parent_id: str | None
    owner: VolumeOwner | None
    active: bool
    status: VolumeStatus
    format: DiskFormat
    virtual_size: int
    actual_size: int
    created_at: datetime
    pending_delete: bool


@dataclass(frozen=True)
class VolumeTree:
    """A disk and all of its volumes, oldest first."""

    disk: Disk
    volumes: tuple[VolumeNode, ...]
    root_id: str | None
    head_id: str | None

    def children(self, volume_id: str | None) -> tuple[VolumeNode, ...]:
        """The volumes whose parent is ``volume_id`` (``None``: the roots), oldest first."""
        return tuple(v for v in self.volumes if v.parent_id == volume_id)


# -- jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCause:
    """The agent's own error behind a job-level failure."""

    reason: str
    domain: str
    message: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class JobError:
    """A job-level or step-level failure (SPEC §4 job-level reasons)."""

    reason: str
    message: str
    metadata: Mapping[str, str]
    cause: ErrorCause | None


@dataclass(frozen=True)
class JobStep:
    """One agent operation of a job."""

    seq: int
    kind: StepKind
    disk_id: str | None
    volume_ids: tuple[str, ...]
    host_id: str | None
    op_id: str
    state: StepState
    attempts: int
    progress: int
    error: JobError | None
    compensates: int
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class DiskOutcome:
    """The per-disk (or per-volume) result of a job."""

    disk_id: str
    disk_alias: str
    volume_ids: tuple[str, ...]
    outcome: DiskOutcomeKind
    reason: str
    message: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class JobResult:
    """What a job produced; only the field matching the job's kind is set."""

    snapshot_id: str | None = None
    vm_id: str | None = None
    disk_id: str | None = None
    domain_id: str | None = None


@dataclass(frozen=True)
class Job:
    """The resource every mutating call returns (SPEC §5.1)."""

    id: str
    kind: JobKind
    state: JobState
    vm_id: str | None
    target_ids: tuple[str, ...]
    request_id: str | None
    correlation_id: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    progress: int
    steps: tuple[JobStep, ...]
    outcomes: tuple[DiskOutcome, ...]
    memory_outcome: MemoryOutcome | None
    result: JobResult
    error: JobError | None

    @property
    def done(self) -> bool:
        """True once the job is terminal."""
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        """True for SUCCEEDED and SUCCEEDED_PARTIAL."""
        return self.state in (JobState.SUCCEEDED, JobState.SUCCEEDED_PARTIAL)


@dataclass(frozen=True)
class Violation:
    """One broken invariant reported by the consistency checker."""

    invariant: str
    entity_id: str
    detail: str


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskSelection:
    """Where one disk is previewed from: exactly one of ``snapshot_id`` or ``volume_id``.

    ``snapshot_id`` equal to the VM's ACTIVE snapshot id keeps the disk as it is; a REGULAR
    snapshot id picks the volume that snapshot owns on the disk (SPEC §3.2).
    """

    disk_id: str
    snapshot_id: str | None = None
    volume_id: str | None = None

    def __post_init__(self) -> None:
        if (self.snapshot_id is None) == (self.volume_id is None):
            raise ValueError("DiskSelection needs exactly one of snapshot_id or volume_id")


@dataclass(frozen=True)
class DiskUpdate:
    """Per-attachment changes for :meth:`Client.update_vm`; ``None`` leaves a field as is."""

    disk_id: str
    alias: str | None = None
    interface: DiskInterface | None = None
    bootable: bool | None = None


@dataclass(frozen=True)
class TlsConfig:
    """TLS material for the client channel (PEM bytes); all optional.

    ``root_certificates`` is the CA to trust (system roots when ``None``); ``private_key`` and
    ``certificate_chain`` present a client certificate; ``server_name`` overrides the name
    checked against the server certificate.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    server_name: str | None = field(default=None)
