"""RebaseVolume: move a qcow2 volume onto another parent of its disk, preserving its content.

A safe ``qemu-img rebase`` (never ``-u``) copies into the volume whatever its old chain
provides and its new chain does not. Re-running an interrupted rebase is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from storage_agent import qemu_img
from storage_agent.errors import AgentError, Reason, invalid_field
from storage_agent.faults import FaultTarget
from storage_agent.layout import backing_id, validate_id, validate_optional_id
from storage_agent.locks import LockPlan
from storage_agent.model import OpKind, OpResult, VolumeFormat
from storage_agent.operations import OpContext, OperationRecord, OperationSpec, params_of
from storage_agent.ops.volume_info import require_volume, view_of
from storage_agent.runtime import Runtime


@dataclass(frozen=True)
class RebaseVolumeInput:
    """RebaseVolume's request; ``new_parent_id`` None makes the volume a root."""

    op_id: str
    domain_id: str
    disk_id: str
    volume_id: str
    new_parent_id: str | None


def rebase_volume(rt: Runtime, inp: RebaseVolumeInput) -> OperationRecord:
    """Validate the request and start the rebase (or return its existing record)."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.disk_id, "disk_id")
    validate_id(inp.volume_id, "volume_id")
    validate_optional_id(inp.new_parent_id or "", "new_parent_id")
    if inp.new_parent_id == inp.volume_id:
        raise invalid_field("new_parent_id", "a volume cannot be its own parent")
    return rt.runner.start_long(*rebase_job(rt, inp))


def rebase_job(rt: Runtime, inp: RebaseVolumeInput) -> tuple[OperationSpec, _RebaseJob]:
    """The operation spec and job for ``inp`` (also used to resume a recorded rebase)."""
    spec = OperationSpec(
        OpKind.REBASE_VOLUME,
        inp.op_id,
        params_of(inp),
        frozenset({inp.volume_id}),
        FaultTarget("RebaseVolume", inp.disk_id, frozenset({inp.volume_id})),
    )
    return spec, _RebaseJob(rt, inp)


def rebase_input(op_id: str, params: dict[str, Any]) -> RebaseVolumeInput:
    """The input recorded in an operation record."""
    return RebaseVolumeInput(op_id=op_id, **params)


class _RebaseJob:
    def __init__(self, rt: Runtime, inp: RebaseVolumeInput) -> None:
        self.rt = rt
        self.inp = inp

    def plan(self) -> LockPlan:
        """Exclusive on the volume, shared on its old and new chains (as far as readable)."""
        return LockPlan.of([self.inp.volume_id], self._chains())

    def _chains(self) -> list[str]:
        inp, layout = self.inp, self.rt.layout
        members: list[str] = []
        try:
            members += layout.ancestors(inp.domain_id, inp.disk_id, inp.volume_id)
            if inp.new_parent_id is not None:
                members.append(inp.new_parent_id)
                members += layout.ancestors(inp.domain_id, inp.disk_id, inp.new_parent_id)
        except (AgentError, OSError, ValueError):
            pass  # run() reports the problem under the locks it could take
        return members

    def run(self, ctx: OpContext) -> OpResult:
        inp, layout = self.inp, self.rt.layout
        domain, disk, volume, new_parent = (
            inp.domain_id,
            inp.disk_id,
            inp.volume_id,
            inp.new_parent_id,
        )
        layout.require_domain(domain)
        meta = require_volume(self.rt, domain, disk, volume)
        if not ctx.holds(self.plan()):
            raise AgentError(
                Reason.CHAIN_MISMATCH,
                f"the chain of volume {volume} changed while it was being locked",
                {"volume_id": volume},
            )
        path = layout.volume_path(domain, disk, volume)
        info = qemu_img.info(str(path), meta.format.qemu)
        current = backing_id(info.backing_name, volume)
        layout.ancestors(domain, disk, volume)
        parent_format = None
        if new_parent is not None:
            parent = layout.read_sidecar(domain, disk, new_parent)
            if parent is None or not layout.volume_exists(domain, disk, new_parent):
                raise AgentError(
                    Reason.PARENT_NOT_FOUND,
                    f"volume {new_parent} does not exist in disk {disk}",
                    {"parent_volume_id": new_parent, "disk_id": disk},
                )
            if volume in layout.ancestors(domain, disk, new_parent):
                raise AgentError(
                    Reason.CHAIN_MISMATCH,
                    f"volume {new_parent} is a descendant of {volume}",
                    {"volume_id": volume, "new_parent_id": new_parent},
                )
            parent_format = parent.format.qemu
        if current != new_parent:
            if meta.format is VolumeFormat.RAW:
                raise AgentError(
                    Reason.CHAIN_MISMATCH,
                    f"volume {volume} is raw and cannot have a backing file",
                    {"volume_id": volume, "format": meta.format.value},
                )
            qemu_img.rebase_safe(
                str(path),
                new_parent,
                parent_format,
                cache=self.rt.qemu_cache(path),
                progress=ctx.progress,
                cancel=ctx.cancel,
                pass_fds=ctx.lock_fds,
            )
            ctx.fault_after()
        if meta.parent_id != new_parent:
            meta = replace(meta, parent_id=new_parent, op_id=ctx.op_id)
            layout.write_sidecar(meta)
        leaf = not layout.children(domain, disk, volume)
        return OpResult(volume=view_of(self.rt, meta, leaf))
