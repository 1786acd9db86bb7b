"""DeleteVolume: remove a volume that has no children and leave a tombstone."""

from __future__ import annotations

from dataclasses import dataclass

from storage_agent.errors import AgentError, Reason
from storage_agent.faults import FaultTarget
from storage_agent.layout import remove_file, validate_id
from storage_agent.locks import LockPlan
from storage_agent.model import OpKind, OpResult
from storage_agent.operations import OpContext, OperationRecord, OperationSpec, params_of
from storage_agent.runtime import Runtime


@dataclass(frozen=True)
class DeleteVolumeInput:
    """DeleteVolume's request."""

    op_id: str
    domain_id: str
    disk_id: str
    volume_id: str


def delete_volume(rt: Runtime, inp: DeleteVolumeInput) -> OperationRecord:
    """Abort operations on the volume, then delete it; absent means already done."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.disk_id, "disk_id")
    validate_id(inp.volume_id, "volume_id")
    spec = OperationSpec(
        OpKind.DELETE_VOLUME,
        inp.op_id,
        params_of(inp),
        frozenset({inp.volume_id}),
        FaultTarget("DeleteVolume", inp.disk_id, frozenset({inp.volume_id})),
    )
    return rt.runner.run_short(spec, lambda ctx: _run(rt, inp, ctx))


def _run(rt: Runtime, inp: DeleteVolumeInput, ctx: OpContext) -> OpResult:
    layout = rt.layout
    domain, disk, volume = inp.domain_id, inp.disk_id, inp.volume_id
    layout.require_domain(domain)
    # Every path is confined before anything changes.
    path = layout.volume_path(domain, disk, volume)
    others = (layout.sidecar_path(domain, disk, volume), layout.tmp_path(domain, disk, volume))
    layout.tombstone_path(domain, volume)
    layout.trash_dir(domain)
    rt.runner.abort_volume(volume, except_op_id=ctx.op_id)
    with rt.locks.acquire(LockPlan.of([volume])):
        children = layout.children(domain, disk, volume)
        if children:
            raise AgentError(
                Reason.VOLUME_HAS_CHILDREN,
                f"volume {volume} is the backing file of {', '.join(children)}",
                {"volume_id": volume, "volume_ids": ",".join(children)},
            )
        # The tombstone goes first, so a late duplicate create cannot resurrect the volume.
        layout.write_tombstone(domain, volume, ctx.op_id)
        removed = [rt.trash.drop(domain, path, defer=ctx.defer), *(remove_file(p) for p in others)]
    return OpResult(already_absent=not any(removed))
