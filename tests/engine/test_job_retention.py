"""Jobs are kept for ``--job-retention`` after they end, then forgotten (SPEC §5.1, §5.3)."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from disksnap.engine.v1 import common_pb2, inventory_pb2, jobs_pb2
from support.engine import Cluster, db_dump, retry

MiB = 1 << 20


def test_finished_jobs_are_forgotten_after_their_retention(tmp_path: Path, db_url: str) -> None:
    cluster = Cluster(
        tmp_path / "cluster",
        db_url,
        agent_count=1,
        engine_args=["--job-retention", "3", "--reaper-interval", "0.5"],
    ).start()
    try:
        api = cluster.api()
        vm_id = api.create_vm("retained")
        request = inventory_pb2.AddDiskRequest(
            envelope=common_pb2.RequestEnvelope(request_id=str(uuid.uuid4()), wait_timeout_s=60),
            alias="d0",
            vm_id=vm_id,
            domain_id=cluster.domain_ids[0],
            virtual_size=MiB,
            format=inventory_pb2.DISK_FORMAT_COW,
        )
        job = api.inventory.AddDisk(request, timeout=70).job
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED and job.steps, job
        # While retained, the same request_id returns the same job.
        assert api.inventory.AddDisk(request, timeout=70).job.id == job.id

        def forgotten() -> None:
            try:
                api.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                return
            raise AssertionError(f"job {job.id} is still retained")

        retry(forgotten, timeout=30)
        dump = db_dump(cluster.db_url)
        assert not any(job.id in row for row in dump["jobs"])
        assert not any(job.id in row for row in dump["job_steps"])
        # What the job did stays; only its record is gone.
        vm = api.inventory.GetVm(inventory_pb2.GetVmRequest(vm_id=vm_id), timeout=10).vm
        assert [d.id for d in vm.disks] == [job.result.disk_id]
        # The request_id is free again: the same request is a new request now.
        again = api.inventory.AddDisk(request, timeout=70).job
        assert again.id != job.id
        assert api.violations() == []
    finally:
        cluster.stop()
