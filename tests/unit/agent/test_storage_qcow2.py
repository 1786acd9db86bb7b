"""Reading the backing name from a qcow2 header."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage_agent import qcow2, qemu_img

SIZE = 1 << 20


def test_backing_name_from_header(tmp_path: Path) -> None:
    base, top = tmp_path / "base", tmp_path / "top"
    qemu_img.create_base(str(base), SIZE, "qcow2")
    qemu_img.create_overlay(str(top), "base", "qcow2", SIZE)
    assert qcow2.backing_name(str(top)) == "base"
    assert qcow2.backing_name(str(base)) is None


def test_raw_and_short_files_have_no_backing(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    qemu_img.create_base(str(raw), SIZE, "raw")
    short = tmp_path / "short"
    short.write_bytes(qcow2.MAGIC)
    assert qcow2.backing_name(str(raw)) is None
    assert qcow2.backing_name(str(short)) is None


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    qemu_img.create_overlay(str(target), "base", "qcow2", SIZE)
    link = tmp_path / "link"
    os.symlink(target, link)
    with pytest.raises(OSError):
        qcow2.backing_name(str(link))
