"""InitDomain: create a storage domain's directories and ``domain.json`` (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass

from storage_agent.errors import AgentError, Reason, invalid_field
from storage_agent.faults import FaultTarget
from storage_agent.layout import free_space, validate_id
from storage_agent.locks import LockPlan
from storage_agent.model import DomainView, OpKind, OpResult
from storage_agent.operations import OpContext, OperationRecord, OperationSpec, params_of
from storage_agent.runtime import Runtime

MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class InitDomainInput:
    """InitDomain's request."""

    op_id: str
    domain_id: str
    name: str


def init_domain(rt: Runtime, inp: InitDomainInput) -> OperationRecord:
    """Create (or confirm) the domain; a different name replaces the stored one."""
    validate_id(inp.domain_id, "domain_id")
    if not 0 < len(inp.name) <= MAX_NAME_LENGTH or not inp.name.isprintable():
        raise invalid_field("name", f"1..{MAX_NAME_LENGTH} printable characters")
    spec = OperationSpec(
        OpKind.INIT_DOMAIN,
        inp.op_id,
        params_of(inp),
        frozenset(),
        FaultTarget("InitDomain"),
    )
    return rt.runner.run_short(spec, lambda ctx: _run(rt, inp, ctx))


def domain_view(rt: Runtime, domain_id: str, name: str) -> DomainView:
    """The domain with its filesystem's free and total bytes."""
    free, total = free_space(rt.layout.domain_dir(domain_id))
    return DomainView(domain_id, name, free, total)


def _run(rt: Runtime, inp: InitDomainInput, ctx: OpContext) -> OpResult:
    if not rt.layout.is_served(inp.domain_id):
        raise AgentError(
            Reason.DOMAIN_NOT_FOUND,
            f"storage domain {inp.domain_id} is not in this agent's --domain list",
            {"domain_id": inp.domain_id},
        )
    # The domain id is never a volume id, so it can share the lock namespace.
    with rt.locks.acquire(LockPlan.of([inp.domain_id])):
        meta = rt.layout.init_domain(inp.domain_id, inp.name)
    return OpResult(domain=domain_view(rt, meta.domain_id, meta.name))
