"""MergeVolumes and RebaseVolume with real data: both directions, resumption, faults."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from storage_agent import qemu_img
from storage_agent.config import AgentSettings
from storage_agent.errors import AgentError, Reason
from storage_agent.model import MergeDirection, OpState, VolumeFormat
from storage_agent.operations import OperationRecord
from storage_agent.ops.create_volume import BaseSpec, create_volume
from storage_agent.ops.merge_volumes import MergeVolumesInput, merge_volumes
from storage_agent.runtime import Runtime, build_runtime
from support.qemu import Segment, assert_segments, check_image
from support.qemu import write_patterns as write
from unit.agent.storage_helpers import DISK_SIZE, Disk, MiB, new_id, wait

BASE_DATA = [Segment(0, 2 * MiB, 0x11)]
TOP_DATA = [Segment(MiB, MiB, 0x22)]
# What top reads as before and after any merge of base into it.
TOP_VIEW = [Segment(0, MiB, 0x11), Segment(MiB, MiB, 0x22), Segment(2 * MiB, MiB, 0x00)]
BIG = [Segment(4 * MiB, 4 * MiB, 0x33)]


def build(
    disk: Disk, *, bigger: str, base_fmt: VolumeFormat = VolumeFormat.COW, with_root: bool = False
) -> tuple[str | None, str, str]:
    """(base_parent, base, top) with data; ``bigger`` ("base" or "top") decides the direction."""
    base_parent = disk.base() if with_root else None
    base = disk.overlay(base_parent) if base_parent else disk.base(base_fmt)
    fmt = "qcow2" if base_parent else base_fmt.qemu
    write(disk.path(base), fmt, BASE_DATA + (BIG if bigger == "base" else []))
    top = disk.overlay(base)
    write(disk.path(top), "qcow2", TOP_DATA + (BIG if bigger == "top" else []))
    return base_parent, base, top


def expect_merged(
    disk: Disk,
    record: OperationRecord,
    base_parent: str | None,
    base: str,
    top: str,
    direction: MergeDirection,
) -> None:
    assert record.state is OpState.DONE, record.error
    assert record.result is not None and record.result.volume is not None
    assert record.result.direction is direction
    assert record.result.base_modified is (direction is MergeDirection.COMMIT)
    survivor = record.result.volume
    assert (survivor.volume_id, survivor.parent_id) == (top, base_parent)
    assert not disk.path(base).exists()
    assert not disk.rt.layout.sidecar_path(disk.domain_id, disk.disk_id, base).exists()
    assert disk.rt.layout.is_tombstoned(disk.domain_id, base)
    meta = disk.sidecar(top)
    assert (meta.parent_id, meta.format) == (base_parent, survivor.format)
    info = qemu_img.info(str(disk.path(top)), meta.format.qemu)
    assert info.backing_name == base_parent


@pytest.mark.parametrize(
    ("bigger", "direction"), [("base", MergeDirection.COMMIT), ("top", MergeDirection.PULL)]
)
@pytest.mark.parametrize("with_root", [False, True])
def test_merge_in_both_directions(
    disk: Disk, bigger: str, direction: MergeDirection, with_root: bool
) -> None:
    base_parent, base, top = build(disk, bigger=bigger, with_root=with_root)
    record = disk.merge(base, top, base_parent)
    expect_merged(disk, record, base_parent, base, top, direction)
    assert_segments(disk.path(top), "qcow2", TOP_VIEW)
    check_image(disk.path(top), "qcow2")


def test_commit_into_a_raw_root_fixes_the_childrens_backing_format(disk: Disk) -> None:
    _, base, top = build(disk, bigger="base", base_fmt=VolumeFormat.RAW)
    child = disk.overlay(top)
    write(disk.path(child), "qcow2", [Segment(2 * MiB, MiB, 0x44)])
    record = disk.merge(base, top, None)
    expect_merged(disk, record, None, base, top, MergeDirection.COMMIT)
    assert disk.sidecar(top).format is VolumeFormat.RAW
    assert record.result is not None and record.result.volume is not None
    assert not record.result.volume.leaf
    assert qemu_img.info(str(disk.path(child)), "qcow2").backing_format == "raw"
    assert_segments(disk.path(child), "qcow2", [*TOP_VIEW[:2], Segment(2 * MiB, MiB, 0x44)])


def test_merge_refusals(disk: Disk) -> None:
    base_parent, base, top = build(disk, bigger="top", with_root=True)
    with pytest.raises(AgentError) as caught:
        merge_volumes(
            disk.rt,
            MergeVolumesInput(new_id(), disk.domain_id, disk.disk_id, base, top, None, base),
        )
    assert caught.value.reason is Reason.UNSUPPORTED_SURVIVOR

    def failure(base_parent_id: str | None) -> str:
        record = disk.merge(base, top, base_parent_id)
        assert record.state is OpState.FAILED and record.error is not None
        return record.error.reason

    assert failure(None) == "CHAIN_MISMATCH"
    assert failure(new_id()) == "CHAIN_MISMATCH"
    disk.overlay(base)
    assert failure(base_parent) == "VOLUME_HAS_CHILDREN"
    assert_segments(disk.path(top), "qcow2", TOP_VIEW)


def test_resume_after_the_commit_before_the_rename(disk: Disk) -> None:
    base_parent, base, top = build(disk, bigger="base", with_root=True)
    qemu_img.commit(str(disk.path(top)), str(disk.path(base)), cache="none")
    record = disk.merge(base, top, base_parent)
    expect_merged(disk, record, base_parent, base, top, MergeDirection.COMMIT)
    assert_segments(disk.path(top), "qcow2", TOP_VIEW)


@pytest.mark.parametrize("base_fmt", [VolumeFormat.RAW, VolumeFormat.COW])
def test_resume_after_the_rename_before_the_sidecars(disk: Disk, base_fmt: VolumeFormat) -> None:
    _, base, top = build(disk, bigger="base", base_fmt=base_fmt)
    qemu_img.commit(str(disk.path(top)), str(disk.path(base)), cache="none")
    os.rename(disk.path(base), disk.path(top))
    record = disk.merge(base, top, None)
    expect_merged(disk, record, None, base, top, MergeDirection.COMMIT)
    assert disk.sidecar(top).format is base_fmt
    assert_segments(disk.path(top), base_fmt.qemu, TOP_VIEW)


def test_resume_after_the_pull_before_deleting_base(disk: Disk) -> None:
    base_parent, base, top = build(disk, bigger="top", with_root=True)
    assert base_parent is not None
    qemu_img.rebase_safe(str(disk.path(top)), base_parent, "qcow2", cache="none")
    record = disk.merge(base, top, base_parent)
    expect_merged(disk, record, base_parent, base, top, MergeDirection.PULL)
    assert_segments(disk.path(top), "qcow2", TOP_VIEW)


def test_a_finished_merge_is_done_again(disk: Disk) -> None:
    base_parent, base, top = build(disk, bigger="top", with_root=True)
    first = disk.merge(base, top, base_parent)
    again = disk.merge(base, top, base_parent)
    assert again.state is OpState.DONE and again.op_id != first.op_id
    assert again.result is not None and again.result.volume is not None
    assert again.result.volume.parent_id == base_parent


@pytest.fixture
def faulty_rt(settings: AgentSettings, tmp_path: Path) -> Runtime:
    faults = tmp_path / "faults.json"
    faults.write_text("[]")
    return build_runtime(replace(settings, allow_fault_injection=True, faults_file=faults))


def test_an_injected_failure_after_the_copy_leaves_a_state_a_new_op_id_finishes(
    faulty_rt: Runtime, domain_id: str, tmp_path: Path
) -> None:
    disk = Disk(faulty_rt, domain_id, new_id())
    base_parent, base, top = build(disk, bigger="base", with_root=True)
    rule = {"op": "MergeVolumes", "disk_id": disk.disk_id, "when": "after", "times": 1}
    (tmp_path / "faults.json").write_text(json.dumps([rule]))
    failed = disk.merge(base, top, base_parent)
    assert failed.state is OpState.FAILED and failed.error is not None
    assert failed.error.reason == "INJECTED_FAULT"
    assert failed.result is not None and failed.result.base_modified
    assert json.loads((tmp_path / "faults.json").read_text())[0]["times"] == 0
    assert disk.path(base).exists()
    record = disk.merge(base, top, base_parent)
    expect_merged(disk, record, base_parent, base, top, MergeDirection.COMMIT)
    assert_segments(disk.path(top), "qcow2", TOP_VIEW)
    faulty_rt.runner.shutdown()


def test_an_injected_failure_before_records_nothing(
    faulty_rt: Runtime, domain_id: str, tmp_path: Path
) -> None:
    disk = Disk(faulty_rt, domain_id, new_id())
    rule = {"op": "CreateVolume", "disk_id": "*", "code": "UNAVAILABLE", "times": 1}
    (tmp_path / "faults.json").write_text(json.dumps([rule]))
    volume = new_id()
    inp = disk.create_input(volume, base=BaseSpec(DISK_SIZE, VolumeFormat.COW))
    with pytest.raises(AgentError) as caught:
        create_volume(faulty_rt, inp)
    assert caught.value.reason is Reason.INJECTED_FAULT and caught.value.retryable
    assert not disk.path(volume).exists()
    assert create_volume(faulty_rt, inp).state is OpState.DONE
    faulty_rt.runner.shutdown()


def test_rebase_preserves_content(disk: Disk) -> None:
    root = disk.base()
    write(disk.path(root), "qcow2", [Segment(0, MiB, 0x11)])
    mid = disk.overlay(root)
    write(disk.path(mid), "qcow2", [Segment(MiB, MiB, 0x22)])
    top = disk.overlay(mid)
    view = [Segment(0, MiB, 0x11), Segment(MiB, MiB, 0x22)]
    for new_parent in (root, None, mid):
        record = disk.rebase(top, new_parent)
        assert record.state is OpState.DONE, record.error
        assert disk.sidecar(top).parent_id == new_parent
        assert qemu_img.info(str(disk.path(top)), "qcow2").backing_name == new_parent
        assert_segments(disk.path(top), "qcow2", view)
    assert disk.rebase(top, mid).state is OpState.DONE


def test_rebase_refusals(disk: Disk) -> None:
    root = disk.base(VolumeFormat.RAW)
    mid = disk.overlay(root)
    top = disk.overlay(mid)

    def reason(volume: str, new_parent: str | None) -> str:
        record = wait(disk.rt, disk.rebase(volume, new_parent).op_id)
        assert record.state is OpState.FAILED and record.error is not None
        return record.error.reason

    assert reason(mid, top) == "CHAIN_MISMATCH"  # onto its own descendant
    assert reason(root, mid) == "CHAIN_MISMATCH"  # a raw volume has no backing
    assert reason(top, new_id()) == "PARENT_NOT_FOUND"
    assert reason(new_id(), root) == "VOLUME_NOT_FOUND"
