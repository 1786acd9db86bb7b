"""Engine errors: one tree, stable reason codes (SPEC §4), one mapping to gRPC status.

::

    EngineError                  reason + gRPC code + metadata; never retryable unless marked
    ├── InvalidArgument          INVALID_ARGUMENT (INVALID_FIELD, DESCRIPTION_*, ...)
    ├── NotFound                 NOT_FOUND (VM_NOT_EXIST, DISKS_NOT_EXIST, ...)
    ├── AlreadyExists            ALREADY_EXISTS (NAME_ALREADY_USED, REQUEST_ID_REUSED)
    ├── Conflict                 ABORTED (lock conflicts: VM_IS_LOCKED, DISKS_LOCKED, ...)
    ├── PreconditionFailed       FAILED_PRECONDITION (VM_IN_PREVIEW, DISKS_ILLEGAL, ...)
    ├── Unavailable              UNAVAILABLE (ENGINE_SHUTTING_DOWN, DATABASE_UNAVAILABLE)
    ├── Unauthenticated          UNAUTHENTICATED
    ├── PermissionDenied         PERMISSION_DENIED (PERMISSION_DENIED, HOST_IDENTITY_MISMATCH)
    └── InternalError            INTERNAL (ENGINE_ERROR)

``to_status`` is the only place that turns an error into a ``grpc.Status``; it attaches one
``google.rpc.ErrorInfo`` (domain ``disksnap.engine``) and, for INVALID_ARGUMENT, a
``google.rpc.BadRequest`` naming the offending field.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "disksnap.engine"


def join_ids(ids: Iterable[str]) -> str:
    """SPEC §4: list metadata values are sorted, comma-separated, without spaces."""
    return ",".join(sorted(ids))


class EngineError(Exception):
    """Base of every error the engine reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = {k: str(v) for k, v in metadata.items() if v is not None}


class InvalidArgument(EngineError):
    """The request is malformed; nothing was looked up."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(EngineError):
    """An entity named by the request does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EngineError):
    """A unique name or request id is taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(EngineError):
    """A lock is held by another job; retry later."""

    code = grpc.StatusCode.ABORTED


class PreconditionFailed(EngineError):
    """The entities are not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(EngineError):
    """The engine cannot serve now; retry with the same request_id."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(EngineError):
    """No valid bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(EngineError):
    """The caller's role or identity does not allow the call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(EngineError):
    """A bug: the request transaction was rolled back."""

    code = grpc.StatusCode.INTERNAL


def invalid_field(field: str, detail: str) -> InvalidArgument:
    """The common INVALID_FIELD error."""
    return InvalidArgument(
        "INVALID_FIELD", f"invalid {field}: {detail}", field=field, detail=detail
    )


def to_status(err: EngineError) -> grpc.Status:
    """Map an engine error to a gRPC status with ErrorInfo (and BadRequest when invalid)."""
    details: list[any_pb2.Any] = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata))
    details.append(info)
    if err.code is grpc.StatusCode.INVALID_ARGUMENT:
        bad = any_pb2.Any()
        field = err.metadata.get("field", "")
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=field, description=err.message, reason=err.reason
                    )
                ]
            )
        )
        details.append(bad)
    status = status_pb2.Status(code=_CODE_NUMBERS[err.code], message=err.message, details=details)
    return rpc_status.to_status(status)


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED: code_pb2.ABORTED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
}
