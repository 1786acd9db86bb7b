"""MergeVolumes on real chains, in both directions (SPEC §6.3, §6.5).

Every case builds base + 3 overlays through CreateVolume, writes distinct data into each
layer with qemu-io, merges one pair, then reads back every byte of every remaining volume and
compares the listing with `qemu-img info --backing-chain`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from agent.scenarios import DISK_SIZE, chain_writes
from disksnap.agent.v1 import agent_pb2
from support.agent import COMMIT, COW, FORMAT_NAMES, PULL, RAW, AgentDriver, expect_done
from support.chains import (
    Chain,
    assert_contents,
    assert_storage_matches_listing,
    build_chain,
)


@dataclass(frozen=True)
class MergeCase:
    name: str
    base_index: int
    base_fmt: int
    big_layers: frozenset[int]
    direction: int


CASES = [
    MergeCase("middle-commit", 1, COW, frozenset({1}), COMMIT),
    MergeCase("middle-pull", 1, COW, frozenset({2}), PULL),
    MergeCase("root-commit", 0, COW, frozenset({0}), COMMIT),
    MergeCase("root-pull", 0, COW, frozenset({1}), PULL),
    MergeCase("raw-root-commit", 0, RAW, frozenset({0}), COMMIT),
    MergeCase("raw-root-pull", 0, RAW, frozenset({1}), PULL),
]


def merge_and_check(driver: AgentDriver, chain: Chain, base_index: int) -> agent_pb2.Operation:
    """Merge layer `base_index` into its child, check everything, update `chain` in place."""
    disk = chain.disk_id
    base, top = chain[base_index], chain[base_index + 1]
    sizes = {v.volume_id: v.actual_size for v in driver.list_volumes(disk).volumes}
    expected_direction = COMMIT if sizes[top.volume_id] < sizes[base.volume_id] else PULL

    op = expect_done(driver.merge(disk, base.volume_id, top.volume_id, base.parent_id))
    assert op.kind == agent_pb2.OPERATION_KIND_MERGE_VOLUMES
    assert op.progress == 100
    assert op.result.direction == expected_direction, (
        f"actual sizes top={sizes[top.volume_id]} base={sizes[base.volume_id]}: expected "
        f"{agent_pb2.MergeDirection.Name(expected_direction)}, "
        f"got {agent_pb2.MergeDirection.Name(op.result.direction)}"
    )
    assert op.result.base_modified == (expected_direction == COMMIT)
    survivor = op.result.volume
    assert survivor.volume_id == top.volume_id, "the survivor must keep top's id"
    assert survivor.parent_id == base.parent_id
    survivor_fmt = base.fmt if expected_direction == COMMIT else "qcow2"
    assert FORMAT_NAMES[survivor.format] == survivor_fmt
    assert survivor.virtual_size == chain.size

    # base is gone: no file, no sidecar, a tombstone.
    assert not driver.volume_path(disk, base.volume_id).exists()
    assert not driver.sidecar_path(disk, base.volume_id).exists()
    assert driver.tombstone_path(base.volume_id).exists(), "base must be tombstoned"

    # top's sidecar now names base's former parent.
    sidecar = json.loads(driver.sidecar_path(disk, top.volume_id).read_text())
    assert sidecar["volume_id"] == top.volume_id
    assert sidecar["disk_id"] == disk
    assert (sidecar.get("parent_id") or "") == base.parent_id

    # Model update: base leaves the chain, top inherits its parent and (COMMIT) its format.
    top.parent_id = base.parent_id
    top.fmt = survivor_fmt
    chain.layers.remove(base)

    assert_contents(driver, disk, chain.expected())
    parents = assert_storage_matches_listing(driver, disk)
    assert parents == {layer.volume_id: layer.parent_id for layer in chain.layers}
    info = driver.volume_info(disk, top.volume_id)
    assert info.parent_id == base.parent_id
    assert FORMAT_NAMES[info.format] == survivor_fmt
    verify = expect_done(driver.verify(disk, top.volume_id))
    assert verify.result.verify.ok
    return op


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_merge_preserves_content_in_both_directions(driver: AgentDriver, case: MergeCase) -> None:
    chain = build_chain(
        driver, DISK_SIZE, chain_writes(set(case.big_layers)), base_fmt=case.base_fmt
    )
    disk = chain.disk_id
    base, top = chain[case.base_index], chain[case.base_index + 1]
    # Preconditions of the scenario: the model matches storage and the sizes force the direction.
    assert_contents(driver, disk, chain.expected())
    assert_storage_matches_listing(driver, disk)
    sizes = {v.volume_id: v.actual_size for v in driver.list_volumes(disk).volumes}
    if case.direction == COMMIT:
        assert sizes[top.volume_id] < sizes[base.volume_id], f"scenario needs a small top: {sizes}"
    else:
        assert sizes[top.volume_id] >= sizes[base.volume_id], f"scenario needs a big top: {sizes}"

    op = merge_and_check(driver, chain, case.base_index)
    assert op.result.direction == case.direction


def test_merge_chain_down_to_a_single_volume(driver: AgentDriver) -> None:
    """Three successive merges at the root; each relies on the previous one's sidecar."""
    chain = build_chain(driver, DISK_SIZE, chain_writes({1}))
    leaf_content = chain[3].content
    directions = []
    while len(chain.layers) > 1:
        directions.append(merge_and_check(driver, chain, 0).result.direction)
    assert chain.layers[0].content == leaf_content
    assert [v.volume_id for v in driver.list_volumes(chain.disk_id).volumes] == chain.ids
    # Only layer 1 is big: the first merge pulls; later tops are small, so they commit.
    assert directions == [PULL, COMMIT, COMMIT]
