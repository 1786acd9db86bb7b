"""Bearer-token authentication for clients (SPEC §7).

Tokens are configured as SHA-256 digests with a role: ``admin`` (everything) or ``viewer``
(queries only), one ``<hex digest> <role>`` per line. Digests are compared in constant time
and tokens are never logged. Health, reflection and the agent registry (authenticated by
the agents' client certificates) need no token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from engine_svc.errors import PermissionDenied, Unauthenticated, to_status

EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/disksnap.engine.v1.AgentRegistryService/",
)
QUERY_METHODS = ("Get", "List", "Watch", "Check")
ROLES = ("admin", "viewer")


def load_tokens(path: Path) -> dict[str, str]:
    """Digest → role from a token file; raises ValueError on a malformed line."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ROLES or len(parts[0]) != 64:
            raise ValueError(f"{path}:{number}: expected '<sha256 hex> admin|viewer'")
        tokens[parts[0].lower()] = parts[1]
    return tokens


def _role_of(token: str, tokens: dict[str, str]) -> str | None:
    digest = hashlib.sha256(token.encode()).hexdigest()
    role = None
    for known, known_role in tokens.items():
        if hmac.compare_digest(known, digest):
            role = known_role
    return role


class TokenAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Rejects calls without a valid bearer token, and viewers' mutating calls."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        method: str = details.method
        if method.startswith(EXEMPT_PREFIXES):
            return continuation(details)
        header = dict(details.invocation_metadata or ()).get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        role = _role_of(token, self.tokens) if token else None
        if role is None:
            return _deny(Unauthenticated("UNAUTHENTICATED", "a valid bearer token is required"))
        rpc_name = method.rsplit("/", 1)[-1]
        if role == "viewer" and not rpc_name.startswith(QUERY_METHODS):
            return _deny(PermissionDenied("PERMISSION_DENIED", "viewers may only query", role=role))
        return continuation(details)


def _deny(err: Unauthenticated | PermissionDenied) -> grpc.RpcMethodHandler:
    status = to_status(err)

    def abort(_request: Any, context: grpc.ServicerContext) -> None:
        context.abort_with_status(status)

    return grpc.unary_unary_rpc_method_handler(abort)
