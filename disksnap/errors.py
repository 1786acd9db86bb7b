"""Every exception the SDK raises, and the one place where gRPC errors become them.

The engine reports errors as ``google.rpc.Status`` with one ``google.rpc.ErrorInfo`` (domain
``disksnap.engine``): a stable ``reason`` code (SPEC §4) and string ``metadata``. The SDK picks
the class from the reason (``REASONS``); an error without ErrorInfo (a transport failure, an RPC
the engine does not implement yet) is classed by its gRPC code. Branch on the class or on
``reason``, never on the message text.

::

    DisksnapError                    everything the SDK raises
    ├── ApiError                     an RPC failed: reason, message, metadata, code, retryable
    │   ├── InvalidArgument          INVALID_ARGUMENT: the request is malformed
    │   │   ├── InvalidField             INVALID_FIELD, CORRUPTED_VM_SNAPSHOT_ID
    │   │   ├── InvalidDescription       DESCRIPTION_EMPTY / _INVALID / _TOO_LONG
    │   │   ├── DuplicateDiskIds         DUPLICATE_DISK_IDS
    │   │   └── PreviewSelectionIncomplete  PREVIEW_DISK_SELECTION_INCOMPLETE
    │   ├── NotFound                 NOT_FOUND: something named does not exist
    │   │   ├── VmNotExist               VM_NOT_EXIST
    │   │   ├── SnapshotNotExist         VM_SNAPSHOT_DOES_NOT_EXIST
    │   │   ├── DisksNotExist            DISKS_NOT_EXIST
    │   │   ├── DiskSnapshotsNotExist    DISK_SNAPSHOTS_NOT_EXIST
    │   │   ├── StorageDomainNotExist    STORAGE_DOMAIN_NOT_EXIST
    │   │   ├── HostNotExist             HOST_NOT_EXIST
    │   │   └── JobNotExist              JOB_NOT_EXIST
    │   ├── Conflict                 ALREADY_EXISTS / ABORTED: clashes with other requests
    │   │   ├── NameAlreadyUsed          NAME_ALREADY_USED
    │   │   ├── RequestIdReused          REQUEST_ID_REUSED
    │   │   └── LockConflict             the 4 lock reasons (VM_IS_LOCKED, DISKS_LOCKED, ...)
    │   ├── PreconditionFailed       FAILED_PRECONDITION: the state does not allow it
    │   │   ├── VmInPreview              VM_IN_PREVIEW
    │   │   ├── VmNotInPreview           VM_SNAPSHOT_NOT_IN_PREVIEW
    │   │   ├── VmIsNotDown              VM_IS_NOT_DOWN
    │   │   ├── DisksNotAttachedToVm     DISKS_NOT_ATTACHED_TO_VM
    │   │   ├── DisksIllegal             DISKS_ILLEGAL
    │   │   ├── HostNotUp                HOST_NOT_UP
    │   │   ├── StorageUnusable          STORAGE_DOMAIN_STATUS_ILLEGAL, DISK_SPACE_LOW_..., ...
    │   │   └── MemoryUnavailable        MEMORY_NOT_AVAILABLE, MEMORY_REQUIRES_RUNNING_VM, ...
    │   ├── Unavailable              UNAVAILABLE: engine down, shutting down or DB unreachable
    │   │   └── DeadlineExceeded         DEADLINE_EXCEEDED: no answer in time
    │   ├── Unauthenticated          UNAUTHENTICATED: missing or invalid token
    │   ├── PermissionDenied         PERMISSION_DENIED, HOST_IDENTITY_MISMATCH
    │   ├── Unimplemented            UNIMPLEMENTED: this engine does not offer the RPC (yet)
    │   └── InternalError            INTERNAL (ENGINE_ERROR) and any other code
    ├── JobFailed                    a waited-for job ended FAILED (``.job`` has the details)
    └── WaitTimeout                  waiting gave up before the job ended (``.job``: last seen)

``retryable`` is true for ``Unavailable`` (and ``DeadlineExceeded``) and ``LockConflict``:
the same call may succeed later. A mutating call retried by hand should pass the same
``request_id`` (``ApiError.request_id`` carries the one the SDK sent), so the engine returns
the job it already created instead of running the operation twice.

Reasons the SDK does not give their own class (e.g. ``DISK_BOOT_IN_USE``) map to their code's
base class; ``REASONS`` lists every SPEC §4 reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

if TYPE_CHECKING:
    from disksnap._types import Job

ENGINE_DOMAIN = "disksnap.engine"

__all__ = [
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


class DisksnapError(Exception):
    """Base of every exception the SDK raises."""

    retryable: ClassVar[bool] = False


class ApiError(DisksnapError):
    """An RPC failed.

    Attributes: ``reason`` (the SPEC §4 code, or the gRPC code name when the server sent no
    ErrorInfo), ``message`` (English, for humans), ``metadata`` (string map, SPEC §4),
    ``code`` (``grpc.StatusCode``), ``domain`` (``disksnap.engine`` for engine errors),
    ``request_id`` (the envelope id of a mutating call, for a manual retry), ``retryable``.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        domain: str = "",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.code = code
        self.domain = domain
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(ApiError):
    """The request is malformed; nothing was looked up or changed."""


class InvalidField(InvalidArgument):
    """A malformed id, name, enum, size or list (INVALID_FIELD); ``metadata['field']``."""


class InvalidDescription(InvalidArgument):
    """The snapshot description is empty, not printable or too long."""


class DuplicateDiskIds(InvalidArgument):
    """A disk (or volume) id is named twice."""


class PreviewSelectionIncomplete(InvalidArgument):
    """A custom preview must select or exclude every attached snapshot-able disk (D7)."""


class NotFound(ApiError):
    """An entity named by the request does not exist."""


class VmNotExist(NotFound):
    """No VM with that id (``metadata['vm_id']``)."""


class SnapshotNotExist(NotFound):
    """The VM has no snapshot with that id."""


class DisksNotExist(NotFound):
    """Some disk ids do not exist (``metadata['disk_ids']``)."""


class DiskSnapshotsNotExist(NotFound):
    """A requested disk snapshot (volume) does not exist."""


class StorageDomainNotExist(NotFound):
    """No storage domain with that id."""


class HostNotExist(NotFound):
    """No host with that id."""


class JobNotExist(NotFound):
    """No job with that id (or it expired)."""


class Conflict(ApiError):
    """The request clashes with another one: a taken name or request id, or a held lock."""


class NameAlreadyUsed(Conflict):
    """The name is taken (``metadata['name']``, ``metadata['entity']``)."""


class RequestIdReused(Conflict):
    """The request_id was used for a different request (``metadata['job_id']``)."""


class LockConflict(Conflict):
    """Another job holds the VM or a disk; retry once it ends (``metadata['job_id']``)."""

    retryable: ClassVar[bool] = True


class PreconditionFailed(ApiError):
    """The entities are not in a state that allows the operation."""


class VmInPreview(PreconditionFailed):
    """The VM is in preview: commit or undo first."""


class VmNotInPreview(PreconditionFailed):
    """Commit or undo on a VM that is not in preview."""


class VmIsNotDown(PreconditionFailed):
    """The operation requires the VM to be DOWN."""


class DisksNotAttachedToVm(PreconditionFailed):
    """Some disks are not attached to this VM."""


class DisksIllegal(PreconditionFailed):
    """Some disks have ILLEGAL volumes."""


class HostNotUp(PreconditionFailed):
    """The host has not sent a heartbeat recently."""


class StorageUnusable(PreconditionFailed):
    """The storage domain is inactive, lacks space, or no suitable domain exists."""


class MemoryUnavailable(PreconditionFailed):
    """Memory state cannot be saved or restored here."""


class Unavailable(ApiError):
    """The engine cannot be reached or cannot serve now; retry (with the same request_id)."""

    retryable: ClassVar[bool] = True


class DeadlineExceeded(Unavailable):
    """No answer within the call's timeout; a mutating call may or may not have happened."""


class Unauthenticated(ApiError):
    """No valid bearer token."""


class PermissionDenied(ApiError):
    """The token's role does not allow the call."""


class Unimplemented(ApiError):
    """The engine does not implement this RPC (yet)."""


class InternalError(ApiError):
    """An engine bug (ENGINE_ERROR) or an unexpected gRPC failure."""


class JobFailed(DisksnapError):
    """A waited-for job ended FAILED. ``job`` is the final job; ``reason`` its error reason."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.reason = job.error.reason if job.error else "FAILED"
        detail = job.error.message if job.error else "no error recorded"
        super().__init__(f"job {job.id} ({job.kind.value}) failed: {self.reason}: {detail}")


class WaitTimeout(DisksnapError):
    """Waiting for a job gave up before it ended. ``job`` is its last seen state."""

    def __init__(self, job: Job, timeout: float) -> None:
        self.job = job
        self.timeout = timeout
        super().__init__(
            f"job {job.id} still {job.state.value} at {job.progress}% after {timeout:g}s"
        )


_REASONS: dict[str, type[ApiError]] = {
    # INVALID_ARGUMENT
    "INVALID_FIELD": InvalidField,
    "CORRUPTED_VM_SNAPSHOT_ID": InvalidField,
    "DESCRIPTION_EMPTY": InvalidDescription,
    "DESCRIPTION_INVALID": InvalidDescription,
    "DESCRIPTION_TOO_LONG": InvalidDescription,
    "DUPLICATE_DISK_IDS": DuplicateDiskIds,
    "PREVIEW_DISK_SELECTION_INCOMPLETE": PreviewSelectionIncomplete,
    # NOT_FOUND
    "VM_NOT_EXIST": VmNotExist,
    "VM_SNAPSHOT_DOES_NOT_EXIST": SnapshotNotExist,
    "DISKS_NOT_EXIST": DisksNotExist,
    "DISK_SNAPSHOTS_NOT_EXIST": DiskSnapshotsNotExist,
    "STORAGE_DOMAIN_NOT_EXIST": StorageDomainNotExist,
    "HOST_NOT_EXIST": HostNotExist,
    "JOB_NOT_EXIST": JobNotExist,
    # ALREADY_EXISTS
    "NAME_ALREADY_USED": NameAlreadyUsed,
    "REQUEST_ID_REUSED": RequestIdReused,
    # ABORTED
    "SNAPSHOT_IS_BEING_TAKEN_FOR_VM": LockConflict,
    "VM_IS_DURING_SNAPSHOT": LockConflict,
    "VM_IS_LOCKED": LockConflict,
    "DISKS_LOCKED": LockConflict,
    # FAILED_PRECONDITION
    "VM_IN_PREVIEW": VmInPreview,
    "VM_SNAPSHOT_NOT_IN_PREVIEW": VmNotInPreview,
    "VM_IS_NOT_DOWN": VmIsNotDown,
    "VM_SNAPSHOT_TYPE_NOT_ALLOWED": PreconditionFailed,
    "CANNOT_PREVIEW_ACTIVE_SNAPSHOT": PreconditionFailed,
    "DISKS_NOT_ATTACHED_TO_VM": DisksNotAttachedToVm,
    "DISK_SNAPSHOT_NOT_SUPPORTED": PreconditionFailed,
    "DISKS_ILLEGAL": DisksIllegal,
    "DISK_SNAPSHOTS_ACTIVE": PreconditionFailed,
    "DISKS_SNAPSHOTS_DONT_BELONG_TO_SAME_DISK": PreconditionFailed,
    "VM_DISK_SNAPSHOT_NOT_ATTACHED_TO_VM": PreconditionFailed,
    "MEMORY_REQUIRES_RUNNING_VM": MemoryUnavailable,
    "MEMORY_NOT_AVAILABLE": MemoryUnavailable,
    "HOST_CANNOT_SAVE_MEMORY": MemoryUnavailable,
    "NO_SUITABLE_DOMAIN_FOUND": StorageUnusable,
    "STORAGE_DOMAIN_STATUS_ILLEGAL": StorageUnusable,
    "DISK_SPACE_LOW_ON_STORAGE_DOMAIN": StorageUnusable,
    "CANNOT_DETACH_DISK_WITH_SNAPSHOT": PreconditionFailed,
    "DISK_SNAPSHOTS_BELONG_TO_ANOTHER_VM": PreconditionFailed,
    "DISK_ALREADY_ATTACHED": PreconditionFailed,
    "DISK_BOOT_IN_USE": PreconditionFailed,
    "HOST_NOT_UP": HostNotUp,
    # UNAVAILABLE
    "ENGINE_SHUTTING_DOWN": Unavailable,
    "DATABASE_UNAVAILABLE": Unavailable,
    # UNAUTHENTICATED / PERMISSION_DENIED / INTERNAL
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "HOST_IDENTITY_MISMATCH": PermissionDenied,
    "ENGINE_ERROR": InternalError,
}

REASONS: Mapping[str, type[ApiError]] = MappingProxyType(_REASONS)
"""Every SPEC §4 reason code and the exception class it is raised as."""

_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailed,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def _error_info(call: Any) -> error_details_pb2.ErrorInfo | None:
    try:
        status = rpc_status.from_call(call)
    except (ValueError, AttributeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def from_rpc_error(err: grpc.RpcError, *, request_id: str | None = None) -> ApiError:
    """The SDK exception for a failed RPC (the only place gRPC errors are translated)."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code: grpc.StatusCode = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    message = (details_fn() if callable(details_fn) else None) or str(code.name)
    info = _error_info(err)
    if info is not None and info.reason:
        cls = _REASONS.get(info.reason) or _BY_CODE.get(code, InternalError)
        return cls(
            info.reason,
            message,
            metadata=dict(info.metadata),
            code=code,
            domain=info.domain,
            request_id=request_id,
        )
    cls = _BY_CODE.get(code, InternalError)
    return cls(code.name, message, code=code, request_id=request_id)
