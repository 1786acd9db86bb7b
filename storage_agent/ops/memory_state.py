"""SaveMemoryState (unsupported: v1 agents have no VM runtime) and DeleteMemoryState."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from storage_agent.errors import AgentError, Reason
from storage_agent.faults import FaultTarget
from storage_agent.layout import fsync_dir, validate_id
from storage_agent.locks import LockPlan
from storage_agent.model import OpKind, OpResult
from storage_agent.operations import OpContext, OperationRecord, OperationSpec, params_of
from storage_agent.runtime import Runtime


@dataclass(frozen=True)
class SaveMemoryStateInput:
    """SaveMemoryState's request."""

    op_id: str
    domain_id: str
    memory_id: str
    vm_id: str


@dataclass(frozen=True)
class DeleteMemoryStateInput:
    """DeleteMemoryState's request."""

    op_id: str
    domain_id: str
    memory_id: str


def save_memory_state(rt: Runtime, inp: SaveMemoryStateInput) -> OperationRecord:
    """Always UNSUPPORTED_OPERATION: this host reports ``live_ops=false``."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.memory_id, "memory_id")
    validate_id(inp.vm_id, "vm_id")
    spec = OperationSpec(
        OpKind.SAVE_MEMORY_STATE,
        inp.op_id,
        params_of(inp),
        frozenset({inp.memory_id}),
        FaultTarget("SaveMemoryState"),
    )
    return rt.runner.run_short(spec, _unsupported)


def delete_memory_state(rt: Runtime, inp: DeleteMemoryStateInput) -> OperationRecord:
    """Remove the memory state's directory; absent means already done."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.memory_id, "memory_id")
    spec = OperationSpec(
        OpKind.DELETE_MEMORY_STATE,
        inp.op_id,
        params_of(inp),
        frozenset({inp.memory_id}),
        FaultTarget("DeleteMemoryState", None, frozenset({inp.memory_id})),
    )
    return rt.runner.run_short(spec, lambda ctx: _delete(rt, inp, ctx))


def _unsupported(ctx: OpContext) -> OpResult:
    raise AgentError(
        Reason.UNSUPPORTED_OPERATION,
        "this agent has no VM runtime (live_ops=false) and cannot save memory state",
        {"operation": "SaveMemoryState"},
    )


def _delete(rt: Runtime, inp: DeleteMemoryStateInput, ctx: OpContext) -> OpResult:
    rt.layout.require_domain(inp.domain_id)
    with rt.locks.acquire(LockPlan.of([inp.memory_id])):
        directory = rt.layout.memory_dir(inp.domain_id, inp.memory_id)
        if not directory.exists():
            return OpResult(already_absent=True)
        # rmtree never follows symlinks inside the tree; _confined refused a symlinked root.
        shutil.rmtree(directory)
        fsync_dir(directory.parent)
    return OpResult(already_absent=False)
