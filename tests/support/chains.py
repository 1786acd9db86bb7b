"""Build volume chains through the agent, fill them with known data, and check them.

Each layer is created through CreateVolume and then written directly with qemu-io before
its child exists, so the expected content of layer i is layer i-1's content overlaid with
layer i's writes. Checks read every byte of a volume (zero runs included).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from support import qemu
from support.agent import COW, FORMAT_NAMES, RAW, AgentDriver, expect_done
from support.content import DiskContent, Write
from support.ids import new_uuid


@dataclass
class Layer:
    """One volume of a built chain and what it must read as."""

    volume_id: str
    parent_id: str
    fmt: str
    content: DiskContent


@dataclass
class Chain:
    """A disk's chain, base first."""

    disk_id: str
    size: int
    layers: list[Layer] = field(default_factory=list)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    @property
    def ids(self) -> list[str]:
        return [layer.volume_id for layer in self.layers]

    def expected(self) -> dict[str, DiskContent]:
        return {layer.volume_id: layer.content for layer in self.layers}


def build_chain(
    driver: AgentDriver,
    size: int,
    layer_writes: Sequence[Iterable[Write]],
    *,
    disk_id: str | None = None,
    base_fmt: int = COW,
    parent: Layer | None = None,
) -> Chain:
    """Create a base (or overlays on `parent`) plus one overlay per further entry; fill each."""
    chain = Chain(disk_id or new_uuid(), size)
    below = parent
    for writes in layer_writes:
        volume_id = new_uuid()
        if below is None:
            expect_done(driver.create_base(chain.disk_id, volume_id, size=size, fmt=base_fmt))
            fmt, base_content = FORMAT_NAMES[base_fmt], DiskContent(size)
        else:
            expect_done(driver.create_overlay(chain.disk_id, below.volume_id, volume_id))
            fmt, base_content = "qcow2", below.content
        writes = list(writes)
        path = driver.volume_path(chain.disk_id, volume_id)
        qemu.write_patterns(path, fmt, [w.segment() for w in writes])
        layer = Layer(
            volume_id, below.volume_id if below else "", fmt, base_content.overlay(writes)
        )
        chain.layers.append(layer)
        below = layer
    return chain


def assert_contents(driver: AgentDriver, disk_id: str, expected: Mapping[str, DiskContent]) -> None:
    """Every listed volume reads exactly as expected, byte range by byte range."""
    for volume_id, content in expected.items():
        path = driver.volume_path(disk_id, volume_id)
        fmt = str(qemu.info(path)["format"])
        qemu.assert_segments(path, fmt, content.segments())


def assert_storage_matches_listing(driver: AgentDriver, disk_id: str) -> dict[str, str]:
    """ListVolumes agrees with `qemu-img info --backing-chain` for every volume of the disk.

    Checks parents (bare ids), formats and virtual sizes; no stray files; every image is clean.
    Returns {volume_id: parent_id}.
    """
    listing = driver.list_volumes(disk_id)
    assert not listing.stray_files, f"stray files: {listing.stray_files}"
    parents: dict[str, str] = {}
    for vol in listing.volumes:
        path = driver.volume_path(disk_id, vol.volume_id)
        assert path.is_file(), f"listed volume {vol.volume_id} has no file {path}"
        chain = qemu.backing_chain(path)
        top = chain[0]
        fmt = FORMAT_NAMES.get(vol.format)
        assert top["format"] == fmt, f"{vol.volume_id}: qemu says {top['format']}, agent {fmt}"
        assert top["virtual-size"] == vol.virtual_size, f"{vol.volume_id}: virtual size differs"
        backing = top.get("backing-filename", "")
        assert backing == vol.parent_id, (
            f"{vol.volume_id}: qcow2 backing {backing!r} but agent parent {vol.parent_id!r}"
        )
        if vol.parent_id:
            assert top.get("backing-filename-format") == _format_of(driver, disk_id, vol.parent_id)
        if vol.format == RAW:
            assert not vol.parent_id, f"RAW volume {vol.volume_id} has a parent"
        # Walk the whole chain: each link is a bare id that the listing knows.
        for upper, lower in itertools.pairwise(chain):
            assert Path(lower["filename"]).parent == path.parent
            assert Path(lower["filename"]).name == upper["backing-filename"]
        qemu.check_image(path, fmt)
        parents[vol.volume_id] = vol.parent_id
    listed = set(parents)
    for vol in listing.volumes:
        if vol.parent_id:
            assert vol.parent_id in listed, f"parent {vol.parent_id} of {vol.volume_id} not listed"
        has_child = any(p == vol.volume_id for p in parents.values())
        assert vol.leaf == (not has_child), (
            f"{vol.volume_id}: leaf={vol.leaf}, has child={has_child}"
        )
    return parents


def _format_of(driver: AgentDriver, disk_id: str, volume_id: str) -> str:
    return str(qemu.info(driver.volume_path(disk_id, volume_id))["format"])


def disk_files(driver: AgentDriver, disk_id: str) -> set[str]:
    """Names of the files in the disk's directory."""
    return {p.name for p in driver.disk_dir(disk_id).iterdir()}
