"""A crash in the middle of a merge, then a retry with the same op_id (SPEC §6.4, §6.5).

The fault `crash`/`after` kills the agent (os._exit(137)) after the data copy and before the
rename/delete/sidecar finalize. The restarted agent must finish the merge when the same
MergeVolumes is sent again, and the result must be exactly what an uninterrupted merge gives.
"""

from __future__ import annotations

import grpc
import pytest

from agent.scenarios import DISK_SIZE, chain_writes
from disksnap.agent.v1 import agent_pb2
from support import qemu
from support.agent import COMMIT, PULL, TERMINAL, AgentDriver, describe, expect_done
from support.chains import assert_contents, assert_storage_matches_listing, build_chain
from support.processes import AgentProcess, FaultsFile

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("direction", [COMMIT, PULL], ids=["commit", "pull"])
def test_crash_after_the_copy_then_retry_completes(
    agent: AgentProcess, driver: AgentDriver, faults: FaultsFile, direction: int
) -> None:
    # COMMIT needs a big base and a small top, PULL the opposite (layer 1 = base, 2 = top).
    chain = build_chain(driver, DISK_SIZE, chain_writes({1} if direction == COMMIT else {2}))
    disk, base, top = chain.disk_id, chain[1], chain[2]
    faults.set(
        [{"op": "MergeVolumes", "disk_id": disk, "action": "crash", "when": "after", "times": 1}]
    )
    req = driver.merge_request(disk, base.volume_id, top.volume_id, base.parent_id)
    try:
        op = driver.start_merge(req)
        assert op.state not in TERMINAL, f"merge finished although it should crash: {describe(op)}"
    except grpc.RpcError as err:  # the crash may beat the response
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    rc = agent.wait_exit(timeout=60)
    assert rc == 137, f"expected the injected crash (rc 137), got rc={rc}"
    # The crash hit between the copy and the finalize: both files are still there, and the
    # copy is complete (COMMIT: base now reads as top; PULL: top already stands on base's
    # parent).
    base_path, top_path = (
        driver.volume_path(disk, base.volume_id),
        driver.volume_path(disk, top.volume_id),
    )
    assert base_path.is_file() and top_path.is_file()
    if direction == COMMIT:
        qemu.assert_segments(base_path, base.fmt, top.content.segments())
    else:
        assert qemu.info(top_path).get("backing-filename", "") == base.parent_id
        qemu.assert_segments(top_path, "qcow2", top.content.segments())
    faults.clear()
    agent.restart()

    op = driver.start_merge(req)
    assert op.op_id == req.op_id
    if op.state not in TERMINAL:
        op = driver.wait(req.op_id)
    expect_done(op)
    assert op.result.direction == direction, (
        f"got {agent_pb2.MergeDirection.Name(op.result.direction)}"
    )
    assert op.result.base_modified == (direction == COMMIT)
    assert op.result.volume.volume_id == top.volume_id
    assert op.result.volume.parent_id == base.parent_id

    assert not driver.volume_path(disk, base.volume_id).exists()
    assert not driver.sidecar_path(disk, base.volume_id).exists()
    assert driver.tombstone_path(base.volume_id).exists()
    top.parent_id = base.parent_id
    chain.layers.remove(base)
    assert_contents(driver, disk, chain.expected())
    parents = assert_storage_matches_listing(driver, disk)  # also: no stray files
    assert parents == {layer.volume_id: layer.parent_id for layer in chain.layers}
    assert record_is_stable(driver, req.op_id)


def record_is_stable(driver: AgentDriver, op_id: str) -> bool:
    """GetOperation reports the finished record."""
    op = driver.get_operation(op_id)
    assert op.state == agent_pb2.OPERATION_STATE_DONE, describe(op)
    return True
