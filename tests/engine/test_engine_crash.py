"""Engine kill -9 at several points of a 5-disk snapshot, then restart (SPEC §5.7, INV-11)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from engine_svc.db.models import Job, JobStep
from engine_svc.db.session import make_engine
from support.engine import Cluster, EngineApi

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
    api, job = _kill_restart_and_wait(cluster, job.id, timeout=120)
    expected = (
        common_pb2.JOB_STATE_SUCCEEDED_PARTIAL if failing_disk else common_pb2.JOB_STATE_SUCCEEDED
    )
    assert job.state == expected, job
    after = api.heads(vm_id)
    for d in disks:
        excluded = failing_disk and d == disks[0]
        assert (after[d] == before[d]) is excluded
    api.assert_consistent()


def _kill_restart_and_wait(
    cluster: Cluster, job_id: str, *, timeout: float
) -> tuple[EngineApi, common_pb2.Job]:
    """kill -9 the engine, restart it, wait for the job to end, then lift every fault."""
    engine = cluster.engines[0]
    engine.kill9()
    engine.restart()
    api = cluster.api()
    job = api.wait_job(job_id, timeout=timeout)
    for faults in cluster.faults:
        faults.clear()
    return api, job


def _job_rows(
    db_url: str, job_id: str
) -> tuple[tuple[str, str | None, int], list[tuple[str, int]]]:
    """(state, lease_owner, lease_epoch) of a job and (state, attempts) of its steps, read
    straight from the engine's database."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            job = conn.execute(
                select(Job.state, Job.lease_owner, Job.lease_epoch).where(Job.id == job_id)
            ).one()
            steps = conn.execute(
                select(JobStep.state, JobStep.attempts)
                .where(JobStep.job_id == job_id)
                .order_by(JobStep.seq)
            ).all()
    finally:
        engine.dispose()
    return (job.state, job.lease_owner, job.lease_epoch), [(s.state, s.attempts) for s in steps]


def test_admission_claims_the_job_and_a_restarted_engine_reissues_its_steps(
    cluster: Cluster,
) -> None:
    """The admitting engine claims the job in the admission transaction (lease epoch 1,
    every step STARTED before any agent call); killed while the agents work, the job is
    claimed again (epoch 2) and every step re-issued with its op_id, no volume left over."""
    api = cluster.api()
    vm_id = api.create_vm("vmclaim")
    disks = [api.add_disk(vm_id, f"a{i}", cluster.domain_ids[i], 16 * MiB) for i in range(3)]
    before = api.heads(vm_id)
    for faults in cluster.faults:
        faults.set([{"op": "CreateVolume", "disk_id": "*", "action": "delay", "seconds": 1.5}])
    job = api.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(vm_id=vm_id, description="claimed"), timeout=10
    ).job
    assert job.state == common_pb2.JOB_STATE_RUNNING, job
    assert _job_rows(cluster.db_url, job.id) == (
        ("RUNNING", "engine0", 1),
        [("STARTED", 1)] * 3,
    )

    api, job = _kill_restart_and_wait(cluster, job.id, timeout=60)

    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert _job_rows(cluster.db_url, job.id) == (("SUCCEEDED", None, 2), [("DONE", 2)] * 3)
    after = api.heads(vm_id)
    assert all(after[d] != before[d] for d in disks)
    api.assert_consistent()
