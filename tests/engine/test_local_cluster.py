"""The distributed topology on one machine: 2 engines on PostgreSQL, 3 agents (issue 5).

Snapshots of VMs whose disks span hosts go through either engine; an engine killed mid-job
is replaced by the other once the lease expires; an agent that dies has its disks excluded
and compensated while other hosts' disks complete, and is included again once it is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from support.engine import Cluster

MiB = 1024 * 1024


@pytest.fixture
def two_engines(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", pg_url, agent_count=3, engine_count=2).start()
    try:
        yield c
    finally:
        c.stop()


def test_engines_and_agents_fail_over(two_engines: Cluster) -> None:
    cluster = two_engines
    api0, api1 = cluster.api(0), cluster.api(1)
    vm = api0.create_vm("spread")
    disks = [api0.add_disk(vm, f"d{i}", cluster.domain_ids[i], 16 * MiB) for i in range(3)]
    assert api0.snapshot(vm, "via engine 0").state == common_pb2.JOB_STATE_SUCCEEDED
    assert api1.snapshot(vm, "via engine 1").state == common_pb2.JOB_STATE_SUCCEEDED

    # Engine 0 dies mid-job; engine 1 takes the job over when the lease (3 s) expires.
    for faults in cluster.faults:
        faults.set([{"op": "CreateVolume", "disk_id": "*", "action": "delay", "seconds": 2}])
    job = api0.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(vm_id=vm, description="engine dies"), timeout=10
    ).job
    time.sleep(0.5)
    cluster.engines[0].kill9()
    job = api1.wait_job(job.id, timeout=120)
    for faults in cluster.faults:
        faults.clear()
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    cluster.engines[0].restart()

    # Agent 2 dies for good: its disk is excluded, the others complete.
    cluster.agents[2].kill9()
    before = api1.heads(vm)
    job = api1.snapshot(vm, "host2 gone")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
    outcomes = {o.disk_id: o.outcome for o in job.outcomes}
    assert outcomes[disks[2]] == common_pb2.DISK_OUTCOME_KIND_FAILED_EXCLUDED
    assert outcomes[disks[0]] == outcomes[disks[1]] == common_pb2.DISK_OUTCOME_KIND_SNAPSHOTTED
    assert api1.heads(vm)[disks[2]] == before[disks[2]]

    # Back again: the next snapshot includes it.
    cluster.agents[2].restart(same_port=True)
    cluster.api(0).wait_hosts_up()
    job = cluster.api(0).snapshot(vm, "host2 back")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    cluster.api(0).assert_consistent()
