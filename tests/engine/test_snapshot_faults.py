"""Per-disk compensation and agent failures during CreateSnapshot (SPEC §3.1, §5.5, §5.6)."""

from __future__ import annotations

import time

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from support.engine import Cluster

MiB = 1024 * 1024
SIZE = 32 * MiB


def _setup(cluster: Cluster, name: str, hosts: list[int]) -> tuple[str, list[str]]:
    api = cluster.api()
    vm_id = api.create_vm(name)
    disks = [
        api.add_disk(vm_id, f"{name}-d{i}", cluster.domain_ids[h], SIZE)
        for i, h in enumerate(hosts)
    ]
    return vm_id, disks


def _created_volume(job: common_pb2.Job, disk_id: str) -> str:
    return next(
        s.volume_ids[0]
        for s in job.steps
        if s.disk_id == disk_id and s.kind == common_pb2.STEP_KIND_CREATE_VOLUME
    )


def _outcome(job: common_pb2.Job, disk_id: str) -> common_pb2.DiskOutcome:
    return next(o for o in job.outcomes if o.disk_id == disk_id)


def _snapshot_count(cluster: Cluster, vm_id: str) -> int:
    return len(
        cluster.api()
        .snapshots.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(vm_id=vm_id), timeout=10)
        .snapshots
    )


def test_error_on_one_disk_excludes_only_that_disk(cluster: Cluster) -> None:
    api = cluster.api()
    vm_id, disks = _setup(cluster, "vmf", [0, 0, 1])
    before = api.heads(vm_id)
    bad = disks[1]
    # The volume is created on storage, then the reply is an error: compensation must delete it.
    cluster.faults[0].set(
        [
            {
                "op": "CreateVolume",
                "disk_id": bad,
                "action": "error",
                "code": "INTERNAL",
                "when": "after",
                "times": 1,
            }
        ]
    )
    job = api.snapshot(vm_id, "partial")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
    assert _outcome(job, bad).outcome == common_pb2.DISK_OUTCOME_KIND_FAILED_EXCLUDED
    assert _outcome(job, bad).reason == "VOLUME_CREATION_ERROR"
    for d in (disks[0], disks[2]):
        assert _outcome(job, d).outcome == common_pb2.DISK_OUTCOME_KIND_SNAPSHOTTED
    after = api.heads(vm_id)
    assert after[bad] == before[bad]
    assert after[disks[0]] != before[disks[0]] and after[disks[2]] != before[disks[2]]
    orphan = cluster.volume_path(0, cluster.domain_ids[0], bad, _created_volume(job, bad))
    assert not orphan.exists()
    snap = api.snapshots.GetSnapshot(
        snapshots_pb2.GetSnapshotRequest(vm_id=vm_id, snapshot_id=job.result.snapshot_id),
        timeout=10,
    )
    assert sorted(d.disk_id for d in snap.config.disks) == sorted([disks[0], disks[2]])
    api.assert_consistent()


def test_atomic_failure_rolls_everything_back(cluster: Cluster) -> None:
    api = cluster.api()
    vm_id, disks = _setup(cluster, "vma", [0, 1])
    before = api.heads(vm_id)
    cluster.faults[1].set(
        [
            {
                "op": "CreateVolume",
                "disk_id": disks[1],
                "action": "error",
                "code": "INTERNAL",
                "times": 1,
            }
        ]
    )
    job = api.snapshot(vm_id, "atomic", atomic=True)
    assert job.state == common_pb2.JOB_STATE_FAILED, job
    assert job.error.reason == "VOLUME_CREATION_ERROR"
    assert {o.outcome for o in job.outcomes} == {common_pb2.DISK_OUTCOME_KIND_ROLLED_BACK}
    assert api.heads(vm_id) == before
    assert _snapshot_count(cluster, vm_id) == 1
    good_overlay = cluster.volume_path(
        0, cluster.domain_ids[0], disks[0], _created_volume(job, disks[0])
    )
    assert not good_overlay.exists()
    api.assert_consistent()


def test_all_disks_failing_fails_the_job(cluster: Cluster) -> None:
    api = cluster.api()
    vm_id, _disks = _setup(cluster, "vmall", [2])
    cluster.faults[2].set(
        [{"op": "CreateVolume", "disk_id": "*", "action": "error", "code": "INTERNAL"}]
    )
    job = api.snapshot(vm_id, "doomed")
    cluster.faults[2].clear()
    assert job.state == common_pb2.JOB_STATE_FAILED, job
    assert _snapshot_count(cluster, vm_id) == 1
    api.assert_consistent()


def test_agent_killed_mid_step_and_restarted(cluster: Cluster) -> None:
    api = cluster.api()
    vm_id, disks = _setup(cluster, "vmk", [1])
    cluster.faults[1].set(
        [
            {
                "op": "CreateVolume",
                "disk_id": disks[0],
                "action": "crash",
                "when": "after",
                "times": 1,
            }
        ]
    )
    job = api.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(vm_id=vm_id, description="survives"), timeout=10
    ).job
    agent = cluster.agents[1]
    agent.wait_exit(timeout=20)
    agent.restart(same_port=True)
    job = api.wait_job(job.id)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    api.assert_consistent()


def test_agent_down_for_good_excludes_its_disks(cluster: Cluster) -> None:
    api = cluster.api()
    vm_id, disks = _setup(cluster, "vmdown", [0, 2])
    before = api.heads(vm_id)
    cluster.faults[2].set(
        [
            {
                "op": "CreateVolume",
                "disk_id": disks[1],
                "action": "crash",
                "when": "before",
                "times": 1,
            }
        ]
    )
    started = time.monotonic()
    job = api.snapshot(vm_id, "one host gone")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
    assert time.monotonic() - started >= 5  # retried for the transient budget first
    gone = _outcome(job, disks[1])
    assert gone.outcome == common_pb2.DISK_OUTCOME_KIND_FAILED_EXCLUDED
    assert gone.reason == "AGENT_UNAVAILABLE"
    assert _outcome(job, disks[0]).outcome == common_pb2.DISK_OUTCOME_KIND_SNAPSHOTTED
    assert api.heads(vm_id)[disks[1]] == before[disks[1]]
    cluster.agents[2].restart(same_port=True)
    api.assert_consistent()
