"""The one place engine errors become gRPC statuses."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from engine_svc.errors import EngineError, InternalError, Unavailable, to_status

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def rpc(method: F) -> F:
    """Wrap a unary servicer method: EngineError → its status, anything else → ENGINE_ERROR.

    While the engine drains, mutations (the requests with a ``RequestEnvelope``, SPEC §3.0)
    are refused with ENGINE_SHUTTING_DOWN before they touch anything.
    """

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if self.app.shutting_down.is_set() and "envelope" in request.DESCRIPTOR.fields_by_name:
                raise Unavailable(
                    "ENGINE_SHUTTING_DOWN",
                    "this engine is shutting down; retry with the same request_id",
                )
            return method(self, request, context)
        except Exception as exc:
            context.abort_with_status(_status_of(exc, method.__name__))

    return wrapper  # type: ignore[return-value]


def stream_rpc(method: F) -> F:
    """The same mapping for server-streaming methods."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from method(self, request, context)
        except Exception as exc:
            context.abort_with_status(_status_of(exc, method.__name__))

    return wrapper  # type: ignore[return-value]


def _status_of(exc: Exception, method_name: str) -> grpc.Status:
    if isinstance(exc, EngineError):
        return to_status(exc)
    log.exception("%s failed", method_name)
    return to_status(InternalError("ENGINE_ERROR", f"internal error: {type(exc).__name__}"))


def peer_dns_names(context: grpc.ServicerContext) -> frozenset[str] | None:
    """The DNS SANs of the client certificate, or None when the caller presented none."""
    auth = context.auth_context()
    names = auth.get("x509_subject_alternative_name") or auth.get("x509_common_name")
    if not names:
        return None
    return frozenset(bytes(n).decode() for n in names)
