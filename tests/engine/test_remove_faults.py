"""RemoveSnapshot under agent faults, agent crashes and engine crashes (SPEC §3.6, §5.5, §5.7).

After every scenario every remaining volume is read back in full (``Tracker.verify``) and the
consistency checker must be clean once the removal is complete.
"""

from __future__ import annotations

import time

import pytest

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from engine.test_remove_snapshot import (
    FAILED_ILLEGAL,
    MERGED,
    NOT_MERGED,
    Tracker,
    directions,
    outcomes,
)
from support.content import Write
from support.engine import Cluster


def _merge_fault(disk_id: str, action: str, when: str, **extra: object) -> dict[str, object]:
    return {"op": "MergeVolumes", "disk_id": disk_id, "action": action, "when": when, **extra}


def _snapshot_volumes(t: Tracker, snapshot_id: str) -> dict[str, tuple[str, int]]:
    """Disk id → (volume id, status) as ListSnapshots shows the snapshot."""
    snap = next(s for s in t.snapshots() if s.id == snapshot_id)
    return {d.disk_id: (d.volume_id, d.status) for d in snap.disks}


def test_merge_fails_on_one_of_three_disks_then_retry_completes(cluster: Cluster) -> None:
    t = Tracker(cluster, "vmpart")
    disks = [t.add_disk(0), t.add_disk(1), t.add_disk(2)]
    for k, d in enumerate(disks):
        t.write(d, Write(0, 6, 0x10 + k))
    s1 = t.snapshot("S1")
    for k, d in enumerate(disks):
        t.write(d, Write(4, 4, 0x20 + k))
    s2 = t.snapshot("S2")
    for k, d in enumerate(disks):
        t.write(d, Write(10, 1, 0x30 + k))
    bad = disks[1]
    volumes = t.owned(s1)
    cluster.faults[1].set([_merge_fault(bad, "error", "before", code="INTERNAL", times=1)])

    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
    got = outcomes(job)
    assert got == {disks[0]: MERGED, bad: NOT_MERGED, disks[2]: MERGED}
    failed = next(o for o in job.outcomes if o.disk_id == bad)
    assert failed.reason == "MERGE_ERROR" and list(failed.volume_ids) == [volumes[bad]]
    t.forget([volumes[disks[0]], volumes[disks[2]]])
    t.verify()
    # The snapshot stays, OK, owning (and listing) only the disk that was not merged.
    assert _snapshot_volumes(t, s1) == {bad: (volumes[bad], snapshots_pb2.VOLUME_STATUS_OK)}
    snap = next(s for s in t.snapshots() if s.id == s1)
    assert snap.status == snapshots_pb2.SNAPSHOT_STATUS_OK
    got_s1 = t.api.snapshots.GetSnapshot(
        snapshots_pb2.GetSnapshotRequest(vm_id=t.vm_id, snapshot_id=s1), timeout=10
    )
    assert [d.disk_id for d in got_s1.config.disks] == [bad]
    assert len(_snapshot_volumes(t, s2)) == 3
    t.api.assert_consistent()

    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert outcomes(job) == {bad: MERGED}
    t.forget([volumes[bad]])
    t.verify()
    assert [s.id for s in t.snapshots()][1:] == [s2]
    t.api.assert_consistent()


def test_failed_merge_marks_a_modified_base_illegal(cluster: Cluster) -> None:
    """Both directions fail after their data work (before the agent's finalize).

    COMMIT has written into base → FAILED_ILLEGAL, the snapshot keeps that disk; a retry
    completes it. PULL has only rewritten the child, which no longer needs base: the engine
    sees that on storage and finishes the merge with one more operation in the same job.
    """
    t = Tracker(cluster, "vmill")
    commit_disk = t.add_disk(0)
    pull_disk = t.add_disk(0)
    t.write(commit_disk, Write(0, 12, 0x51))
    t.write(pull_disk, Write(0, 1, 0x61))
    s1 = t.snapshot("S1")
    t.write(commit_disk, Write(2, 2, 0x52))
    t.write(pull_disk, Write(0, 12, 0x62))
    s2 = t.snapshot("S2")
    t.write(commit_disk, Write(20, 1, 0x53))
    t.write(pull_disk, Write(20, 1, 0x63))
    volumes = t.owned(s1)
    cluster.faults[0].set(
        [
            _merge_fault(commit_disk, "error", "after", code="INTERNAL", times=1),
            _merge_fault(pull_disk, "error", "after", code="INTERNAL", times=1),
        ]
    )
    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
    assert outcomes(job) == {commit_disk: FAILED_ILLEGAL, pull_disk: MERGED}
    failed = next(o for o in job.outcomes if o.disk_id == commit_disk)
    assert failed.reason == "MERGE_ERROR"
    merges = [
        (s.disk_id, s.state) for s in job.steps if s.kind == common_pb2.STEP_KIND_MERGE_VOLUMES
    ]
    assert sorted(merges) == sorted(
        [
            (commit_disk, common_pb2.STEP_STATE_FAILED),
            (pull_disk, common_pb2.STEP_STATE_FAILED),
            (pull_disk, common_pb2.STEP_STATE_DONE),
        ]
    )
    assert sorted(directions(cluster, job.id)) == ["COMMIT", "PULL", "PULL"]
    assert _snapshot_volumes(t, s1) == {
        commit_disk: (volumes[commit_disk], snapshots_pb2.VOLUME_STATUS_ILLEGAL)
    }
    t.forget([volumes[pull_disk]])
    # Only the ILLEGAL base's own point in time is damaged; everything above it is intact.
    t.verify(skip=[volumes[commit_disk]])
    t.api.assert_consistent()

    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget([volumes[commit_disk]])
    t.verify()
    assert [s.id for s in t.snapshots()][1:] == [s2]
    t.api.assert_consistent()


def test_agent_killed_mid_merge_resumes_the_same_operation(cluster: Cluster) -> None:
    t = Tracker(cluster, "vmakill")
    d = t.add_disk(1)
    t.write(d, Write(0, 16, 0x71))
    s1 = t.snapshot("S1")
    t.write(d, Write(8, 2, 0x72))
    base = t.owned(s1)[d]
    cluster.faults[1].set([_merge_fault(d, "crash", "after", times=1)])
    job = t.remove(s1, wait=False)
    agent = cluster.agents[1]
    agent.wait_exit(timeout=30)
    agent.restart(same_port=True)
    job = t.api.wait_job(job.id, timeout=120)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert outcomes(job) == {d: MERGED}
    assert directions(cluster, job.id) == ["COMMIT"]
    [merge] = [s for s in job.steps if s.kind == common_pb2.STEP_KIND_MERGE_VOLUMES]
    assert merge.attempts >= 1 and merge.op_id == f"{job.id}:{merge.seq}"
    t.forget([base])
    t.verify()
    t.api.assert_consistent()


def test_agent_down_past_the_budget_marks_illegal_and_retry_completes(cluster: Cluster) -> None:
    t = Tracker(cluster, "vmadown")
    d = t.add_disk(2)
    keep = t.add_disk(0)
    t.write(d, Write(0, 16, 0x81))
    t.write(keep, Write(0, 2, 0x91))
    s1 = t.snapshot("S1")
    t.write(d, Write(3, 1, 0x82))
    t.write(keep, Write(1, 2, 0x92))
    volumes = t.owned(s1)
    cluster.faults[2].set([_merge_fault(d, "crash", "after", times=1)])
    started = time.monotonic()
    job = t.remove(s1)
    assert time.monotonic() - started >= 5  # the transient budget was spent first
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
    assert outcomes(job) == {d: FAILED_ILLEGAL, keep: MERGED}
    failed = next(o for o in job.outcomes if o.disk_id == d)
    assert failed.reason == "AGENT_UNAVAILABLE"
    # The outcome on storage is unknown, so the base is marked, never left unmarked.
    assert _snapshot_volumes(t, s1) == {d: (volumes[d], snapshots_pb2.VOLUME_STATUS_ILLEGAL)}

    # The agent comes back and finishes its recorded merge on its own; the retry completes
    # the DB side with a new operation that finds the merge already done on storage.
    cluster.agents[2].restart(same_port=True)
    t.api.wait_hosts_up()
    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget(volumes.values())
    t.verify()
    assert [s.id for s in t.snapshots()][1:] == []
    t.api.assert_consistent()


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_s", [0.0, 1.2, 2.6], ids=["admitted", "calling", "polling"])
def test_engine_killed_mid_removal_recovers(cluster: Cluster, kill_after_s: float) -> None:
    t = Tracker(cluster, "vmekill")
    disks = [t.add_disk(h) for h in (0, 1, 2)]
    for k, d in enumerate(disks):
        t.write(d, Write(0, 8, 0xA0 + k))
    s1 = t.snapshot("S1")
    for k, d in enumerate(disks):
        t.write(d, Write(6, 4 + 4 * k, 0xB0 + k))
    t.snapshot("S2")
    volumes = t.owned(s1)
    for faults in cluster.faults:
        faults.set(
            [
                _merge_fault("*", "delay", "before", seconds=1.0),
                _merge_fault("*", "delay", "after", seconds=1.5),
            ]
        )
    job = t.remove(s1, wait=False)
    time.sleep(kill_after_s)
    engine = cluster.engines[0]
    engine.kill9()
    engine.restart()
    t.refresh()
    job = t.api.wait_job(job.id, timeout=180)
    for faults in cluster.faults:
        faults.clear()
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert set(outcomes(job).values()) == {MERGED}
    t.forget(volumes.values())
    t.verify()
    t.api.assert_consistent()
