"""GetVolumeInfo and ListVolumes: qemu-img info plus the sidecar (no locks taken)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from storage_agent import qemu_img
from storage_agent.errors import AgentError, Reason, as_agent_error
from storage_agent.layout import allocated_size, backing_id, validate_id
from storage_agent.model import StrayFile, VolumeFormat, VolumeMeta, VolumeView
from storage_agent.runtime import Runtime


@dataclass(frozen=True)
class GetVolumeInfoInput:
    """GetVolumeInfo's request."""

    domain_id: str
    disk_id: str
    volume_id: str


@dataclass(frozen=True)
class ListVolumesInput:
    """ListVolumes' request."""

    domain_id: str
    disk_id: str
    recorded_only: bool = False


@dataclass(frozen=True)
class VolumeListing:
    """A disk's volumes, oldest first, and its stray files."""

    volumes: list[VolumeView]
    strays: list[StrayFile]


def get_volume_info(rt: Runtime, inp: GetVolumeInfoInput) -> VolumeView:
    """One volume from qemu-img info and its sidecar."""
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.disk_id, "disk_id")
    validate_id(inp.volume_id, "volume_id")
    rt.layout.require_domain(inp.domain_id)
    meta = require_volume(rt, inp.domain_id, inp.disk_id, inp.volume_id)
    leaf = not rt.layout.children(inp.domain_id, inp.disk_id, inp.volume_id)
    return inspect(rt, meta, leaf)


def list_volumes(rt: Runtime, inp: ListVolumesInput) -> VolumeListing:
    """Every complete volume of the disk, oldest first; anything else is a stray file.

    ``recorded_only``: each volume as its sidecar records it (see ``view_of``), no qemu-img.
    """
    validate_id(inp.domain_id, "domain_id")
    validate_id(inp.disk_id, "disk_id")
    rt.layout.require_domain(inp.domain_id)
    listing = rt.layout.list_disk(inp.domain_id, inp.disk_id)
    strays = list(listing.strays)
    views: list[VolumeView] = []
    for meta in listing.volumes.values():
        try:
            views.append(
                view_of(rt, meta, leaf=True) if inp.recorded_only else inspect(rt, meta, leaf=True)
            )
        except Exception as exc:  # one unreadable volume must not hide the others
            err = as_agent_error(exc)
            strays.append(StrayFile(meta.volume_id, f"unreadable ({err.reason}): {err.message}"))
    parents = {view.parent_id for view in views}
    for volume_id in listing.data_only:
        try:
            parents.add(rt.layout.header_backing(inp.domain_id, inp.disk_id, volume_id, fmt=None))
        except OSError:
            continue
    views = [replace(view, leaf=view.volume_id not in parents) for view in views]
    views.sort(key=lambda view: (view.created_at, view.volume_id))
    strays.sort(key=lambda stray: stray.name)
    return VolumeListing(views, strays)


def require_volume(rt: Runtime, domain_id: str, disk_id: str, volume_id: str) -> VolumeMeta:
    """The sidecar of an existing volume (file and sidecar), else VOLUME_NOT_FOUND."""
    meta = rt.layout.read_sidecar(domain_id, disk_id, volume_id)
    if meta is None or not rt.layout.volume_exists(domain_id, disk_id, volume_id):
        raise AgentError(
            Reason.VOLUME_NOT_FOUND,
            f"volume {volume_id} does not exist in disk {disk_id}",
            {"volume_id": volume_id, "disk_id": disk_id},
        )
    return meta


def inspect(rt: Runtime, meta: VolumeMeta, leaf: bool) -> VolumeView:
    """The volume as storage sees it (format, sizes, backing), with the sidecar's identity."""
    path = rt.layout.volume_path(meta.domain_id, meta.disk_id, meta.volume_id)
    info = qemu_img.info(str(path), meta.format.qemu)
    return VolumeView(
        volume_id=meta.volume_id,
        disk_id=meta.disk_id,
        domain_id=meta.domain_id,
        parent_id=backing_id(info.backing_name, meta.volume_id),
        format=VolumeFormat.from_qemu(info.format),
        virtual_size=info.virtual_size,
        actual_size=info.actual_size,
        created_at=meta.created_at,
        op_id=meta.op_id,
        leaf=leaf,
    )


def view_of(rt: Runtime, meta: VolumeMeta, leaf: bool) -> VolumeView:
    """The volume as its sidecar describes it, with the allocated size (no qemu-img spawn)."""
    path = rt.layout.volume_path(meta.domain_id, meta.disk_id, meta.volume_id)
    return VolumeView(
        volume_id=meta.volume_id,
        disk_id=meta.disk_id,
        domain_id=meta.domain_id,
        parent_id=meta.parent_id,
        format=meta.format,
        virtual_size=meta.virtual_size,
        actual_size=allocated_size(path),
        created_at=meta.created_at,
        op_id=meta.op_id,
        leaf=leaf,
    )
