"""The engine loses its PostgreSQL connections mid-job: the job still ends, consistently.

The database refuses every connection (and the existing ones are cut) while a snapshot's
agent calls are in flight. The flow's next transaction fails, the job keeps its lease until
it expires, and the claim loop resumes it once the database is back: its STARTED steps are
re-issued with their op_ids and the agent answers with the first outcome.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from support import qemu
from support.engine import Cluster, PgDatabases, db_dump

MiB = 1024 * 1024


@pytest.fixture
def pg_cluster(tmp_path: Path, pg_databases: PgDatabases, pg_url: str) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "cluster", pg_url, agent_count=2).start()
    try:
        yield cluster
    finally:
        pg_databases.allow_connections(pg_url, True)
        cluster.stop()


def test_snapshot_survives_losing_the_database_mid_job(
    pg_cluster: Cluster, pg_databases: PgDatabases
) -> None:
    cluster = pg_cluster
    api = cluster.api()
    vm_id = api.create_vm("dbloss")
    disks = [api.add_disk(vm_id, f"d{i}", cluster.domain_ids[i % 2], 16 * MiB) for i in range(3)]
    before = api.heads(vm_id)
    for faults in cluster.faults:
        faults.set([{"op": "CreateVolume", "disk_id": "*", "action": "delay", "seconds": 2}])
    job = api.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(vm_id=vm_id, description="through an outage"),
        timeout=10,
    ).job
    time.sleep(0.5)  # the agents are inside their delayed CreateVolume calls
    pg_databases.allow_connections(cluster.db_url, False)
    time.sleep(4)  # the calls return and the flow's transactions fail
    pg_databases.allow_connections(cluster.db_url, True)
    for faults in cluster.faults:
        faults.clear()

    job = api.wait_job(job.id, timeout=120)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    # The job was resumed: its steps were re-issued after the outage.
    assert all(step.attempts >= 2 for step in job.steps), job.steps
    after = api.heads(vm_id)
    for i, disk_id in enumerate(disks):
        assert after[disk_id] != before[disk_id]
        head = cluster.volume_path(i % 2, cluster.domain_ids[i % 2], disk_id, after[disk_id])
        assert qemu.info(head).get("backing-filename") == before[disk_id]
        qemu.check_image(head)
    assert db_dump(cluster.db_url)["locks"] == []
    api.assert_consistent()
