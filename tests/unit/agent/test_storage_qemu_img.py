"""qemu_img wrappers against the real qemu-img on small files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from storage_agent import qemu_img
from support.qemu import Segment, assert_segments, corrupt_refcount_of_first_data_cluster
from support.qemu import write_patterns as write
from unit.agent.storage_helpers import MiB

SIZE = 8 * MiB


def chain(tmp_path: Path, *layers: tuple[str, list[Segment]]) -> list[Path]:
    """qcow2 images named after ``layers``, each backed by the previous one, with data."""
    paths: list[Path] = []
    for name, segments in layers:
        path = tmp_path / name
        if paths:
            qemu_img.create_overlay(str(path), paths[-1].name, "qcow2", SIZE)
        else:
            qemu_img.create_base(str(path), SIZE, "qcow2")
        write(path, "qcow2", segments)
        paths.append(path)
    return paths


def test_version_is_a_dotted_number() -> None:
    assert qemu_img.version().split(".")[0].isdigit()


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_create_base_and_info(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "base"
    qemu_img.create_base(str(path), SIZE, fmt)
    info = qemu_img.info(str(path), fmt)
    assert (info.format, info.virtual_size, info.backing_name) == (fmt, SIZE, None)
    assert not info.corrupt


def test_overlay_has_relative_backing_and_is_created_without_opening_it(tmp_path: Path) -> None:
    path = tmp_path / "top"
    qemu_img.create_overlay(str(path), "missing-parent", "raw", SIZE)
    info = qemu_img.info(str(path), "qcow2")
    assert (info.backing_name, info.backing_format, info.virtual_size) == (
        "missing-parent",
        "raw",
        SIZE,
    )


def test_failure_carries_command_rc_and_stderr(tmp_path: Path) -> None:
    with pytest.raises(qemu_img.QemuImgError) as caught:
        qemu_img.info(str(tmp_path / "absent"), "qcow2")
    assert caught.value.rc == 1
    assert caught.value.cmd[:2] == ("qemu-img", "info")
    assert "No such file" in caught.value.stderr


def test_check_reports_clean_and_corrupt_images(tmp_path: Path) -> None:
    (path,) = chain(tmp_path, ("img", [Segment(0, MiB, 0x11)]))
    assert qemu_img.check(str(path)).ok
    corrupt_refcount_of_first_data_cluster(path)
    report = qemu_img.check(str(path))
    assert report.corruptions > 0 and not report.ok


def test_commit_with_base_keeps_top_intact_and_reports_progress(tmp_path: Path) -> None:
    base, top = chain(
        tmp_path, ("base", [Segment(0, 2 * MiB, 0x11)]), ("top", [Segment(MiB, MiB, 0x22)])
    )
    top_size = qemu_img.info(str(top), "qcow2").actual_size
    seen: list[float] = []
    qemu_img.commit(str(top), str(base), cache="writeback", progress=seen.append)
    assert seen and seen[-1] == 100.0
    assert_segments(base, "qcow2", [Segment(0, MiB, 0x11), Segment(MiB, MiB, 0x22)])
    assert qemu_img.info(str(top), "qcow2").actual_size == top_size
    assert_segments(top, "qcow2", [Segment(0, MiB, 0x11), Segment(MiB, MiB, 0x22)])


@pytest.mark.parametrize("onto_base", [True, False])
def test_safe_rebase_preserves_content(tmp_path: Path, onto_base: bool) -> None:
    base, _mid, top = chain(
        tmp_path,
        ("base", [Segment(0, MiB, 0x11)]),
        ("mid", [Segment(MiB, MiB, 0x22)]),
        ("top", [Segment(2 * MiB, MiB, 0x33)]),
    )
    new_backing = base.name if onto_base else None
    qemu_img.rebase_safe(str(top), new_backing, "qcow2", cache="none")
    assert qemu_img.info(str(top), "qcow2").backing_name == new_backing
    expected = [Segment(0, MiB, 0x11), Segment(MiB, MiB, 0x22), Segment(2 * MiB, MiB, 0x33)]
    assert_segments(top, "qcow2", expected)


def test_cancel_terminates_the_child(tmp_path: Path) -> None:
    base, top = chain(tmp_path, ("base", []), ("top", [Segment(0, MiB, 0x22)]))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(qemu_img.QemuImgError, match="cancelled"):
        qemu_img.commit(str(top), str(base), cache="none", cancel=cancel)


def test_set_backing_format_rewrites_only_the_format(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    qemu_img.create_base(str(raw), SIZE, "raw")
    write(raw, "raw", [Segment(0, MiB, 0x11)])
    top = tmp_path / "top"
    qemu_img.create_overlay(str(top), raw.name, "qcow2", SIZE)
    qemu_img.set_backing_format(str(top), raw.name, "raw")
    info = qemu_img.info(str(top), "qcow2")
    assert (info.backing_name, info.backing_format) == (raw.name, "raw")
    assert_segments(top, "qcow2", [Segment(0, MiB, 0x11)])


def test_cache_mode(tmp_path: Path) -> None:
    path = tmp_path / "img"
    qemu_img.create_base(str(path), SIZE, "raw")
    assert qemu_img.cache_mode("writeback", str(path)) == "writeback"
    assert qemu_img.cache_mode("none", str(path)) == "none"  # ext4 accepts O_DIRECT
