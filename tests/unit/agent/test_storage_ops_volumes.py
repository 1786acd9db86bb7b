"""Short operations called directly (no gRPC) on a real domain with real qemu-img."""

from __future__ import annotations

import json
import os

import pytest

from storage_agent import qemu_img
from storage_agent.errors import AgentError, Reason
from storage_agent.model import OpState, VolumeFormat
from storage_agent.ops.capabilities import capabilities
from storage_agent.ops.create_volume import BaseSpec, create_volume
from storage_agent.ops.delete_volume import DeleteVolumeInput, delete_volume
from storage_agent.ops.init_domain import InitDomainInput, init_domain
from storage_agent.ops.memory_state import (
    DeleteMemoryStateInput,
    SaveMemoryStateInput,
    delete_memory_state,
    save_memory_state,
)
from storage_agent.ops.verify_volume import VerifyVolumeInput, verify_volume
from storage_agent.ops.volume_info import (
    GetVolumeInfoInput,
    ListVolumesInput,
    get_volume_info,
    list_volumes,
)
from storage_agent.runtime import Runtime
from support.qemu import Segment, assert_segments, corrupt_refcount_of_first_data_cluster
from support.qemu import write_patterns as write
from unit.agent.storage_helpers import DISK_SIZE, Disk, MiB, new_id


def fails(reason: Reason, call: object) -> AgentError:
    assert callable(call)
    with pytest.raises(AgentError) as caught:
        call()
    assert caught.value.reason is reason, caught.value
    return caught.value


def delete(disk: Disk, volume: str) -> bool:
    """Delete ``volume``; True when it was already absent."""
    inp = DeleteVolumeInput(new_id(), disk.domain_id, disk.disk_id, volume)
    result = delete_volume(disk.rt, inp).result
    assert result is not None
    return result.already_absent


def test_init_domain_is_idempotent(rt: Runtime) -> None:
    domain = new_id()
    first = init_domain(rt, InitDomainInput(new_id(), domain, "sd1"))
    again = init_domain(rt, InitDomainInput(new_id(), domain, "sd1"))
    assert first.result is not None and first.result.domain is not None
    assert first.result.domain.total_bytes > first.result.domain.free_bytes > 0
    assert again.state is OpState.DONE
    doc = json.loads((rt.layout.domain_dir(domain) / "domain.json").read_text())
    assert doc == {"id": domain, "name": "sd1", "version": 1}
    assert sorted(os.listdir(rt.layout.domain_dir(domain))) == [
        "domain.json",
        "images",
        "memory",
        "tombstones",
        "trash",
    ]
    fails(Reason.INVALID_FIELD, lambda: init_domain(rt, InitDomainInput(new_id(), new_id(), "")))


def test_unknown_or_unlisted_domains_are_not_found(rt: Runtime, disk: Disk) -> None:
    stranger = Disk(rt, new_id(), new_id())
    fails(Reason.DOMAIN_NOT_FOUND, stranger.base)


@pytest.mark.parametrize("fmt", [VolumeFormat.RAW, VolumeFormat.COW])
def test_create_base_and_overlay(disk: Disk, fmt: VolumeFormat) -> None:
    base = disk.base(fmt)
    top = disk.overlay(base)
    info = qemu_img.info(str(disk.path(top)), "qcow2")
    assert (info.backing_name, info.backing_format, info.virtual_size) == (
        base,
        fmt.qemu,
        DISK_SIZE,
    )
    meta = disk.sidecar(top)
    assert (meta.parent_id, meta.format, meta.virtual_size) == (base, VolumeFormat.COW, DISK_SIZE)
    assert sorted(os.listdir(disk.path(top).parent)) == sorted(
        [base, f"{base}.meta.json", top, f"{top}.meta.json"]
    )


def test_create_is_idempotent_by_volume_id(disk: Disk) -> None:
    base = disk.base()
    top = disk.overlay(base)
    assert disk.overlay(base, volume_id=top) == top  # new op_id, same volume
    other = disk.base()
    err = fails(Reason.VOLUME_ALREADY_EXISTS, lambda: disk.overlay(other, volume_id=top))
    assert err.metadata["parent_id"] == base
    fails(Reason.VOLUME_ALREADY_EXISTS, lambda: disk.base(volume_id=base, size=2 * DISK_SIZE))


def test_create_validates_its_arguments(disk: Disk) -> None:
    rt = disk.rt
    for size in (MiB - 512, MiB + 1, (64 << 40) + 512):
        inp = disk.create_input(new_id(), base=BaseSpec(size, VolumeFormat.RAW))
        fails(Reason.INVALID_FIELD, lambda inp=inp: create_volume(rt, inp))
    for inp in (
        disk.create_input(new_id(), base=BaseSpec(DISK_SIZE, None)),
        disk.create_input(new_id()),
    ):
        fails(Reason.INVALID_FIELD, lambda inp=inp: create_volume(rt, inp))
    fails(Reason.PARENT_NOT_FOUND, lambda: disk.overlay(new_id()))
    other_disk = Disk(rt, disk.domain_id, new_id())
    fails(Reason.PARENT_NOT_FOUND, lambda: other_disk.overlay(disk.base()))
    fails(Reason.INVALID_ID, lambda: disk.overlay("../x"))


def test_create_completes_or_replaces_crash_leftovers(disk: Disk) -> None:
    base = disk.base()
    # Renamed into place but no sidecar: completed.
    top = new_id()
    qemu_img.create_overlay(str(disk.path(top)), base, "qcow2", DISK_SIZE)
    write(disk.path(top), "qcow2", [Segment(0, MiB, 0x42)])
    assert disk.overlay(base, volume_id=top) == top
    assert disk.sidecar(top).parent_id == base
    assert_segments(disk.path(top), "qcow2", [Segment(0, MiB, 0x42)])
    # A file that does not match (and no sidecar) and a stale .tmp: recreated.
    other = new_id()
    disk.path(other).write_bytes(b"garbage")
    disk.rt.layout.tmp_path(disk.domain_id, disk.disk_id, other).write_bytes(b"x")
    assert disk.overlay(base, volume_id=other) == other
    assert qemu_img.info(str(disk.path(other)), "qcow2").backing_name == base
    assert not disk.rt.layout.tmp_path(disk.domain_id, disk.disk_id, other).exists()


def test_delete_leaves_a_tombstone_and_refuses_parents(disk: Disk) -> None:
    base = disk.base()
    top = disk.overlay(base)
    err = fails(Reason.VOLUME_HAS_CHILDREN, lambda: delete(disk, base))
    assert err.metadata["volume_ids"] == top
    assert delete(disk, top) is False
    assert not disk.path(top).exists()
    assert disk.rt.layout.is_tombstoned(disk.domain_id, top)
    assert delete(disk, top) is True
    fails(Reason.VOLUME_DELETED, lambda: disk.overlay(base, volume_id=top))
    assert delete(disk, new_id()) is True


def test_volume_info_and_listing(disk: Disk) -> None:
    rt = disk.rt
    base = disk.base(VolumeFormat.RAW)
    top = disk.overlay(base)
    write(disk.path(top), "qcow2", [Segment(0, MiB, 0x11)])
    view = get_volume_info(rt, GetVolumeInfoInput(disk.domain_id, disk.disk_id, top))
    assert (view.parent_id, view.format, view.virtual_size, view.leaf) == (
        base,
        VolumeFormat.COW,
        DISK_SIZE,
        True,
    )
    assert view.actual_size >= MiB
    stray = new_id()
    qemu_img.create_base(str(disk.path(stray)), MiB, "raw")
    listing = list_volumes(rt, ListVolumesInput(disk.domain_id, disk.disk_id))
    assert [(v.volume_id, v.leaf) for v in listing.volumes] == [(base, False), (top, True)]
    assert [(s.name, s.detail) for s in listing.strays] == [(stray, "no sidecar")]
    fails(
        Reason.VOLUME_NOT_FOUND,
        lambda: get_volume_info(rt, GetVolumeInfoInput(disk.domain_id, disk.disk_id, stray)),
    )
    empty = list_volumes(rt, ListVolumesInput(disk.domain_id, new_id()))
    assert empty.volumes == [] and empty.strays == []


def test_volume_info_reports_a_corrupt_backing_name(disk: Disk) -> None:
    base = disk.base()
    top = disk.overlay(base)
    qemu_img.set_backing_format(str(disk.path(top)), "../" + base, "qcow2")
    fails(
        Reason.CHAIN_CORRUPT,
        lambda: get_volume_info(disk.rt, GetVolumeInfoInput(disk.domain_id, disk.disk_id, top)),
    )


def test_verify(disk: Disk) -> None:
    raw, cow = disk.base(VolumeFormat.RAW), disk.base()
    write(disk.path(cow), "qcow2", [Segment(0, MiB, 0x11)])

    def verify(volume: str) -> tuple[bool, int]:
        inp = VerifyVolumeInput(new_id(), disk.domain_id, disk.disk_id, volume)
        record = verify_volume(disk.rt, inp)
        assert record.result is not None and record.result.verify is not None
        return record.result.verify.ok, record.result.verify.corruptions

    assert verify(raw) == (True, 0)
    assert verify(cow) == (True, 0)
    corrupt_refcount_of_first_data_cluster(disk.path(cow))
    ok, corruptions = verify(cow)
    assert not ok and corruptions > 0


def test_memory_state(rt: Runtime, domain_id: str) -> None:
    memory = new_id()
    fails(
        Reason.UNSUPPORTED_OPERATION,
        lambda: save_memory_state(rt, SaveMemoryStateInput(new_id(), domain_id, memory, new_id())),
    )
    directory = rt.layout.memory_dir(domain_id, memory)
    directory.mkdir()
    (directory / "dump").write_bytes(b"ram")
    (directory / "meta.json").write_text("{}")

    def remove() -> bool:
        record = delete_memory_state(rt, DeleteMemoryStateInput(new_id(), domain_id, memory))
        assert record.result is not None
        return record.result.already_absent

    assert remove() is False
    assert not directory.exists()
    assert remove() is True


def test_capabilities(rt: Runtime, domain_id: str) -> None:
    caps = capabilities(rt)
    assert caps.formats == ("raw", "qcow2")
    assert not caps.live_ops
    assert "MergeVolumes" in caps.operations and "SaveMemoryState" not in caps.operations
    assert [d.domain_id for d in caps.domains] == [domain_id]
    assert caps.qemu_img_version == qemu_img.version()
