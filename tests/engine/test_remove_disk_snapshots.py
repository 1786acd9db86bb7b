"""RemoveDiskSnapshots end to end (SPEC §3.7): one disk's volumes, deepest first, disk lock only."""

from __future__ import annotations

import time

import grpc
import pytest

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from engine.test_remove_snapshot import (
    MERGED,
    NOT_ATTEMPTED,
    NOT_MERGED,
    Tracker,
    step_results,
)
from support.content import Write
from support.engine import Cluster, error_info


def _chain(cluster: Cluster, name: str) -> tuple[Tracker, list[str], list[str]]:
    """Disks d0 (host 0) and d1 (host 1), snapshots S1..S4 of both, distinct data per layer."""
    t = Tracker(cluster, name)
    disks = [t.add_disk(0), t.add_disk(1)]
    snaps = []
    for i in range(5):
        for k, d in enumerate(disks):
            t.write(d, Write(3 * i, 2 + 2 * (i % 2), 0x10 * (i + 1) + k))
        if i < 4:
            snaps.append(t.snapshot(f"S{i + 1}"))
    return t, disks, snaps


def _volume_outcomes(job: common_pb2.Job) -> list[tuple[str, int]]:
    return [(o.volume_ids[0], o.outcome) for o in job.outcomes]


def _config_disks(t: Tracker, snapshot_id: str) -> list[str]:
    got = t.api.snapshots.GetSnapshot(
        snapshots_pb2.GetSnapshotRequest(vm_id=t.vm_id, snapshot_id=snapshot_id), timeout=10
    )
    return [d.disk_id for d in got.config.disks]


def test_remove_two_volumes_of_one_disk_deepest_first(cluster: Cluster) -> None:
    t, (d0, d1), (s1, s2, s3, s4) = _chain(cluster, "vmds")
    v1, v2, v3 = t.owned(s1)[d0], t.owned(s2)[d0], t.owned(s3)[d0]
    job = t.remove_disk_snapshots([v1, v3])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert job.kind == common_pb2.JOB_KIND_REMOVE_DISK_SNAPSHOTS
    # Deepest first: S3's volume before S1's.
    assert _volume_outcomes(job) == [(v3, MERGED), (v1, MERGED)]
    assert {o.metadata["snapshot_id"] for o in job.outcomes} == {s1, s3}
    merges = [ids for kind, ids, _r in step_results(cluster, job.id) if kind == "MERGE_VOLUMES"]
    assert merges == [[v3, t.owned(s4)[d0]], [v1, v2]]
    t.forget([v1, v3])
    t.verify()
    # The owners drop d0 and keep d1; the snapshots themselves stay.
    assert _config_disks(t, s1) == [d1] and _config_disks(t, s3) == [d1]
    assert _config_disks(t, s2) == sorted([d0, d1])
    assert [s.id for s in t.snapshots()][1:] == [s1, s2, s3, s4]
    t.api.assert_consistent()

    # An owner left with no disks stays as a configuration-only snapshot.
    job = t.remove_disk_snapshots([t.owned(s1)[d1]])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget([job.outcomes[0].volume_ids[0]])
    assert _config_disks(t, s1) == []
    assert next(s for s in t.snapshots() if s.id == s1).status == snapshots_pb2.SNAPSHOT_STATUS_OK
    t.verify()
    t.api.assert_consistent()


def test_stops_at_the_first_failure(cluster: Cluster) -> None:
    t, (d0, _d1), (s1, s2, s3, _s4) = _chain(cluster, "vmdsf")
    v1, v2, v3 = t.owned(s1)[d0], t.owned(s2)[d0], t.owned(s3)[d0]
    cluster.faults[0].set(
        [
            {
                "op": "MergeVolumes",
                "disk_id": d0,
                "volume_id": v2,
                "action": "error",
                "code": "INTERNAL",
                "times": 1,
            }
        ]
    )
    job = t.remove_disk_snapshots([v1, v2, v3])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
    assert _volume_outcomes(job) == [(v3, MERGED), (v2, NOT_MERGED), (v1, NOT_ATTEMPTED)]
    assert next(o for o in job.outcomes if o.outcome == NOT_MERGED).reason == "MERGE_ERROR"
    t.forget([v3])
    t.verify()
    statuses = {n.id: n.status for n in t.tree(d0)}
    assert statuses[v1] == statuses[v2] == snapshots_pb2.VOLUME_STATUS_OK
    t.api.assert_consistent()

    job = t.remove_disk_snapshots([v1, v2])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget([v1, v2])
    t.verify()
    t.api.assert_consistent()


def test_only_the_disk_is_locked(cluster: Cluster) -> None:
    t, (d0, d1), (s1, _s2, _s3, _s4) = _chain(cluster, "vmdsl")
    v1 = t.owned(s1)[d0]
    cluster.faults[0].set(
        [{"op": "MergeVolumes", "disk_id": d0, "action": "delay", "when": "after", "seconds": 4}]
    )
    job = t.remove_disk_snapshots([v1], wait=False)
    time.sleep(0.5)
    # A snapshot of the VM's other disk proceeds meanwhile ...
    t.snapshot("d1 only", [d1])
    # ... one that needs the locked disk is refused.
    with pytest.raises(grpc.RpcError) as err:
        t.api.snapshots.CreateSnapshot(
            snapshots_pb2.CreateSnapshotRequest(vm_id=t.vm_id, description="all"), timeout=10
        )
    _code, reason, meta = error_info(err.value)
    assert reason == "DISKS_LOCKED" and meta["disk_ids"] == d0 and meta["job_id"] == job.id
    job = t.api.wait_job(job.id)
    cluster.faults[0].clear()
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget([v1])
    t.verify()
    t.api.assert_consistent()


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_s", [0.0, 2.0, 4.5], ids=["admitted", "first", "later"])
def test_engine_killed_mid_removal_recovers(cluster: Cluster, kill_after_s: float) -> None:
    t, (d0, _d1), (s1, s2, s3, _s4) = _chain(cluster, "vmdsk")
    victims = [t.owned(s)[d0] for s in (s1, s2, s3)]
    cluster.faults[0].set(
        [
            {
                "op": "MergeVolumes",
                "disk_id": d0,
                "action": "delay",
                "when": "before",
                "seconds": 1,
            },
            {"op": "MergeVolumes", "disk_id": d0, "action": "delay", "when": "after", "seconds": 1},
        ]
    )
    job = t.remove_disk_snapshots(victims, wait=False)
    time.sleep(kill_after_s)
    engine = cluster.engines[0]
    engine.kill9()
    engine.restart()
    t.refresh()
    job = t.api.wait_job(job.id, timeout=180)
    cluster.faults[0].clear()
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert _volume_outcomes(job) == [(v, MERGED) for v in reversed(victims)]
    t.forget(victims)
    t.verify()
    for s in (s1, s2, s3):
        assert d0 not in _config_disks(t, s)
    t.api.assert_consistent()
