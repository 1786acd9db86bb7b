"""Fault injection: `error`/`delay` rules, before and after the work, and the opt-in flag."""

from __future__ import annotations

import time

import grpc
import pytest

from support.agent import AgentDriver, expect_done, expect_failure, failure_from_rpc_error
from support.content import MiB
from support.fs import assert_unchanged, tree_snapshot
from support.ids import new_op_id, new_uuid
from support.processes import AgentFactory, AgentProcess, FaultsFile

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
INTERNAL = grpc.StatusCode.INTERNAL


def rule(op: str, disk_id: str, when: str, **extra: object) -> dict[str, object]:
    return {
        "op": op,
        "disk_id": disk_id,
        "action": "error",
        "code": "UNAVAILABLE",
        "when": when,
        "times": 1,
        **extra,
    }


def remaining(faults: FaultsFile) -> int:
    return sum(int(r.get("times", 0)) for r in faults.read())


def test_error_before_changes_nothing(
    agent: AgentProcess, driver: AgentDriver, faults: FaultsFile
) -> None:
    disk, base, top = new_uuid(), new_uuid(), new_uuid()
    expect_done(driver.create_base(disk, base, size=8 * MiB))
    expect_done(driver.create_overlay(disk, base, top))
    before = tree_snapshot(agent.root)

    faults.set([rule("CreateVolume", disk, "before")])
    expect_failure(
        lambda: driver.create_overlay(disk, top, new_uuid()),
        UNAVAILABLE,
        "INJECTED_FAULT",
        status_only=True,
    )
    assert remaining(faults) == 0, f"a fired rule must be decremented: {faults.read()}"

    faults.set([rule("DeleteVolume", disk, "before", volume_id=top)])
    expect_failure(
        lambda: driver.delete_volume(disk, top), UNAVAILABLE, "INJECTED_FAULT", status_only=True
    )

    faults.set([rule("MergeVolumes", "*", "before", code="INTERNAL")])
    expect_failure(
        lambda: driver.start_merge(driver.merge_request(disk, base, top, "")),
        INTERNAL,
        "INJECTED_FAULT",
        driver=driver,
    )
    assert_unchanged(before, agent.root)

    # The rules are used up: the same kinds of requests now succeed.
    expect_done(driver.create_overlay(disk, top, new_uuid()))


def test_error_after_create_leaves_the_volume_and_a_retry_is_done(
    agent: AgentProcess, driver: AgentDriver, faults: FaultsFile
) -> None:
    disk, vol, op_id = new_uuid(), new_uuid(), new_op_id()
    faults.set([rule("CreateVolume", disk, "after")])
    try:
        driver.create_base(disk, vol, size=8 * MiB, op_id=op_id)
    except grpc.RpcError as err:
        failure = failure_from_rpc_error(err)
        assert (failure.code, failure.reason) == (UNAVAILABLE, "INJECTED_FAULT"), failure
    else:
        pytest.fail("the injected error after CreateVolume did not reach the client")
    assert driver.volume_path(disk, vol).is_file()
    assert driver.sidecar_path(disk, vol).is_file()
    assert driver.volume_info(disk, vol).virtual_size == 8 * MiB

    op = expect_done(driver.create_base(disk, vol, size=8 * MiB, op_id=op_id))
    assert op.op_id == op_id
    assert op.result.volume.volume_id == vol
    assert [v.volume_id for v in driver.list_volumes(disk).volumes] == [vol]


def test_rules_match_only_their_disk(driver: AgentDriver, faults: FaultsFile) -> None:
    disk_a, disk_b = new_uuid(), new_uuid()
    faults.set([rule("CreateVolume", disk_a, "before")])
    expect_done(driver.create_base(disk_b, new_uuid(), size=8 * MiB))
    assert remaining(faults) == 1
    expect_failure(
        lambda: driver.create_base(disk_a, new_uuid(), size=8 * MiB),
        UNAVAILABLE,
        "INJECTED_FAULT",
        status_only=True,
    )


def test_delay_rule_delays_the_call(driver: AgentDriver, faults: FaultsFile) -> None:
    disk = new_uuid()
    faults.set(
        [
            {
                "op": "CreateVolume",
                "disk_id": "*",
                "action": "delay",
                "seconds": 1,
                "when": "before",
                "times": 1,
            }
        ]
    )
    t0 = time.monotonic()
    expect_done(driver.create_base(disk, new_uuid(), size=8 * MiB))
    assert time.monotonic() - t0 >= 1.0
    t0 = time.monotonic()
    expect_done(driver.create_base(disk, new_uuid(), size=8 * MiB))
    assert time.monotonic() - t0 < 1.0


def test_faults_are_ignored_without_the_flag(
    agent_factory: AgentFactory, faults: FaultsFile
) -> None:
    agent = agent_factory("no-faults", allow_fault_injection=False, faults=faults)
    drv = AgentDriver(agent)
    expect_done(drv.init_domain())
    rules = [
        rule("CreateVolume", "*", "before"),
        {"op": "CreateVolume", "disk_id": "*", "action": "crash", "when": "before", "times": 1},
    ]
    faults.set(rules)
    disk = new_uuid()
    expect_done(drv.create_base(disk, new_uuid(), size=8 * MiB))
    assert agent.is_running()
    assert faults.read() == rules, "an agent without --allow-fault-injection touched the rules"
