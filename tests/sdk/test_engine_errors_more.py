"""SDK exceptions that need a differently configured real engine.

A two-host cluster with fault injection (tests/support/engine.py) for stopped agents, held
locks, failed and slow jobs and an engine bug; an engine with bearer tokens; an engine on
PostgreSQL whose database stops accepting connections.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import disksnap
from disksnap import JobState, errors
from sdk.conftest import MIB, MISSING, rejected
from sdk.embedded_fixture import unique
from support.engine import (
    Cluster,
    EngineProcess,
    PgDatabases,
    engine_with_tokens,
    pg_admin_url,
    retry,
)
from support.processes import FaultsFile


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One engine on SQLite, hosts host0 and host1 with domains sd0 and sd1."""
    tmp = tmp_path_factory.mktemp("errors-cluster")
    c = Cluster(tmp / "cluster", f"sqlite:///{tmp / 'engine.db'}", agent_count=2).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[disksnap.Client]:
    with disksnap.Client(cluster.engines[0].address, timeout=20) as c:
        yield c


@pytest.fixture
def faults(cluster: Cluster) -> Iterator[FaultsFile]:
    """The fault rules of host0's agent, cleared after the test."""
    yield cluster.faults[0]
    cluster.faults[0].clear()


def _vm_with_disk(client: disksnap.Client, domain_id: str) -> tuple[str, str]:
    """A new VM with one 16 MiB disk ``d0`` on ``domain_id``: (vm id, disk id)."""
    vm_id = client.create_vm(unique("vm")).result.vm_id or ""
    disk_id = client.add_disk("d0", 16 * MIB, domain_id=domain_id, vm_id=vm_id).result.disk_id
    return vm_id, disk_id or ""


def _delay(op: str, seconds: float = 3.0) -> dict[str, object]:
    return {"op": op, "disk_id": "*", "action": "delay", "when": "before", "seconds": seconds}


# ---------------------------------------------------------------- a host that is down


def test_host_not_up_and_inactive_domain(cluster: Cluster, client: disksnap.Client) -> None:
    host_id, domain_id = cluster.host_ids[1], cluster.domain_ids[1]
    vm_id, _ = _vm_with_disk(client, domain_id)
    running = client.create_vm(unique("running")).result.vm_id or ""
    client.set_vm_run_state(running, disksnap.RunState.UP, host_id=host_id)
    agent = cluster.agents[1]
    agent.stop()
    try:

        def host_down() -> None:
            status = {h.id: h.status for h in client.list_hosts()}
            assert status[host_id] is disksnap.HostStatus.DOWN

        retry(host_down)
        for call in (
            lambda: client.set_vm_run_state(vm_id, disksnap.RunState.UP, host_id=host_id),
            lambda: client.create_storage_domain(unique("sd"), host_id),
            lambda: client.create_snapshot(running, "memory", save_memory=True),
        ):
            err = rejected(cluster.db_url, errors.HostNotUp, call)
            assert err.reason == "HOST_NOT_UP"
            assert err.code == grpc.StatusCode.FAILED_PRECONDITION
            assert dict(err.metadata) == {"host_id": host_id, "host_name": "host1"}

        # sd1 has no UP host left: it is INACTIVE, and no storage work can be admitted on it.
        for call in (
            lambda: client.add_disk("more", 16 * MIB, domain_id=domain_id, vm_id=vm_id),
            lambda: client.create_snapshot(vm_id, "needs sd1"),
        ):
            unusable = rejected(cluster.db_url, errors.StorageUnusable, call)
            assert unusable.reason == "STORAGE_DOMAIN_STATUS_ILLEGAL"
            assert unusable.metadata["domain_id"] == domain_id
            assert unusable.metadata["status"] == "INACTIVE"
    finally:
        agent.restart()
        cluster.api().wait_hosts_up()
        client.set_vm_run_state(running, disksnap.RunState.DOWN)
    assert len(client.list_snapshots(running)) == 1
    vm = client.get_vm(vm_id)
    assert vm.run_state is disksnap.RunState.DOWN and [d.alias for d in vm.disks] == ["d0"]
    assert len(client.list_snapshots(vm_id)) == 1


# ---------------------------------------------------------------- locks held by running jobs


def test_lock_conflicts(cluster: Cluster, client: disksnap.Client, faults: FaultsFile) -> None:
    vm_id, disk_id = _vm_with_disk(client, cluster.domain_ids[0])
    name = client.get_vm(vm_id).name
    s1 = client.create_snapshot(vm_id, "S1").result.snapshot_id or ""
    s1_volume = client.list_snapshots(vm_id)[1].disks[0].volume_id

    # Any other job holding the VM: VM_IS_LOCKED.
    faults.set([_delay("CreateVolume")])
    adding = client.add_disk(
        "slow", 16 * MIB, domain_id=cluster.domain_ids[0], vm_id=vm_id, wait=False
    )
    with pytest.raises(errors.LockConflict) as locked:
        client.update_vm(vm_id, cpu_count=4)
    assert locked.value.reason == "VM_IS_LOCKED"
    assert locked.value.code == grpc.StatusCode.ABORTED and locked.value.retryable
    assert dict(locked.value.metadata) == {
        "vm_id": vm_id,
        "vm_name": name,
        "job_id": adding.id,
        "job_kind": "ADD_DISK",
    }
    assert adding.wait().state is JobState.SUCCEEDED
    assert client.get_vm(vm_id).config.cpu_count == 1

    # A snapshot job other than create holding the VM: VM_IS_DURING_SNAPSHOT; its disks:
    # DISKS_LOCKED for a request that locks only the disk.
    faults.set([_delay("MergeVolumes")])
    removing = client.remove_snapshot(vm_id, s1, wait=False)
    with pytest.raises(errors.LockConflict) as during:
        client.create_snapshot(vm_id, "while removing")
    assert during.value.reason == "VM_IS_DURING_SNAPSHOT"
    assert during.value.metadata["job_id"] == removing.id
    assert during.value.metadata["job_kind"] == "REMOVE_SNAPSHOT"
    with pytest.raises(errors.LockConflict) as disks:
        client.remove_disk_snapshots([s1_volume])
    assert disks.value.reason == "DISKS_LOCKED"
    assert dict(disks.value.metadata) == {
        "disk_ids": disk_id,
        "disk_aliases": "d0",
        "job_id": removing.id,
    }
    assert removing.wait().state is JobState.SUCCEEDED
    assert [s.type for s in client.list_snapshots(vm_id)] == [disksnap.SnapshotType.ACTIVE]


# ---------------------------------------------------------------- failed and slow jobs


def test_job_failed_and_wait_timeout(
    cluster: Cluster, client: disksnap.Client, faults: FaultsFile
) -> None:
    vm_id, _ = _vm_with_disk(client, cluster.domain_ids[0])
    faults.set([{"op": "CreateVolume", "disk_id": "*", "code": "INTERNAL", "times": 1}])
    with pytest.raises(errors.JobFailed) as failed:
        client.add_disk("broken", 16 * MIB, domain_id=cluster.domain_ids[0], vm_id=vm_id)
    job = failed.value.job
    assert job.state is JobState.FAILED and job.kind is disksnap.JobKind.ADD_DISK
    assert failed.value.reason == "VOLUME_CREATION_ERROR"
    assert job.error is not None and job.error.reason == "VOLUME_CREATION_ERROR"
    # The failed disk was compensated away.
    assert [d.alias for d in client.get_vm(vm_id).disks] == ["d0"]

    faults.set([_delay("CreateVolume")])
    with pytest.raises(errors.WaitTimeout) as slow:
        client.add_disk(
            "slow", 16 * MIB, domain_id=cluster.domain_ids[0], vm_id=vm_id, wait_timeout=0.5
        )
    assert slow.value.timeout == 0.5 and not slow.value.job.done
    finished = client.job_handle(slow.value.job).wait()
    assert finished.state is JobState.SUCCEEDED
    assert sorted(d.alias for d in client.get_vm(vm_id).disks) == ["d0", "slow"]


# ---------------------------------------------------------------- an engine bug


def _execute(db_path: str, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(statement)


def test_engine_error(cluster: Cluster, client: disksnap.Client) -> None:
    """A failure the engine does not expect is ENGINE_ERROR, and the request is rolled back.

    The unexpected failure is a trigger that makes the database refuse one VM's insert.
    """
    name = unique("boom")
    db_path = cluster.db_url.removeprefix("sqlite:///")
    _execute(
        db_path,
        f"CREATE TRIGGER refuse_boom BEFORE INSERT ON vms WHEN NEW.name = '{name}' "
        "BEGIN SELECT RAISE(ABORT, 'injected'); END",
    )
    try:
        err = rejected(cluster.db_url, errors.InternalError, lambda: client.create_vm(name))
    finally:
        _execute(db_path, "DROP TRIGGER refuse_boom")
    assert err.reason == "ENGINE_ERROR" and err.code == grpc.StatusCode.INTERNAL
    assert err.domain == "disksnap.engine" and not err.retryable
    # Nothing was consumed, not even the request id.
    assert err.request_id is not None
    job = client.create_vm(name, request_id=err.request_id)
    assert job.succeeded and [v.name for v in client.list_vms(name=name)] == [name]


# ---------------------------------------------------------------- bearer tokens


def test_authentication_and_roles(tmp_path: Path) -> None:
    engine = engine_with_tokens(tmp_path).start()
    try:
        for token in (None, "wrong-secret"):
            with disksnap.Client(engine.address, token=token) as anonymous:
                with pytest.raises(errors.Unauthenticated) as caught:
                    anonymous.list_vms()
                assert caught.value.reason == "UNAUTHENTICATED"
                assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(errors.Unauthenticated):
                    anonymous.create_vm("refused")
        with disksnap.Client(engine.address, token="viewer-secret") as viewer:
            assert viewer.list_vms() == []
            with pytest.raises(errors.PermissionDenied) as denied:
                viewer.create_vm("refused")
            assert denied.value.reason == "PERMISSION_DENIED"
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert dict(denied.value.metadata) == {"role": "viewer"}
            assert not denied.value.retryable
            with disksnap.Client(engine.address, token="admin-secret") as admin:
                assert admin.create_vm("allowed").succeeded
            assert [v.name for v in viewer.list_vms()] == ["allowed"]
    finally:
        engine.stop()


# ---------------------------------------------------------------- an unreachable database


@pytest.fixture
def pg_engine(tmp_path: Path) -> Iterator[tuple[PgDatabases, EngineProcess]]:
    """An engine on a fresh PostgreSQL database (dropped afterwards)."""
    databases = PgDatabases(pg_admin_url())
    try:
        engine = EngineProcess(tmp_path / "engine", databases.create()).start()
        try:
            yield databases, engine
        finally:
            engine.stop()
    finally:
        databases.drop_all()


def test_database_unavailable(pg_engine: tuple[PgDatabases, EngineProcess]) -> None:
    databases, engine = pg_engine
    with disksnap.Client(engine.address, timeout=10) as client:
        assert client.create_vm("before").succeeded
        databases.allow_connections(engine.db_url, False)
        try:
            # The SDK retries UNAVAILABLE by itself (same request id) before raising.
            with pytest.raises(errors.Unavailable) as caught:
                client.create_vm("during")
        finally:
            databases.allow_connections(engine.db_url, True)
        err = caught.value
        assert err.reason == "DATABASE_UNAVAILABLE"
        assert err.code == grpc.StatusCode.UNAVAILABLE and err.retryable
        assert err.request_id is not None
        job = client.create_vm("during", request_id=err.request_id)
        assert job.succeeded
        assert sorted(v.name for v in client.list_vms()) == ["before", "during"]
        assert client.create_vm("during", request_id=err.request_id).id == job.id


# ---------------------------------------------------------------- an engine that is draining


def test_engine_shutting_down(tmp_path: Path) -> None:
    engine = EngineProcess(
        tmp_path / "engine",
        f"sqlite:///{tmp_path / 'engine.db'}",
        extra_args=["--shutdown-drain", "30"],
    ).start()
    try:
        with disksnap.Client(engine.address, timeout=10) as client:
            before = client.create_vm(unique("before")).result.vm_id
            assert engine.proc is not None
            engine.proc.send_signal(signal.SIGTERM)

            def draining() -> None:
                # A mutation that would change nothing: VM_NOT_EXIST until the drain starts.
                with pytest.raises(errors.ApiError) as caught:
                    client.remove_vm(MISSING)
                assert caught.value.reason == "ENGINE_SHUTTING_DOWN"

            retry(draining)
            with pytest.raises(errors.Unavailable) as refused:
                client.create_vm(unique("during"))
            assert refused.value.reason == "ENGINE_SHUTTING_DOWN"
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            assert refused.value.retryable
            # Queries are still answered while draining; nothing was created.
            assert [vm.id for vm in client.list_vms()] == [before]
    finally:
        engine.kill9()


# ---------------------------------------------------------------- a server without the RPC


def test_unimplemented_from_a_server_without_the_rpc(cluster: Cluster) -> None:
    # A real gRPC server that does not offer the engine's services (here a storage agent,
    # as an SDK pointed at the wrong port or at an engine too old for a call would see).
    with (
        disksnap.Client(cluster.agents[0].address, timeout=10) as wrong,
        pytest.raises(errors.Unimplemented) as caught,
    ):
        wrong.list_vms()
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.reason == "UNIMPLEMENTED"
    assert not caught.value.retryable
