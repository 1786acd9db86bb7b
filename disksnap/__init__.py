"""disksnap: per-disk VM snapshots. This package is the Python SDK.

::

    import disksnap

    with disksnap.Client("127.0.0.1:7700") as client:
        vm_id = client.create_vm("web1", cpu_count=2, memory_mb=2048).result.vm_id
        domain = client.list_storage_domains()[0]
        client.add_disk("os", 1 << 30, domain_id=domain.id, vm_id=vm_id)
        job = client.create_snapshot(vm_id, "before upgrade")
        print(job.state, job.result.snapshot_id)

The public surface is exactly ``__all__`` (pinned by tests/sdk/test_public_api.py): the
``Client`` and ``JobHandle``, the value types and enums, and the ``errors`` module with the
exception tree. ``disksnap.embedded.EmbeddedServer`` runs a local engine plus agent, and
``disksnap.cli`` is the ``disksnap`` command; the generated gRPC code lives in
``disksnap.engine.v1`` / ``disksnap.agent.v1`` and is not part of the SDK's API.
"""

from disksnap import errors
from disksnap._client import (
    DEFAULT_ADDRESS,
    Client,
    JobHandle,
    MutationOptions,
    ProgressCallback,
)
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
    DiskUpdate,
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
    TlsConfig,
    Violation,
    Vm,
    VmConfig,
    VolumeNode,
    VolumeOwner,
    VolumeStatus,
    VolumeTree,
)
from disksnap.errors import (
    ApiError,
    DisksnapError,
    JobFailed,
    WaitTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ADDRESS",
    "ApiError",
    "Attachment",
    "AttachmentState",
    "Client",
    "ConfigDisk",
    "Disk",
    "DiskFormat",
    "DiskInterface",
    "DiskKind",
    "DiskOutcome",
    "DiskOutcomeKind",
    "DiskSelection",
    "DiskStatus",
    "DiskUpdate",
    "DisksnapError",
    "DomainStatus",
    "ErrorCause",
    "Host",
    "HostStatus",
    "Job",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobKind",
    "JobResult",
    "JobState",
    "JobStep",
    "MemoryOutcome",
    "MemoryRef",
    "MutationOptions",
    "Nic",
    "PreviewCategory",
    "PreviewPlan",
    "PreviewPlanEntry",
    "ProgressCallback",
    "RunState",
    "Snapshot",
    "SnapshotConfig",
    "SnapshotDetail",
    "SnapshotDisk",
    "SnapshotStatus",
    "SnapshotType",
    "StepKind",
    "StepState",
    "StorageDomain",
    "TlsConfig",
    "Violation",
    "Vm",
    "VmConfig",
    "VolumeNode",
    "VolumeOwner",
    "VolumeStatus",
    "VolumeTree",
    "WaitTimeout",
    "__version__",
    "errors",
]
