"""MergeVolumes: merge ``base`` into its only child ``top``; the survivor keeps top's id.

Direction (SPEC §6.5): COMMIT (``qemu-img commit -b base top``, then ``rename(base, top)``)
when top holds less data than base, else PULL (safe ``qemu-img rebase`` of top onto base's
parent, then base is deleted). Either way the result is one file named ``top`` whose backing
is base's former backing and whose content is top's former content.

The finalize steps are ordered so that storage alone tells how far a merge got, whatever
the ``op_id`` of the retry:

* COMMIT: rename base's file over top's → rewrite top's sidecar → tombstone base → remove
  base's sidecar. So "base's file is gone but top's sidecar still names base as parent" means
  the rename happened and top's file now has base's format.
* PULL: rebase → rewrite top's sidecar → tombstone base → delete base's file and sidecar.
  So "base exists but top's backing already is base's parent" means the pull finished.

Re-running an interrupted commit is harmless (``-b`` leaves top intact and top's clusters
mask what was already written), and so is re-running a safe rebase.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from storage_agent import qcow2, qemu_img
from storage_agent.errors import AgentError, Reason, invalid_field
from storage_agent.faults import FaultTarget
from storage_agent.layout import (
    backing_id,
    fsync_dir,
    fsync_file,
    remove_file,
    require_free_space,
    validate_id,
    validate_optional_id,
)
from storage_agent.locks import LockPlan
from storage_agent.model import MergeDirection, OpKind, OpResult, VolumeFormat, VolumeMeta
from storage_agent.operations import OpContext, OperationRecord, OperationSpec, params_of
from storage_agent.ops.volume_info import require_volume, view_of
from storage_agent.runtime import Runtime

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeVolumesInput:
    """MergeVolumes' request; ``base_parent_id`` is the engine's view of base's parent."""

    op_id: str
    domain_id: str
    disk_id: str
    base_id: str
    top_id: str
    base_parent_id: str | None
    survivor_id: str


def merge_volumes(rt: Runtime, inp: MergeVolumesInput) -> OperationRecord:
    """Validate the request and start the merge (or return its existing record)."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.disk_id, "disk_id")
    validate_id(inp.base_id, "base_id")
    validate_id(inp.top_id, "top_id")
    validate_optional_id(inp.base_parent_id or "", "base_parent_id")
    if inp.survivor_id != inp.top_id:
        raise AgentError(
            Reason.UNSUPPORTED_SURVIVOR,
            "survivor_id must equal top_id in v1",
            {"field": "survivor_id", "survivor_id": inp.survivor_id[:80], "top_id": inp.top_id},
        )
    if inp.base_id == inp.top_id:
        raise invalid_field("top_id", "base_id and top_id must differ")
    return rt.runner.start_long(*merge_job(rt, inp))


def merge_job(rt: Runtime, inp: MergeVolumesInput) -> tuple[OperationSpec, _MergeJob]:
    """The operation spec and job for ``inp`` (also used to resume a recorded merge)."""
    spec = OperationSpec(
        OpKind.MERGE_VOLUMES,
        inp.op_id,
        params_of(inp),
        frozenset({inp.base_id, inp.top_id}),
        FaultTarget("MergeVolumes", inp.disk_id, frozenset({inp.base_id, inp.top_id})),
    )
    return spec, _MergeJob(rt, inp)


def merge_input(op_id: str, params: dict[str, Any]) -> MergeVolumesInput:
    """The input recorded in an operation record."""
    return MergeVolumesInput(op_id=op_id, **params)


class _MergeJob:
    def __init__(self, rt: Runtime, inp: MergeVolumesInput) -> None:
        self.rt = rt
        self.inp = inp
        self.layout = rt.layout

    def plan(self) -> LockPlan:
        """Exclusive on base, top and top's children (whose headers a raw commit rewrites)."""
        inp = self.inp
        try:
            children = self.layout.children(inp.domain_id, inp.disk_id, inp.top_id)
        except (AgentError, OSError):
            children = []  # run() reports the problem
        return LockPlan.of([inp.base_id, inp.top_id, *children], [inp.base_parent_id])

    def _path(self, volume_id: str) -> Path:
        return self.layout.volume_path(self.inp.domain_id, self.inp.disk_id, volume_id)

    def run(self, ctx: OpContext) -> OpResult:
        inp, layout = self.inp, self.layout
        domain, disk, base, top = inp.domain_id, inp.disk_id, inp.base_id, inp.top_id
        layout.require_domain(domain)
        top_meta = require_volume(self.rt, domain, disk, top)
        # Top's children cannot change while the merge holds top's exclusive lock: the
        # finalize reuses this listing.
        children = layout.children(domain, disk, top)
        if not ctx.holds(LockPlan.of([base, top, *children], [inp.base_parent_id])):
            raise AgentError(
                Reason.CHAIN_MISMATCH,
                f"volume {top} gained children while the merge was being locked",
                {"volume_id": top},
            )
        base_present = layout.volume_exists(domain, disk, base)
        base_meta = layout.read_sidecar(domain, disk, base)
        renamed = not base_present and top_meta.parent_id == base
        if renamed and base_meta is None:
            raise _not_found(base, disk)
        top_format = base_meta.format if renamed and base_meta else top_meta.format
        if renamed and top_format is VolumeFormat.RAW and qcow2.backing_name(str(self._path(top))):
            # Top is still the qcow2 overlay of a base that vanished, not base's raw file.
            raise _not_found(base, disk)
        # Both inspections at once; base's is only needed (and only possible) while it exists.
        images = [(str(self._path(top)), top_format.qemu)]
        if base_present and base_meta is not None:
            images.append((str(self._path(base)), base_meta.format.qemu))
        top_info, *base_infos = qemu_img.infos(*images)
        top_backing = backing_id(top_info.backing_name, top)

        if not base_present:
            if top_backing != inp.base_parent_id:
                if top_backing == base:
                    raise _not_found(base, disk)
                raise _mismatch(top, base, top_backing)
            # Finished on storage by an earlier attempt; complete the bookkeeping.
            direction = MergeDirection.COMMIT if renamed else _phase_direction(ctx)
            return self._finalize(
                ctx, top_meta, children, top_format, direction, top_info.virtual_size
            )

        if base_meta is None:
            raise _not_found(base, disk)
        base_info = base_infos[0]
        base_backing = backing_id(base_info.backing_name, base)
        if base_backing != inp.base_parent_id:
            raise _mismatch(base, inp.base_parent_id, base_backing)
        if top_backing not in (base, inp.base_parent_id):
            raise _mismatch(top, base, top_backing)
        others = [c for c in layout.children(domain, disk, base) if c != top]
        if others:
            raise AgentError(
                Reason.VOLUME_HAS_CHILDREN,
                f"volume {base} has other children: {', '.join(others)}",
                {"volume_id": base, "volume_ids": ",".join(others)},
            )
        if top_backing == inp.base_parent_id:
            # A pull that finished copying; only base's deletion is left.
            return self._finalize(
                ctx,
                top_meta,
                children,
                top_meta.format,
                MergeDirection.PULL,
                top_info.virtual_size,
            )
        # Validates every backing name qemu-img will follow.
        layout.ancestors(domain, disk, base)

        direction = _phase_direction(ctx)
        if direction is MergeDirection.UNSPECIFIED:
            commit = top_info.actual_size < base_info.actual_size
            direction = MergeDirection.COMMIT if commit else MergeDirection.PULL
        copied = min(top_info.actual_size, base_info.actual_size)
        require_free_space(layout.disk_dir(domain, disk), copied)
        started = time.monotonic()
        if direction is MergeDirection.COMMIT:
            self._commit(ctx)
        else:
            self._pull(ctx)
        _log.info(
            "merge %s into %s: %s of up to %d bytes took %.2f s",
            base,
            top,
            direction.value,
            copied,
            time.monotonic() - started,
        )
        if direction is MergeDirection.COMMIT:
            return self._finalize(
                ctx, top_meta, children, base_meta.format, direction, base_info.virtual_size
            )
        return self._finalize(
            ctx, top_meta, children, top_meta.format, direction, top_info.virtual_size
        )

    def _commit(self, ctx: OpContext) -> None:
        base_path, top_path = self._path(self.inp.base_id), self._path(self.inp.top_id)
        ctx.save_phase(
            OpResult(direction=MergeDirection.COMMIT, base_modified=True),
            direction=MergeDirection.COMMIT.value,
            base_modified=True,
        )
        qemu_img.commit(
            str(top_path),
            str(base_path),
            cache=self.rt.qemu_cache(base_path),
            progress=ctx.progress,
            cancel=ctx.cancel,
            pass_fds=ctx.lock_fds,
        )
        ctx.fault_after()
        fsync_file(base_path)
        dropped = self.rt.trash.link(self.inp.domain_id, top_path)
        os.rename(base_path, top_path)
        fsync_dir(top_path.parent)
        if dropped is not None:
            # Top's old data is unlinked once the outcome is recorded, so the fsyncs of the
            # finalize and of the record do not queue behind its discards.
            self.rt.trash.release(dropped, ctx.defer)

    def _pull(self, ctx: OpContext) -> None:
        inp = self.inp
        ctx.save_phase(
            OpResult(direction=MergeDirection.PULL, base_modified=False),
            direction=MergeDirection.PULL.value,
            base_modified=False,
        )
        parent_format = None
        if inp.base_parent_id is not None:
            parent = self.layout.read_sidecar(inp.domain_id, inp.disk_id, inp.base_parent_id)
            if parent is None:
                raise _not_found(inp.base_parent_id, inp.disk_id)
            parent_format = parent.format.qemu
        top_path = self._path(inp.top_id)
        qemu_img.rebase_safe(
            str(top_path),
            inp.base_parent_id,
            parent_format,
            cache=self.rt.qemu_cache(top_path),
            progress=ctx.progress,
            cancel=ctx.cancel,
            pass_fds=ctx.lock_fds,
        )
        ctx.fault_after()

    def _finalize(
        self,
        ctx: OpContext,
        top_meta: VolumeMeta,
        children: list[str],
        survivor_format: VolumeFormat,
        direction: MergeDirection,
        virtual_size: int,
    ) -> OpResult:
        """Rewrite top's sidecar, tombstone base, remove what is left of base."""
        inp, layout = self.inp, self.layout
        # After a commit into a raw base the survivor is raw: its children's headers must say
        # so. Same backing file, same content: only the recorded format changes.
        for child in children if survivor_format is VolumeFormat.RAW else []:
            child_path = str(self._path(child))
            if qemu_img.info(child_path, "qcow2").backing_format != survivor_format.qemu:
                qemu_img.set_backing_format(child_path, inp.top_id, survivor_format.qemu)
        survivor = replace(
            top_meta,
            parent_id=inp.base_parent_id,
            format=survivor_format,
            virtual_size=virtual_size,
            op_id=ctx.op_id,
        )
        if survivor != top_meta:
            layout.write_sidecar(survivor)
        layout.write_tombstone(inp.domain_id, inp.base_id, ctx.op_id)
        self.rt.trash.drop(inp.domain_id, self._path(inp.base_id), defer=ctx.defer)
        remove_file(layout.sidecar_path(inp.domain_id, inp.disk_id, inp.base_id))
        leaf = not children
        base_modified = bool(ctx.phase.get("base_modified", direction is MergeDirection.COMMIT))
        view = view_of(self.rt, survivor, leaf)
        return OpResult(volume=view, direction=direction, base_modified=base_modified)


def _phase_direction(ctx: OpContext) -> MergeDirection:
    return MergeDirection(ctx.phase.get("direction", MergeDirection.UNSPECIFIED.value))


def _not_found(volume_id: str, disk_id: str) -> AgentError:
    return AgentError(
        Reason.VOLUME_NOT_FOUND,
        f"volume {volume_id} does not exist in disk {disk_id}",
        {"volume_id": volume_id, "disk_id": disk_id},
    )


def _mismatch(volume_id: str, expected: str | None, actual: str | None) -> AgentError:
    return AgentError(
        Reason.CHAIN_MISMATCH,
        f"volume {volume_id} is backed by {actual or 'nothing'}, "
        f"the request assumes {expected or 'nothing'}",
        {
            "volume_id": volume_id,
            "expected_parent_id": expected or "",
            "actual_parent_id": actual or "",
        },
    )
