"""CreateVolume: a base volume, or a qcow2 overlay on a parent of the same disk."""

from __future__ import annotations

import os
from dataclasses import dataclass

from storage_agent import qemu_img
from storage_agent.errors import AgentError, Reason, invalid_field
from storage_agent.faults import FaultTarget
from storage_agent.layout import (
    fsync_dir,
    fsync_file,
    publish,
    remove_file,
    require_free_space,
    stage_json,
    validate_id,
)
from storage_agent.locks import LockPlan
from storage_agent.model import OpKind, OpResult, VolumeFormat, VolumeMeta, utc_now
from storage_agent.operations import OpContext, OperationRecord, OperationSpec, params_of
from storage_agent.ops.volume_info import view_of
from storage_agent.runtime import Runtime

MIN_SIZE = 1 << 20
MAX_SIZE = 64 << 40
SECTOR = 512
NEW_VOLUME_SPACE = 1 << 20


@dataclass(frozen=True)
class BaseSpec:
    """Size and format of a new base volume; ``format`` None when the request left it unset."""

    virtual_size: int
    format: VolumeFormat | None


@dataclass(frozen=True)
class CreateVolumeInput:
    """CreateVolume's request: exactly one of ``parent_id`` and ``base``."""

    op_id: str
    domain_id: str
    disk_id: str
    volume_id: str
    parent_id: str | None = None
    base: BaseSpec | None = None


@dataclass(frozen=True)
class _Target:
    parent_id: str | None
    format: VolumeFormat
    virtual_size: int
    parent_format: VolumeFormat | None = None


def create_volume(rt: Runtime, inp: CreateVolumeInput) -> OperationRecord:
    """Create the volume (``<id>.tmp``, fsync, rename, sidecar), or confirm it exists."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.disk_id, "disk_id")
    validate_id(inp.volume_id, "volume_id")
    if inp.parent_id is not None:
        validate_id(inp.parent_id, "parent_volume_id")
    if (inp.parent_id is None) == (inp.base is None):
        raise invalid_field("source", "exactly one of parent_volume_id and base is required")
    if inp.parent_id == inp.volume_id:
        raise invalid_field("parent_volume_id", "a volume cannot be its own parent")
    if inp.base is not None:
        size = inp.base.virtual_size
        if not MIN_SIZE <= size <= MAX_SIZE or size % SECTOR:
            raise invalid_field("base.virtual_size", "1 MiB..64 TiB and a multiple of 512")
        if inp.base.format is None:
            raise invalid_field("base.format", "RAW or COW is required")
    spec = OperationSpec(
        OpKind.CREATE_VOLUME,
        inp.op_id,
        params_of(inp),
        frozenset({inp.volume_id}),
        FaultTarget("CreateVolume", inp.disk_id, frozenset({inp.volume_id})),
    )
    return rt.runner.run_short(spec, lambda ctx: _run(rt, inp, ctx))


def _run(rt: Runtime, inp: CreateVolumeInput, ctx: OpContext) -> OpResult:
    layout = rt.layout
    domain, disk, volume = inp.domain_id, inp.disk_id, inp.volume_id
    layout.require_domain(domain)
    with rt.locks.acquire(LockPlan.of([volume], [inp.parent_id])):
        if layout.is_tombstoned(domain, volume):
            raise AgentError(
                Reason.VOLUME_DELETED,
                f"volume {volume} was deleted; ids are never reused",
                {"volume_id": volume},
            )
        target = _target(rt, inp)
        existing = _existing(rt, inp, target, ctx.op_id)
        if existing is not None:
            leaf = not layout.children(domain, disk, volume)
            return OpResult(volume=view_of(rt, existing, leaf))
        disk_dir = layout.disk_dir(domain, disk)
        try:
            disk_dir.mkdir(mode=0o755, parents=True)
        except FileExistsError:
            pass
        else:
            fsync_dir(disk_dir.parent)  # the disk's first volume: make its directory durable
        require_free_space(disk_dir, NEW_VOLUME_SPACE)
        path = layout.volume_path(domain, disk, volume)
        tmp = layout.tmp_path(domain, disk, volume)
        staged = layout.staged_sidecar_path(domain, disk, volume)
        # Leftovers from a crashed attempt; the exclusive lock makes them ours.
        tmp.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
        # qemu-img create silently overwrites, so the file is claimed with O_EXCL first.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        meta = _meta(inp, target, ctx.op_id)
        try:
            if target.parent_id is not None:
                assert target.parent_format is not None
                started = qemu_img.start_create_overlay(
                    str(tmp), target.parent_id, target.parent_format.qemu, target.virtual_size
                )
            else:
                started = qemu_img.start_create_base(
                    str(tmp), target.virtual_size, target.format.qemu
                )
            try:
                # While qemu-img runs: write and fsync the sidecar under a temporary name.
                stage_json(staged, meta.to_json())
            except BaseException:
                started.cancel()
                raise
            started.wait()
            fsync_file(tmp)
            os.rename(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            staged.unlink(missing_ok=True)
            raise
        # Only now the sidecar appears; the fsync of the disk directory makes both renames
        # durable.
        publish(staged, layout.sidecar_path(domain, disk, volume))
    return OpResult(volume=view_of(rt, meta, leaf=True))


def _target(rt: Runtime, inp: CreateVolumeInput) -> _Target:
    if inp.base is not None:
        assert inp.base.format is not None
        return _Target(None, inp.base.format, inp.base.virtual_size)
    assert inp.parent_id is not None
    parent = rt.layout.read_sidecar(inp.domain_id, inp.disk_id, inp.parent_id)
    if parent is None or not rt.layout.volume_exists(inp.domain_id, inp.disk_id, inp.parent_id):
        raise AgentError(
            Reason.PARENT_NOT_FOUND,
            f"parent volume {inp.parent_id} does not exist in disk {inp.disk_id}",
            {"parent_volume_id": inp.parent_id, "disk_id": inp.disk_id},
        )
    return _Target(parent.volume_id, VolumeFormat.COW, parent.virtual_size, parent.format)


def _meta(inp: CreateVolumeInput, target: _Target, op_id: str) -> VolumeMeta:
    return VolumeMeta(
        volume_id=inp.volume_id,
        disk_id=inp.disk_id,
        domain_id=inp.domain_id,
        parent_id=target.parent_id,
        format=target.format,
        virtual_size=target.virtual_size,
        created_at=utc_now(),
        op_id=op_id,
    )


def _existing(
    rt: Runtime, inp: CreateVolumeInput, target: _Target, op_id: str
) -> VolumeMeta | None:
    """The matching existing volume (completing a crashed create), or None to create it.

    A different existing volume is VOLUME_ALREADY_EXISTS.
    """
    layout = rt.layout
    domain, disk, volume = inp.domain_id, inp.disk_id, inp.volume_id
    meta = layout.read_sidecar(domain, disk, volume)
    present = layout.volume_exists(domain, disk, volume)
    if meta is not None and present:
        if (meta.parent_id, meta.format, meta.virtual_size) != (
            target.parent_id,
            target.format,
            target.virtual_size,
        ):
            raise AgentError(
                Reason.VOLUME_ALREADY_EXISTS,
                f"volume {volume} already exists with different parameters",
                {
                    "volume_id": volume,
                    "parent_id": meta.parent_id or "",
                    "format": meta.format.value,
                    "virtual_size": str(meta.virtual_size),
                },
            )
        return meta
    if meta is not None:
        # A sidecar whose file is gone: a stale leftover.
        remove_file(layout.sidecar_path(domain, disk, volume))
        return None
    if not present:
        return None
    # The file was renamed into place but the sidecar never written: inspect it.
    path = layout.volume_path(domain, disk, volume)
    try:
        info = qemu_img.info(str(path), target.format.qemu)
    except qemu_img.QemuImgError:
        info = None
    if (
        info is not None
        and info.virtual_size == target.virtual_size
        and info.backing_name == target.parent_id
        and (target.parent_format is None or info.backing_format == target.parent_format.qemu)
    ):
        meta = _meta(inp, target, op_id)
        layout.write_sidecar(meta)
        layout.staged_sidecar_path(domain, disk, volume).unlink(missing_ok=True)
        return meta
    remove_file(path)
    return None
