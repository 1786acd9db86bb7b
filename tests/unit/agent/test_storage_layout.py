"""Ids, path confinement, sidecars, directory scans and chain walks."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from storage_agent import qemu_img
from storage_agent.errors import AgentError, Reason
from storage_agent.layout import (
    Layout,
    atomic_write_json,
    backing_id,
    read_json,
    validate_id,
    validate_op_id,
)
from storage_agent.model import VolumeFormat
from storage_agent.runtime import Runtime
from unit.agent.storage_helpers import Disk, new_id

GOOD_ID = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"


def reason_of(exc: pytest.ExceptionInfo[AgentError]) -> Reason:
    return exc.value.reason


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-a-uuid",
        GOOD_ID.upper(),
        GOOD_ID + "\n",
        " " + GOOD_ID,
        GOOD_ID.replace("-", ""),
        "00000000-0000-0000-0000-000000000000",
        "../" + GOOD_ID,
        GOOD_ID + "/..",
        "..",
    ],
)
def test_invalid_ids_are_refused(value: str) -> None:
    with pytest.raises(AgentError) as caught:
        validate_id(value, "volume_id")
    assert reason_of(caught) is Reason.INVALID_ID
    assert caught.value.metadata["field"] == "volume_id"


@pytest.mark.parametrize("suffix", ["", ":0", ":17", ":17:undo", ":undo"])
def test_op_id_formats(suffix: str) -> None:
    assert validate_op_id(GOOD_ID + suffix) == GOOD_ID + suffix


@pytest.mark.parametrize("value", ["", "x", GOOD_ID + ":", GOOD_ID + ":abc", GOOD_ID + ":1\n"])
def test_bad_op_ids(value: str) -> None:
    with pytest.raises(AgentError) as caught:
        validate_op_id(value)
    assert reason_of(caught) is Reason.INVALID_FIELD
    assert caught.value.metadata["field"] == "op_id"


def test_backing_names_must_be_bare_ids() -> None:
    assert backing_id(None, GOOD_ID) is None
    assert backing_id("", GOOD_ID) is None
    assert backing_id(GOOD_ID, "x") == GOOD_ID
    for name in ("/etc/passwd", "../" + GOOD_ID, "./" + GOOD_ID, "json:{}"):
        with pytest.raises(AgentError) as caught:
            backing_id(name, GOOD_ID)
        assert reason_of(caught) is Reason.CHAIN_CORRUPT


def test_paths_are_confined(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / GOOD_ID / "images").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    layout = Layout(root)
    disk = new_id()
    assert layout.disk_dir(GOOD_ID, disk) == root / GOOD_ID / "images" / disk
    (root / GOOD_ID / "images" / disk).symlink_to(outside)
    with pytest.raises(AgentError) as caught:
        layout.volume_path(GOOD_ID, disk, new_id())
    assert reason_of(caught) is Reason.PATH_OUTSIDE_ROOT
    with pytest.raises(AgentError) as caught:
        layout.volume_path(GOOD_ID, "..", new_id())
    assert reason_of(caught) is Reason.PATH_OUTSIDE_ROOT


def test_symlinked_volume_file_and_domain_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    disk_dir = root / GOOD_ID / "images" / "d"
    disk_dir.mkdir(parents=True)
    volume = new_id()
    (disk_dir / volume).symlink_to("/etc/passwd")
    other_domain = new_id()
    (root / other_domain).symlink_to(tmp_path)
    layout = Layout(root)
    for call in (
        lambda: layout.volume_path(GOOD_ID, "d", volume),
        lambda: layout.volume_exists(GOOD_ID, "d", volume),
        lambda: layout.domain_dir(other_domain),
        lambda: layout.tombstone_path(other_domain, volume),
    ):
        with pytest.raises(AgentError) as caught:
            call()
        assert reason_of(caught) is Reason.PATH_OUTSIDE_ROOT


def test_a_symlinked_root_is_resolved_once(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    layout = Layout(tmp_path / "link")
    assert layout.domain_dir(GOOD_ID) == real / GOOD_ID


def test_atomic_json_round_trip_and_no_symlink_reads(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    assert read_json(tmp_path / "absent.json") is None
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]
    (tmp_path / "link.json").symlink_to(path)
    with pytest.raises(OSError):
        read_json(tmp_path / "link.json")


def test_list_disk_classifies_strays(rt: Runtime, disk: Disk) -> None:
    volume = disk.base()
    disk_dir = disk.path(volume).parent
    data_only, sidecar_only = new_id(), new_id()
    qemu_img.create_base(str(disk_dir / data_only), 1 << 20, "raw")
    (disk_dir / f"{sidecar_only}.meta.json").write_text("{}")
    (disk_dir / f"{new_id()}.tmp").write_text("")
    (disk_dir / "notes.txt").write_text("")
    (disk_dir / new_id()).symlink_to(disk.path(volume))
    listing = rt.layout.list_disk(disk.domain_id, disk.disk_id)
    assert set(listing.volumes) == {volume}
    assert listing.data_only == {data_only}
    details = sorted(stray.detail for stray in listing.strays)
    assert details == [
        "no sidecar",
        "not a regular file",
        "sidecar without volume",
        "temporary file",
        "unexpected file",
    ]


def test_children_and_ancestors(rt: Runtime, disk: Disk) -> None:
    root = disk.base(VolumeFormat.RAW)
    mid = disk.overlay(root)
    left, right = disk.overlay(mid), disk.overlay(mid)
    layout = rt.layout
    assert layout.children(disk.domain_id, disk.disk_id, mid) == sorted([left, right])
    assert layout.children(disk.domain_id, disk.disk_id, left) == []
    assert layout.ancestors(disk.domain_id, disk.disk_id, left) == [mid, root]
    assert layout.ancestors(disk.domain_id, disk.disk_id, root) == []


def test_corrupt_chains_are_reported(rt: Runtime, disk: Disk) -> None:
    base = disk.base()
    a, b = disk.overlay(base), disk.overlay(base)
    # a <-> b: a cycle written behind the agent's back.
    qemu_img.set_backing_format(str(disk.path(a)), b, "qcow2")
    qemu_img.set_backing_format(str(disk.path(b)), a, "qcow2")
    with pytest.raises(AgentError) as caught:
        rt.layout.ancestors(disk.domain_id, disk.disk_id, a)
    assert reason_of(caught) is Reason.CHAIN_CORRUPT
    qemu_img.set_backing_format(str(disk.path(b)), "/etc/passwd", "raw")
    with pytest.raises(AgentError) as caught:
        rt.layout.ancestors(disk.domain_id, disk.disk_id, b)
    assert reason_of(caught) is Reason.CHAIN_CORRUPT


def test_old_tombstones_are_pruned(rt: Runtime, domain_id: str) -> None:
    old, recent = new_id(), new_id()
    rt.layout.write_tombstone(domain_id, old, new_id())
    rt.layout.write_tombstone(domain_id, recent, new_id())
    path = rt.layout.tombstone_path(domain_id, old)
    doc = json.loads(path.read_text())
    doc["deleted_at"] = "2000-01-01T00:00:00.000000Z"
    path.write_text(json.dumps(doc))
    assert rt.layout.prune_tombstones(timedelta(days=7)) == 1
    assert not rt.layout.is_tombstoned(domain_id, old)
    assert rt.layout.is_tombstoned(domain_id, recent)
    assert sorted(os.listdir(path.parent)) == [recent]


def test_trash_drops_now_and_unlinks_later(rt: Runtime, disk: Disk) -> None:
    volume, kept = disk.base(), disk.base()
    assert rt.trash.drop(disk.domain_id, disk.path(volume))
    assert not disk.path(volume).exists()
    assert not rt.trash.drop(disk.domain_id, disk.path(volume))
    slot = rt.trash.link(disk.domain_id, disk.path(kept))
    assert slot is not None and os.path.samefile(slot, disk.path(kept))
    rt.trash.empty()
    assert os.listdir(rt.layout.trash_dir(disk.domain_id)) == []
    assert disk.path(kept).is_file()
