"""Long operations return at once and report progress through GetOperation (SPEC §6.3)."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from disksnap.agent.v1 import agent_pb2
from support import qemu
from support.agent import (
    COMMIT,
    PENDING,
    RUNNING,
    AgentDriver,
    describe,
    expect_done,
    expect_failure,
)
from support.content import DiskContent, MiB, Write
from support.ids import new_uuid

pytestmark = pytest.mark.slow


def test_merge_of_256_mib_returns_promptly_with_monotonic_progress(driver: AgentDriver) -> None:
    size = 640 * MiB
    disk, base, top = new_uuid(), new_uuid(), new_uuid()
    base_writes, top_writes = [Write(0, 260, 0x11)], [Write(256, 256, 0x22)]
    expect_done(driver.create_base(disk, base, size=size))
    qemu.write_patterns(driver.volume_path(disk, base), "qcow2", [w.segment() for w in base_writes])
    expect_done(driver.create_overlay(disk, base, top))
    qemu.write_patterns(driver.volume_path(disk, top), "qcow2", [w.segment() for w in top_writes])
    os.sync()

    t0 = time.monotonic()
    op = driver.start_merge(driver.merge_request(disk, base, top, ""))
    rpc_seconds = time.monotonic() - t0
    assert op.state in (PENDING, RUNNING), f"expected a running operation: {describe(op)}"

    seen: list[int] = [op.progress]
    states: list[int] = [op.state]

    def watch(polled: agent_pb2.Operation) -> None:
        seen.append(polled.progress)
        states.append(polled.state)

    final = expect_done(driver.wait(op.op_id, timeout=300, on_poll=watch))
    total_seconds = time.monotonic() - t0
    assert rpc_seconds < 0.5 and rpc_seconds < total_seconds / 3, (
        f"MergeVolumes took {rpc_seconds:.3f} s of a {total_seconds:.3f} s merge"
    )
    assert all(0 <= p <= 100 for p in seen), seen
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert final.progress == 100 and seen[-1] == 100
    assert RUNNING in states, "the merge was never observed RUNNING"
    assert final.result.direction == COMMIT  # top (256 MiB) is smaller than base (260 MiB)

    content = DiskContent(size).overlay(base_writes).overlay(top_writes)
    qemu.assert_segments(driver.volume_path(disk, top), "qcow2", content.segments())
    qemu.check_image(driver.volume_path(disk, top))


def test_get_operation_long_poll_answers_when_the_merge_ends(driver: AgentDriver) -> None:
    size = 320 * MiB
    disk, base, top = new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, base, size=size))
    qemu.write_patterns(driver.volume_path(disk, base), "qcow2", [Write(0, 8, 0x11).segment()])
    expect_done(driver.create_overlay(disk, base, top))
    qemu.write_patterns(driver.volume_path(disk, top), "qcow2", [Write(0, 256, 0x22).segment()])
    os.sync()
    op = driver.start_merge(driver.merge_request(disk, base, top, ""))
    assert op.state in (PENDING, RUNNING), describe(op)

    wait = agent_pb2.GetOperationRequest(op_id=op.op_id, wait_ms=60_000)
    final: agent_pb2.Operation = driver.stub.GetOperation(wait, timeout=90).operation
    answered = time.time()
    expect_done(final)
    ended = final.updated_at.ToMicroseconds() / 1e6
    # The answer follows the operation's end, not the 60 s wait.
    assert answered - ended < 1.0, f"answered {answered - ended:.3f} s after the end"

    t0 = time.monotonic()
    again: agent_pb2.Operation = driver.stub.GetOperation(wait, timeout=90).operation
    assert time.monotonic() - t0 < 1.0, "a finished operation is answered at once"
    assert again.state == final.state and again.updated_at == final.updated_at


def test_get_operation_wait_is_bounded(driver: AgentDriver) -> None:
    disk = new_uuid()
    op = expect_done(driver.create_base(disk, new_uuid(), size=MiB))
    expect_failure(
        lambda: driver.stub.GetOperation(
            agent_pb2.GetOperationRequest(op_id=op.op_id, wait_ms=60_001), timeout=10
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
