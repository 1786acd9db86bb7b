"""The SDK's public surface is deliberate: pin ``__all__`` and the layering around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import disksnap
from disksnap import errors

ROOT = Path(__file__).resolve().parents[2]

EXPECTED_ALL = [
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

EXPECTED_ERRORS = [
    "REASONS",
    "ApiError",
    "Conflict",
    "DeadlineExceeded",
    "DiskSnapshotsNotExist",
    "DisksIllegal",
    "DisksNotAttachedToVm",
    "DisksNotExist",
    "DisksnapError",
    "DuplicateDiskIds",
    "HostNotExist",
    "HostNotUp",
    "InternalError",
    "InvalidArgument",
    "InvalidDescription",
    "InvalidField",
    "JobFailed",
    "JobNotExist",
    "LockConflict",
    "MemoryUnavailable",
    "NameAlreadyUsed",
    "NotFound",
    "PermissionDenied",
    "PreconditionFailed",
    "PreviewSelectionIncomplete",
    "RequestIdReused",
    "SnapshotNotExist",
    "StorageDomainNotExist",
    "StorageUnusable",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VmInPreview",
    "VmIsNotDown",
    "VmNotExist",
    "VmNotInPreview",
    "WaitTimeout",
    "from_rpc_error",
]


def test_all_is_pinned() -> None:
    assert disksnap.__all__ == EXPECTED_ALL
    for name in disksnap.__all__:
        assert hasattr(disksnap, name), name


def test_errors_all_is_pinned() -> None:
    assert errors.__all__ == EXPECTED_ERRORS
    for name in errors.__all__:
        assert hasattr(errors, name), name


def test_public_names_are_not_generated_code() -> None:
    for name in disksnap.__all__:
        module = getattr(getattr(disksnap, name), "__module__", "disksnap")
        assert "_pb2" not in module, name


def test_py_typed_is_shipped() -> None:
    assert (ROOT / "disksnap" / "py.typed").exists()


def test_importing_the_sdk_does_not_import_the_cli() -> None:
    code = "import sys, disksnap; print('typer' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


def test_cli_uses_only_the_sdk() -> None:
    for path in (ROOT / "disksnap" / "cli").glob("*.py"):
        text = path.read_text()
        assert "_pb2" not in text, path
        assert "disksnap.engine" not in text, path
        assert "import grpc" not in text, path
