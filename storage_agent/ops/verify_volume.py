"""VerifyVolume: ``qemu-img check`` of one volume (a raw volume is always OK)."""

from __future__ import annotations

from dataclasses import dataclass

from storage_agent import qemu_img
from storage_agent.faults import FaultTarget
from storage_agent.layout import validate_id
from storage_agent.locks import LockPlan
from storage_agent.model import OpKind, OpResult, VerifyReport, VolumeFormat
from storage_agent.operations import OpContext, OperationRecord, OperationSpec, params_of
from storage_agent.ops.volume_info import require_volume
from storage_agent.runtime import Runtime


@dataclass(frozen=True)
class VerifyVolumeInput:
    """VerifyVolume's request."""

    op_id: str
    domain_id: str
    disk_id: str
    volume_id: str


def verify_volume(rt: Runtime, inp: VerifyVolumeInput) -> OperationRecord:
    """Check the volume; corruptions and leaks are reported, not raised."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.disk_id, "disk_id")
    validate_id(inp.volume_id, "volume_id")
    spec = OperationSpec(
        OpKind.VERIFY_VOLUME,
        inp.op_id,
        params_of(inp),
        frozenset({inp.volume_id}),
        FaultTarget("VerifyVolume", inp.disk_id, frozenset({inp.volume_id})),
    )
    return rt.runner.run_short(spec, lambda ctx: _run(rt, inp, ctx))


def _run(rt: Runtime, inp: VerifyVolumeInput, ctx: OpContext) -> OpResult:
    rt.layout.require_domain(inp.domain_id)
    with rt.locks.acquire(LockPlan.of([], [inp.volume_id])):
        meta = require_volume(rt, inp.domain_id, inp.disk_id, inp.volume_id)
        if meta.format is VolumeFormat.RAW:
            return OpResult(verify=VerifyReport(ok=True))
        path = rt.layout.volume_path(inp.domain_id, inp.disk_id, inp.volume_id)
        report = qemu_img.check(str(path))
    return OpResult(
        verify=VerifyReport(
            ok=report.ok,
            corruptions=report.corruptions,
            leaks=report.leaks,
            check_errors=report.check_errors,
            image_end_offset=report.image_end_offset,
        )
    )
