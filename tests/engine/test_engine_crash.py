"""Engine kill -9 at several points of a 5-disk snapshot, then restart (SPEC §5.7, INV-11)."""

from __future__ import annotations

import time

import pytest

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from support.engine import Cluster

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("kill_after_s", "failing_disk"),
    [(0.0, False), (1.0, False), (2.5, False), (1.0, True)],
    ids=["after-admission", "mid-steps", "late-steps", "mid-compensation"],
)
def test_engine_killed_mid_snapshot_recovers(
    cluster: Cluster, kill_after_s: float, failing_disk: bool
) -> None:
    api = cluster.api()
    vm_id = api.create_vm("vmcrash")
    disks = [api.add_disk(vm_id, f"c{i}", cluster.domain_ids[i % 3], 16 * MiB) for i in range(5)]
    before = api.heads(vm_id)
    for faults in cluster.faults:
        rules: list[dict[str, object]] = [
            {"op": "CreateVolume", "disk_id": "*", "action": "delay", "seconds": 1.5}
        ]
        if failing_disk:
            rules.insert(
                0,
                {
                    "op": "CreateVolume",
                    "disk_id": disks[0],
                    "action": "error",
                    "code": "INTERNAL",
                    "times": 1,
                },
            )
            rules.append({"op": "DeleteVolume", "disk_id": "*", "action": "delay", "seconds": 1.5})
        faults.set(rules)
    job = api.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(vm_id=vm_id, description="crash me"), timeout=10
    ).job
    time.sleep(kill_after_s)
    engine = cluster.engines[0]
    engine.kill9()
    engine.restart()
    api = cluster.api()
    job = api.wait_job(job.id, timeout=120)
    for faults in cluster.faults:
        faults.clear()
    expected = (
        common_pb2.JOB_STATE_SUCCEEDED_PARTIAL if failing_disk else common_pb2.JOB_STATE_SUCCEEDED
    )
    assert job.state == expected, job
    after = api.heads(vm_id)
    for d in disks:
        excluded = failing_disk and d == disks[0]
        assert (after[d] == before[d]) is excluded
    api.assert_consistent()
