"""Idempotency by op_id and by volume id (SPEC §6.4), also across `kill -9` and restart."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from disksnap.agent.v1 import agent_pb2
from support.agent import (
    COW,
    DONE,
    RAW,
    TERMINAL,
    AgentDriver,
    describe,
    expect_done,
    expect_failure,
)
from support.content import MiB
from support.fs import assert_unchanged, tree_snapshot
from support.ids import new_op_id, new_uuid
from support.processes import AgentProcess

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS


def record(op: agent_pb2.Operation) -> agent_pb2.Operation:
    """The operation without `updated_at`, which a re-read may legitimately refresh."""
    copy = agent_pb2.Operation()
    copy.CopyFrom(op)
    copy.ClearField("updated_at")
    return copy


def file_identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def crash_and_restart(agent: AgentProcess) -> None:
    agent.kill9()
    agent.restart()


def test_create_sent_twice_has_one_effect_also_after_restart(
    agent: AgentProcess, driver: AgentDriver
) -> None:
    disk, base_id, vol_id = new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, base_id, size=8 * MiB))
    req = agent_pb2.CreateVolumeRequest(
        op_id=new_op_id(1),
        domain_id=driver.domain_id,
        disk_id=disk,
        volume_id=vol_id,
        parent_volume_id=base_id,
    )
    first = expect_done(driver.call_create(req))
    assert first.op_id == req.op_id
    assert first.kind == agent_pb2.OPERATION_KIND_CREATE_VOLUME
    assert first.result.volume.volume_id == vol_id
    assert first.result.volume.parent_id == base_id
    path, sidecar = driver.volume_path(disk, vol_id), driver.sidecar_path(disk, vol_id)
    identity = (file_identity(path), file_identity(sidecar))

    second = driver.call_create(req)
    assert record(second) == record(first), "a re-sent op_id must return the same record"
    assert (file_identity(path), file_identity(sidecar)) == identity, "create re-executed"
    assert record(driver.get_operation(req.op_id)) == record(first)

    crash_and_restart(agent)
    third = driver.call_create(req)
    assert record(third) == record(first), "the record must survive kill -9"
    assert (file_identity(path), file_identity(sidecar)) == identity, "create re-executed"
    assert record(driver.get_operation(req.op_id)) == record(first)


def test_delete_sent_twice_has_one_effect_also_after_restart(
    agent: AgentProcess, driver: AgentDriver
) -> None:
    disk, vol_id = new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, vol_id, size=8 * MiB))
    op_id = new_op_id()
    first = expect_done(driver.delete_volume(disk, vol_id, op_id=op_id))
    assert first.kind == agent_pb2.OPERATION_KIND_DELETE_VOLUME
    assert not first.result.already_absent
    assert not driver.volume_path(disk, vol_id).exists()
    assert not driver.sidecar_path(disk, vol_id).exists()
    tombstone = driver.tombstone_path(vol_id)
    assert tombstone.exists()
    identity = file_identity(tombstone)

    # A re-execution would find the volume absent and say already_absent=true.
    second = driver.delete_volume(disk, vol_id, op_id=op_id)
    assert record(second) == record(first), describe(second)
    assert file_identity(tombstone) == identity

    crash_and_restart(agent)
    third = driver.delete_volume(disk, vol_id, op_id=op_id)
    assert record(third) == record(first), describe(third)
    assert file_identity(tombstone) == identity


def test_merge_sent_twice_has_one_effect_also_after_restart(
    agent: AgentProcess, driver: AgentDriver
) -> None:
    disk, base_id, top_id, leaf_id = new_uuid(), new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, base_id, size=16 * MiB))
    expect_done(driver.create_overlay(disk, base_id, top_id))
    expect_done(driver.create_overlay(disk, top_id, leaf_id))
    req = driver.merge_request(disk, base_id, top_id, "", op_id=new_op_id(3))
    started = driver.start_merge(req)
    again = driver.start_merge(req)  # while it may still run
    assert again.op_id == started.op_id == req.op_id
    assert again.kind == agent_pb2.OPERATION_KIND_MERGE_VOLUMES
    first = expect_done(driver.wait(req.op_id))
    survivor = driver.volume_path(disk, top_id)
    identity = file_identity(survivor)

    second = driver.start_merge(req)
    assert second.state == DONE, describe(second)
    assert record(second) == record(first)
    assert file_identity(survivor) == identity, "merge re-executed"

    crash_and_restart(agent)
    third = driver.start_merge(req)
    if third.state not in TERMINAL:
        third = driver.wait(req.op_id)
    assert record(third) == record(first), describe(third)
    assert file_identity(survivor) == identity, "merge re-executed after restart"

    # By volume id (lost record): base absent and top's backing is base_parent_id → DONE.
    fresh = driver.merge(disk, base_id, top_id, "")
    assert fresh.state == DONE, describe(fresh)
    assert fresh.result.volume.volume_id == top_id
    assert fresh.result.volume.parent_id == ""
    assert file_identity(survivor) == identity


def test_op_id_reused_with_different_parameters_is_refused(
    agent: AgentProcess, driver: AgentDriver
) -> None:
    disk, base_id, vol_id = new_uuid(), new_uuid(), new_uuid()
    create_op = new_op_id()
    expect_done(driver.create_base(disk, base_id, size=8 * MiB))
    expect_done(driver.create_overlay(disk, base_id, vol_id, op_id=create_op))
    merge_op = new_op_id()
    merge_req = driver.merge_request(disk, base_id, vol_id, "", op_id=merge_op)
    expect_done(driver.wait(driver.start_merge(merge_req).op_id))
    before = tree_snapshot(agent.root)

    def refused() -> None:
        other = new_uuid()
        expect_failure(
            lambda: driver.create_overlay(disk, vol_id, other, op_id=create_op),
            ALREADY_EXISTS,
            "OPERATION_ID_REUSED",
            status_only=True,
        )
        expect_failure(
            lambda: driver.create_base(new_uuid(), vol_id, size=8 * MiB, op_id=create_op),
            ALREADY_EXISTS,
            "OPERATION_ID_REUSED",
            status_only=True,
        )
        expect_failure(
            lambda: driver.delete_volume(disk, vol_id, op_id=create_op),
            ALREADY_EXISTS,
            "OPERATION_ID_REUSED",
            status_only=True,
        )
        changed = driver.merge_request(disk, base_id, vol_id, new_uuid(), op_id=merge_op)
        expect_failure(
            lambda: driver.start_merge(changed),
            ALREADY_EXISTS,
            "OPERATION_ID_REUSED",
            driver=driver,
        )
        assert not driver.volume_path(disk, other).exists()

    refused()
    assert_unchanged(before, agent.root)
    crash_and_restart(agent)
    refused()
    assert_unchanged(before, agent.root)


def test_create_of_an_existing_volume_id_compares_parameters(
    agent: AgentProcess, driver: AgentDriver
) -> None:
    disk, base_id, vol_id = new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, base_id, size=8 * MiB, fmt=COW))
    expect_done(driver.create_overlay(disk, base_id, vol_id))
    other_base = new_uuid()
    expect_done(driver.create_base(disk, other_base, size=8 * MiB, fmt=COW))
    paths = [
        driver.volume_path(disk, base_id),
        driver.volume_path(disk, vol_id),
        driver.sidecar_path(disk, vol_id),
    ]
    identities = [file_identity(p) for p in paths]

    # Matching parameters, new op_id → DONE, nothing rewritten.
    same_base = expect_done(driver.create_base(disk, base_id, size=8 * MiB, fmt=COW))
    assert same_base.result.volume.volume_id == base_id
    same_overlay = expect_done(driver.create_overlay(disk, base_id, vol_id))
    assert same_overlay.result.volume.parent_id == base_id
    assert [file_identity(p) for p in paths] == identities

    before = tree_snapshot(agent.root)
    mismatches = [
        lambda: driver.create_base(disk, base_id, size=16 * MiB, fmt=COW),
        lambda: driver.create_base(disk, base_id, size=8 * MiB, fmt=RAW),
        lambda: driver.create_overlay(disk, other_base, vol_id),
        lambda: driver.create_overlay(disk, other_base, base_id),
        lambda: driver.create_base(disk, vol_id, size=8 * MiB, fmt=COW),
    ]
    for call in mismatches:
        expect_failure(call, ALREADY_EXISTS, "VOLUME_ALREADY_EXISTS", status_only=True)
    assert_unchanged(before, agent.root)


def test_delete_of_a_missing_volume_is_done_already_absent(driver: AgentDriver) -> None:
    disk = new_uuid()
    expect_done(driver.create_base(disk, new_uuid(), size=8 * MiB))
    op = expect_done(driver.delete_volume(disk, new_uuid()))
    assert op.result.already_absent
    # A disk directory that never existed is just as absent.
    op = expect_done(driver.delete_volume(new_uuid(), new_uuid()))
    assert op.result.already_absent


def test_a_deleted_volume_id_cannot_be_created_again(
    agent: AgentProcess, driver: AgentDriver
) -> None:
    disk, vol_id = new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, vol_id, size=8 * MiB))
    expect_done(driver.delete_volume(disk, vol_id))
    before = tree_snapshot(agent.root)
    expect_failure(
        lambda: driver.create_base(disk, vol_id, size=8 * MiB),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VOLUME_DELETED",
        status_only=True,
    )
    crash_and_restart(agent)
    expect_failure(
        lambda: driver.create_base(disk, vol_id, size=8 * MiB),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VOLUME_DELETED",
        status_only=True,
    )
    assert_unchanged(before, agent.root)
    assert not driver.volume_path(disk, vol_id).exists()


def test_a_file_without_sidecar_is_completed_or_recreated(driver: AgentDriver) -> None:
    """A crash mid-create leaves a volume file without its sidecar; a retry repairs it."""
    disk, base_id, vol_id = new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, base_id, size=8 * MiB))
    op_id = new_op_id()
    expect_done(driver.create_overlay(disk, base_id, vol_id, op_id=op_id))
    os.unlink(driver.sidecar_path(disk, vol_id))
    names = {s.name for s in driver.list_volumes(disk).stray_files}
    assert vol_id in names, "a volume file without a sidecar must be listed as stray"
    op = expect_done(driver.create_overlay(disk, base_id, vol_id))
    assert op.result.volume.parent_id == base_id
    assert driver.sidecar_path(disk, vol_id).exists()
    listing = driver.list_volumes(disk)
    assert not listing.stray_files
    assert {v.volume_id for v in listing.volumes} == {base_id, vol_id}
