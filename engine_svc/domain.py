"""Domain vocabulary: enums, allowed state transitions and small value types (SPEC §1, §5)."""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from datetime import UTC, datetime

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NIL_UUID = "00000000-0000-0000-0000-000000000000"
MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB


def new_id() -> str:
    """A fresh lowercase canonical UUID (engine-chosen ids are never reused)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """The current UTC time with microseconds."""
    return datetime.now(UTC)


def is_uuid(value: str) -> bool:
    """True for a lowercase canonical, non-nil UUID."""
    return bool(UUID_RE.match(value)) and value != NIL_UUID


class RunState(enum.StrEnum):
    DOWN = "DOWN"
    UP = "UP"


class DiskKind(enum.StrEnum):
    IMAGE = "IMAGE"
    LUN = "LUN"


class VolumeFormat(enum.StrEnum):
    RAW = "RAW"
    COW = "COW"


class DiskInterface(enum.StrEnum):
    VIRTIO = "VIRTIO"
    VIRTIO_SCSI = "VIRTIO_SCSI"
    SATA = "SATA"
    IDE = "IDE"


class AttachmentState(enum.StrEnum):
    ATTACHED = "ATTACHED"
    PREVIEW_DETACHED = "PREVIEW_DETACHED"


class VolumeStatus(enum.StrEnum):
    OK = "OK"
    LOCKED = "LOCKED"
    ILLEGAL = "ILLEGAL"


class SnapshotType(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REGULAR = "REGULAR"
    PREVIEW = "PREVIEW"


class SnapshotStatus(enum.StrEnum):
    OK = "OK"
    LOCKED = "LOCKED"
    IN_PREVIEW = "IN_PREVIEW"


class JobKind(enum.StrEnum):
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


SNAPSHOT_JOB_KINDS = frozenset(
    {
        JobKind.PREVIEW_SNAPSHOT,
        JobKind.COMMIT_PREVIEW,
        JobKind.UNDO_PREVIEW,
        JobKind.RESTORE_SNAPSHOT,
        JobKind.REMOVE_SNAPSHOT,
        JobKind.REMOVE_DISK_SNAPSHOTS,
    }
)


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    SUCCEEDED_PARTIAL = "SUCCEEDED_PARTIAL"
    COMPENSATING = "COMPENSATING"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """SUCCEEDED, SUCCEEDED_PARTIAL and FAILED end a job."""
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.SUCCEEDED_PARTIAL, JobState.FAILED})
ACTIVE_JOB_STATES = frozenset({JobState.PENDING, JobState.RUNNING, JobState.COMPENSATING})

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING}),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.SUCCEEDED_PARTIAL,
            JobState.FAILED,
            JobState.COMPENSATING,
        }
    ),
    JobState.COMPENSATING: frozenset({JobState.FAILED}),
}


def check_job_transition(old: JobState, new: JobState) -> None:
    """Raise ValueError unless SPEC §5.2 allows ``old → new``."""
    if new not in JOB_TRANSITIONS.get(old, frozenset()):
        raise ValueError(f"job transition {old} → {new} is not allowed")


class StepKind(enum.StrEnum):
    CREATE_VOLUME = "CREATE_VOLUME"
    DELETE_VOLUME = "DELETE_VOLUME"
    REBASE_VOLUME = "REBASE_VOLUME"
    MERGE_VOLUMES = "MERGE_VOLUMES"
    SAVE_MEMORY = "SAVE_MEMORY"
    DELETE_MEMORY = "DELETE_MEMORY"
    INIT_DOMAIN = "INIT_DOMAIN"


class StepState(enum.StrEnum):
    PLANNED = "PLANNED"
    STARTED = "STARTED"
    DONE = "DONE"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"


STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    StepState.PLANNED: frozenset({StepState.STARTED, StepState.COMPENSATED}),
    StepState.STARTED: frozenset({StepState.DONE, StepState.FAILED, StepState.COMPENSATED}),
    StepState.DONE: frozenset({StepState.COMPENSATED}),
    StepState.FAILED: frozenset({StepState.COMPENSATED}),
}


def check_step_transition(old: StepState, new: StepState) -> None:
    """Raise ValueError unless a step may move ``old → new``."""
    if new not in STEP_TRANSITIONS.get(old, frozenset()):
        raise ValueError(f"step transition {old} → {new} is not allowed")


class DiskOutcome(enum.StrEnum):
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
    NOT_REQUESTED = "NOT_REQUESTED"
    SAVED = "SAVED"
    FAILED_EXCLUDED = "FAILED_EXCLUDED"
    ROLLED_BACK = "ROLLED_BACK"


def vm_lock(vm_id: str) -> str:
    """Lock key of a VM (SPEC §5.8)."""
    return f"vm:{vm_id}"


def disk_lock(disk_id: str) -> str:
    """Lock key of a disk (SPEC §5.8)."""
    return f"disk:{disk_id}"


@dataclasses.dataclass(frozen=True)
class Nic:
    """A VM network interface."""

    name: str
    mac: str
    network: str = ""


@dataclasses.dataclass(frozen=True)
class VmConfig:
    """The VM's own configuration fields (SPEC §1.1)."""

    name: str
    description: str = ""
    cpu_count: int = 1
    memory_mb: int = 1024
    custom_properties: tuple[tuple[str, str], ...] = ()
    nics: tuple[Nic, ...] = ()
    home_domain_id: str | None = None
