"""Volumes with children: delete and merge refuse, a content-preserving rebase unblocks."""

from __future__ import annotations

import grpc

from support.agent import AgentDriver, expect_done, expect_failure
from support.chains import assert_contents, assert_storage_matches_listing
from support.content import DiskContent, MiB, Write
from support.fs import assert_unchanged, tree_snapshot
from support.ids import new_uuid
from support.qemu import write_patterns

SIZE = 32 * MiB
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def test_delete_of_a_volume_with_a_child_is_refused(driver: AgentDriver) -> None:
    disk, v0, v1, v2 = new_uuid(), new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, v0, size=SIZE))
    expect_done(driver.create_overlay(disk, v0, v1))
    expect_done(driver.create_overlay(disk, v1, v2))
    before = tree_snapshot(driver.agent.root)
    for vol in (v0, v1):
        expect_failure(
            lambda vol=vol: driver.delete_volume(disk, vol),  # type: ignore[misc]
            FAILED_PRECONDITION,
            "VOLUME_HAS_CHILDREN",
            status_only=True,
        )
    assert_unchanged(before, driver.agent.root)
    # Leaves first: then each parent becomes deletable.
    for vol in (v2, v1, v0):
        op = expect_done(driver.delete_volume(disk, vol))
        assert not op.result.already_absent
    assert not driver.list_volumes(disk).volumes


def test_merge_of_a_base_with_two_children_needs_a_rebase_first(driver: AgentDriver) -> None:
    disk, base, a, b = new_uuid(), new_uuid(), new_uuid(), new_uuid()
    base_writes = [Write(0, 4, 0x51), Write(8, 4, 0x52), Write(16, 4, 0x53)]
    a_writes = [Write(2, 4, 0x61), Write(24, 2, 0x62)]  # a overlaps base and adds a range
    b_writes = [Write(10, 1, 0x71), Write(28, 2, 0x72)]
    expect_done(driver.create_base(disk, base, size=SIZE))
    write_patterns(driver.volume_path(disk, base), "qcow2", [w.segment() for w in base_writes])
    expect_done(driver.create_overlay(disk, base, a))
    expect_done(driver.create_overlay(disk, base, b))
    write_patterns(driver.volume_path(disk, a), "qcow2", [w.segment() for w in a_writes])
    write_patterns(driver.volume_path(disk, b), "qcow2", [w.segment() for w in b_writes])
    base_content = DiskContent(SIZE).overlay(base_writes)
    expected = {
        base: base_content,
        a: base_content.overlay(a_writes),
        b: base_content.overlay(b_writes),
    }
    assert_contents(driver, disk, expected)

    before = tree_snapshot(driver.agent.root)
    expect_failure(
        lambda: driver.start_merge(driver.merge_request(disk, base, a, "")),
        FAILED_PRECONDITION,
        "VOLUME_HAS_CHILDREN",
        driver=driver,
    )
    assert_unchanged(before, driver.agent.root)

    # Rebase the sibling b onto a: b must keep reading exactly as before, although a's data
    # (2..5 MiB, 24..25 MiB) now lies below it.
    rebased = expect_done(driver.rebase(disk, b, a))
    assert rebased.result.volume.volume_id == b
    assert rebased.result.volume.parent_id == a
    assert_contents(driver, disk, expected)
    parents = assert_storage_matches_listing(driver, disk)
    assert parents == {base: "", a: base, b: a}

    # Rebasing a onto its own child would make a cycle.
    req = driver.rebase_request(disk, a, b)
    expect_failure(
        lambda: driver.agent.stub().RebaseVolume(req, timeout=30),
        (grpc.StatusCode.INVALID_ARGUMENT, FAILED_PRECONDITION),
        ("CHAIN_MISMATCH", "INVALID_FIELD", "VOLUME_HAS_CHILDREN", "CHAIN_CORRUPT"),
        driver=driver,
    )

    # Now base has one child and the merge is allowed.
    merged = expect_done(driver.merge(disk, base, a, ""))
    assert merged.result.volume.volume_id == a
    assert merged.result.volume.parent_id == ""
    del expected[base]
    assert_contents(driver, disk, expected)
    parents = assert_storage_matches_listing(driver, disk)
    assert parents == {a: "", b: a}


def test_rebase_to_root_preserves_content(driver: AgentDriver) -> None:
    disk, base, top = new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, base, size=SIZE))
    write_patterns(driver.volume_path(disk, base), "qcow2", [Write(0, 3, 0x44).segment()])
    expect_done(driver.create_overlay(disk, base, top))
    write_patterns(driver.volume_path(disk, top), "qcow2", [Write(1, 1, 0x45).segment()])
    content = DiskContent(SIZE).overlay([Write(0, 3, 0x44), Write(1, 1, 0x45)])
    op = expect_done(driver.rebase(disk, top, ""))
    assert op.result.volume.parent_id == ""
    assert_contents(driver, disk, {top: content})
    parents = assert_storage_matches_listing(driver, disk)
    assert parents == {base: "", top: ""}
