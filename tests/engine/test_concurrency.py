"""Two engines on one PostgreSQL: one mutating job per VM, none lost (SPEC §5.7, §5.8)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from support.engine import Cluster, error_info

MiB = 1024 * 1024
LOCK_REASONS = {"SNAPSHOT_IS_BEING_TAKEN_FOR_VM", "VM_IS_LOCKED", "VM_IS_DURING_SNAPSHOT"}


@pytest.fixture
def two_engines(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", pg_url, agent_count=2, engine_count=2).start()
    try:
        yield c
    finally:
        c.stop()


def _fire(cluster: Cluster, requests: list[tuple[int, str, str]]) -> list[tuple[str, str, str]]:
    """Send every (engine, vm, description) at once; returns (vm, "job"|reason, job id)."""
    results: list[tuple[str, str, str]] = []
    guard = threading.Lock()
    barrier = threading.Barrier(len(requests))

    def send(engine: int, vm_id: str, description: str) -> None:
        api = cluster.api(engine)
        barrier.wait()
        try:
            job = api.snapshots.CreateSnapshot(
                snapshots_pb2.CreateSnapshotRequest(vm_id=vm_id, description=description),
                timeout=30,
            ).job
            outcome = ("job", job.id)
        except grpc.RpcError as err:
            code, reason, _ = error_info(err)
            assert code == grpc.StatusCode.ABORTED, (code, reason)
            outcome = (reason, "")
        with guard:
            results.append((vm_id, *outcome))

    threads = [threading.Thread(target=send, args=r) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_twenty_concurrent_snapshots_two_engines(two_engines: Cluster) -> None:
    cluster = two_engines
    api = cluster.api()
    vms = [api.create_vm(f"cvm{i}") for i in range(4)]
    for i, vm in enumerate(vms):
        api.add_disk(vm, f"cvm{i}-d", cluster.domain_ids[i % 2], 16 * MiB)
    for faults in cluster.faults:
        faults.set([{"op": "CreateVolume", "disk_id": "*", "action": "delay", "seconds": 1}])
    # 8 requests on one VM, 4 on each of three others, alternating engines.
    targets = [vms[0]] * 8 + [vms[1]] * 4 + [vms[2]] * 4 + [vms[3]] * 4
    results = _fire(cluster, [(n % 2, vm, f"c{n}") for n, vm in enumerate(targets)])
    for faults in cluster.faults:
        faults.clear()
    assert len(results) == 20
    for vm in vms:
        mine = [r for r in results if r[0] == vm]
        admitted = [r for r in mine if r[1] == "job"]
        assert len(admitted) == 1, mine
        assert {r[1] for r in mine if r[1] != "job"} <= LOCK_REASONS
        job = api.wait_job(admitted[0][2])
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
        snaps = api.snapshots.ListSnapshots(
            snapshots_pb2.ListSnapshotsRequest(vm_id=vm), timeout=10
        ).snapshots
        assert len(snaps) == 2
    api.assert_consistent()
