"""Agent errors: stable reason codes (SPEC §6.6) and their mapping to gRPC status.

The tree is deliberately small::

    Exception
     ├── AgentError              reason, message, metadata; code and retryable follow the reason
     └── qemu_img.QemuImgError   cmd, rc, stderr; becomes AgentError(QEMU_IMG_FAILED)

Reasons, with their gRPC code:

* INVALID_ARGUMENT: ``INVALID_ID``, ``PATH_OUTSIDE_ROOT``, ``UNSUPPORTED_SURVIVOR`` and, added
  here, ``INVALID_FIELD`` (metadata ``field``, ``detail``: a malformed argument that is not an
  id, such as a size, a format, a name or the ``op_id``).
* NOT_FOUND: ``DOMAIN_NOT_FOUND``, ``VOLUME_NOT_FOUND``, ``PARENT_NOT_FOUND`` and, added here,
  ``OPERATION_NOT_FOUND`` (GetOperation/AbortOperation of an unknown ``op_id``).
* ALREADY_EXISTS: ``VOLUME_ALREADY_EXISTS``, ``OPERATION_ID_REUSED``.
* FAILED_PRECONDITION: ``VOLUME_HAS_CHILDREN``, ``VOLUME_DELETED``, ``CHAIN_CORRUPT``,
  ``CHAIN_MISMATCH``, ``NO_SPACE`` and, added here, ``UNSUPPORTED_OPERATION`` (SaveMemoryState
  on a host with ``live_ops=false``).
* ABORTED: ``VOLUME_BUSY`` (retryable) and, added here, ``OPERATION_ABORTED`` (the error of an
  operation stopped by AbortOperation or by DeleteVolume of its volume).
* INTERNAL: ``QEMU_IMG_FAILED`` (metadata ``cmd``, ``rc``, ``stderr`` tail of at most 2 KiB)
  and, added here, ``INTERNAL_ERROR`` (a bug; the traceback is logged).
* ``INJECTED_FAULT``: raised only by fault injection, with the rule's code (INTERNAL or
  UNAVAILABLE; UNAVAILABLE is retryable).

Every error is translated in one place, :func:`as_agent_error`, and turned into a gRPC status
in one place, :func:`to_status`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from enum import IntEnum, StrEnum

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from storage_agent.qemu_img import QemuImgError

ERROR_DOMAIN = "disksnap.agent"
STDERR_TAIL_BYTES = 2048

_log = logging.getLogger(__name__)


class Code(IntEnum):
    """The google.rpc.Code values the agent uses."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    FAILED_PRECONDITION = 9
    ABORTED = 10
    INTERNAL = 13
    UNAVAILABLE = 14


class Reason(StrEnum):
    """Stable reason codes carried in ``google.rpc.ErrorInfo.reason``."""

    INVALID_ID = "INVALID_ID"
    PATH_OUTSIDE_ROOT = "PATH_OUTSIDE_ROOT"
    UNSUPPORTED_SURVIVOR = "UNSUPPORTED_SURVIVOR"
    INVALID_FIELD = "INVALID_FIELD"
    DOMAIN_NOT_FOUND = "DOMAIN_NOT_FOUND"
    VOLUME_NOT_FOUND = "VOLUME_NOT_FOUND"
    PARENT_NOT_FOUND = "PARENT_NOT_FOUND"
    OPERATION_NOT_FOUND = "OPERATION_NOT_FOUND"
    VOLUME_ALREADY_EXISTS = "VOLUME_ALREADY_EXISTS"
    OPERATION_ID_REUSED = "OPERATION_ID_REUSED"
    VOLUME_HAS_CHILDREN = "VOLUME_HAS_CHILDREN"
    VOLUME_DELETED = "VOLUME_DELETED"
    CHAIN_CORRUPT = "CHAIN_CORRUPT"
    CHAIN_MISMATCH = "CHAIN_MISMATCH"
    NO_SPACE = "NO_SPACE"
    UNSUPPORTED_OPERATION = "UNSUPPORTED_OPERATION"
    VOLUME_BUSY = "VOLUME_BUSY"
    OPERATION_ABORTED = "OPERATION_ABORTED"
    QEMU_IMG_FAILED = "QEMU_IMG_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    INJECTED_FAULT = "INJECTED_FAULT"


_CODES: dict[Reason, Code] = {
    Reason.INVALID_ID: Code.INVALID_ARGUMENT,
    Reason.PATH_OUTSIDE_ROOT: Code.INVALID_ARGUMENT,
    Reason.UNSUPPORTED_SURVIVOR: Code.INVALID_ARGUMENT,
    Reason.INVALID_FIELD: Code.INVALID_ARGUMENT,
    Reason.DOMAIN_NOT_FOUND: Code.NOT_FOUND,
    Reason.VOLUME_NOT_FOUND: Code.NOT_FOUND,
    Reason.PARENT_NOT_FOUND: Code.NOT_FOUND,
    Reason.OPERATION_NOT_FOUND: Code.NOT_FOUND,
    Reason.VOLUME_ALREADY_EXISTS: Code.ALREADY_EXISTS,
    Reason.OPERATION_ID_REUSED: Code.ALREADY_EXISTS,
    Reason.VOLUME_HAS_CHILDREN: Code.FAILED_PRECONDITION,
    Reason.VOLUME_DELETED: Code.FAILED_PRECONDITION,
    Reason.CHAIN_CORRUPT: Code.FAILED_PRECONDITION,
    Reason.CHAIN_MISMATCH: Code.FAILED_PRECONDITION,
    Reason.NO_SPACE: Code.FAILED_PRECONDITION,
    Reason.UNSUPPORTED_OPERATION: Code.FAILED_PRECONDITION,
    Reason.VOLUME_BUSY: Code.ABORTED,
    Reason.OPERATION_ABORTED: Code.ABORTED,
    Reason.QEMU_IMG_FAILED: Code.INTERNAL,
    Reason.INTERNAL_ERROR: Code.INTERNAL,
    Reason.INJECTED_FAULT: Code.INTERNAL,
}

_RETRYABLE_CODES = frozenset({Code.UNAVAILABLE})
_RETRYABLE_REASONS = frozenset({Reason.VOLUME_BUSY})


class AgentError(Exception):
    """An error with a stable reason; ``code`` is derived from it unless given explicitly."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        metadata: Mapping[str, str] | None = None,
        code: Code | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.code = code if code is not None else _CODES[reason]

    @property
    def retryable(self) -> bool:
        """True for transient failures: the same request may succeed later."""
        return self.reason in _RETRYABLE_REASONS or self.code in _RETRYABLE_CODES

    def __repr__(self) -> str:
        return f"AgentError({self.reason}, {self.message!r}, {self.metadata!r})"


def invalid_field(field: str, detail: str) -> AgentError:
    """INVALID_FIELD for a malformed non-id argument."""
    return AgentError(
        Reason.INVALID_FIELD, f"invalid {field}: {detail}", {"field": field, "detail": detail}
    )


def as_agent_error(exc: BaseException) -> AgentError:
    """Translate any exception raised below the servicer into an :class:`AgentError`."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, QemuImgError):
        stderr = exc.stderr.encode("utf-8", "replace")[-STDERR_TAIL_BYTES:]
        return AgentError(
            Reason.QEMU_IMG_FAILED,
            f"qemu-img failed with rc={exc.rc}",
            {
                "cmd": " ".join(exc.cmd),
                "rc": str(exc.rc),
                "stderr": stderr.decode("utf-8", "replace"),
            },
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return AgentError(Reason.NO_SPACE, f"no space left: {exc}")
    _log.error("unexpected error", exc_info=exc)
    return AgentError(Reason.INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")


def to_status(err: AgentError) -> grpc.Status:
    """The gRPC status for ``err``: google.rpc.Status with one ErrorInfo (+ BadRequest)."""
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=err.reason.value, domain=ERROR_DOMAIN, metadata=err.metadata
            )
        )
    ]
    if err.code == Code.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=err.metadata.get("field", ""), description=err.message
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    status = status_pb2.Status(code=int(err.code), message=err.message, details=details)
    return rpc_status.to_status(status)


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
