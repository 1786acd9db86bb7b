"""RemoveSnapshot / RemoveDiskSnapshots validations: reason codes, check order, nothing changed.

Every rejection is compared with a dump of the whole database taken just before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from disksnap.engine.v1 import common_pb2, inventory_pb2, snapshots_pb2
from engine.test_remove_snapshot import Tracker, preview_available
from support.content import Write
from support.engine import Cluster, db_dump, error_info, retry, volume_status

NIL = "00000000-0000-0000-0000-000000000000"
UNKNOWN = "3c1f5a7e-2222-4333-8444-955566667777"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def shared(module_cluster: Cluster) -> Cluster:
    return module_cluster


@pytest.fixture(scope="module")
def vm(shared: Cluster) -> Tracker:
    """vmv: disks d0 (host 0) and d1 (host 1), snapshots S1 (both), S2 (d0), S3 (config)."""
    t = Tracker(shared, "vmv")
    d0, d1 = t.add_disk(0), t.add_disk(1)
    t.write(d0, Write(0, 2, 0x11))
    t.write(d1, Write(0, 2, 0x21))
    t.snapshot("S1")
    t.write(d0, Write(1, 2, 0x12))
    t.snapshot("S2", [d0])
    t.snapshot("S3", [])
    return t


def _ids(t: Tracker) -> dict[str, str]:
    snaps = t.snapshots()
    return {"active": snaps[0].id, "s1": snaps[1].id, "s2": snaps[2].id, "s3": snaps[3].id}


def _rejected(
    cluster: Cluster, call: Callable[[], Any], code: grpc.StatusCode, reason: str
) -> dict[str, str]:
    """Run a request that must be rejected; nothing in the database may change."""
    before = db_dump(cluster.db_url)
    with pytest.raises(grpc.RpcError) as err:
        call()
    got_code, got_reason, meta = error_info(err.value)
    assert (got_code, got_reason) == (code, reason), meta
    assert db_dump(cluster.db_url) == before
    return meta


def _remove(t: Tracker, vm_id: str, snapshot_id: str) -> Callable[[], Any]:
    req = snapshots_pb2.RemoveSnapshotRequest(vm_id=vm_id, snapshot_id=snapshot_id)
    return lambda: t.api.snapshots.RemoveSnapshot(req, timeout=10)


def _remove_disk(t: Tracker, volume_ids: list[str]) -> Callable[[], Any]:
    req = snapshots_pb2.RemoveDiskSnapshotsRequest(volume_ids=volume_ids)
    return lambda: t.api.snapshots.RemoveDiskSnapshots(req, timeout=10)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ABORTED = grpc.StatusCode.ABORTED


def test_remove_snapshot_argument_and_existence_checks(shared: Cluster, vm: Tracker) -> None:
    ids = _ids(vm)
    other = Tracker(shared, "vmother")
    other_snap = other.snapshot("theirs", [])
    meta = _rejected(shared, _remove(vm, "not-a-uuid", ids["s1"]), INVALID, "INVALID_FIELD")
    assert meta["field"] == "vm_id"
    meta = _rejected(shared, _remove(vm, vm.vm_id, NIL), INVALID, "CORRUPTED_VM_SNAPSHOT_ID")
    assert meta["field"] == "snapshot_id"
    _rejected(shared, _remove(vm, vm.vm_id, "S1"), INVALID, "INVALID_FIELD")
    # Argument checks come before existence checks.
    _rejected(shared, _remove(vm, UNKNOWN, NIL), INVALID, "CORRUPTED_VM_SNAPSHOT_ID")
    meta = _rejected(shared, _remove(vm, UNKNOWN, ids["s1"]), NOT_FOUND, "VM_NOT_EXIST")
    assert meta["vm_id"] == UNKNOWN
    meta = _rejected(
        shared, _remove(vm, vm.vm_id, UNKNOWN), NOT_FOUND, "VM_SNAPSHOT_DOES_NOT_EXIST"
    )
    assert meta == {"vm_id": vm.vm_id, "snapshot_id": UNKNOWN}
    _rejected(shared, _remove(vm, vm.vm_id, other_snap), NOT_FOUND, "VM_SNAPSHOT_DOES_NOT_EXIST")


def test_remove_snapshot_type_and_state_checks(shared: Cluster, vm: Tracker) -> None:
    ids = _ids(vm)
    meta = _rejected(
        shared, _remove(vm, vm.vm_id, ids["active"]), PRECONDITION, "VM_SNAPSHOT_TYPE_NOT_ALLOWED"
    )
    assert meta == {
        "snapshot_id": ids["active"],
        "snapshot_type": "ACTIVE",
        "supported_snapshot_types": "REGULAR",
    }
    # A head made ILLEGAL out of band: DISKS_ILLEGAL, for the disks the snapshot involves only.
    d0 = vm.disks[0]
    head = vm.api.heads(vm.vm_id)[d0]
    with volume_status(shared.db_url, head, "ILLEGAL"):
        meta = _rejected(shared, _remove(vm, vm.vm_id, ids["s1"]), PRECONDITION, "DISKS_ILLEGAL")
        assert meta["disk_ids"] == d0
        _rejected(
            shared, _remove_disk(vm, [vm.owned(ids["s2"])[d0]]), PRECONDITION, "DISKS_ILLEGAL"
        )
    vm.api.assert_consistent()


def test_locks_and_their_precedence(shared: Cluster, vm: Tracker) -> None:
    ids = _ids(vm)
    d0, d1 = vm.disks
    s2_d0 = vm.owned(ids["s2"])[d0]
    s1_d1 = vm.owned(ids["s1"])[d1]
    shared.faults[1].set(
        [{"op": "MergeVolumes", "disk_id": d1, "action": "delay", "when": "after", "seconds": 4}]
    )
    try:
        # RemoveDiskSnapshots on d1 holds disk:d1 only.
        job = vm.remove_disk_snapshots([s1_d1], wait=False)
        time.sleep(0.3)
        meta = _locked(vm, _remove(vm, vm.vm_id, ids["s1"]), "DISKS_LOCKED")
        assert meta["disk_ids"] == d1 and meta["job_id"] == job.id
        _locked(vm, _remove_disk(vm, [s1_d1]), "DISKS_LOCKED")
        assert vm.api.wait_job(job.id).state == common_pb2.JOB_STATE_SUCCEEDED
        vm.forget([s1_d1])

        # RemoveSnapshot holds vm: and the disks of its volumes.
        shared.faults[0].set(
            [
                {
                    "op": "MergeVolumes",
                    "disk_id": d0,
                    "action": "delay",
                    "when": "after",
                    "seconds": 4,
                }
            ]
        )
        job = vm.remove(ids["s2"], wait=False)
        time.sleep(0.3)
        meta = _locked(vm, _remove(vm, vm.vm_id, ids["s1"]), "VM_IS_DURING_SNAPSHOT")
        assert meta["job_kind"] == "REMOVE_SNAPSHOT" and meta["job_id"] == job.id
        # The lock is checked before the type (SPEC §3.6 order).
        _locked(vm, _remove(vm, vm.vm_id, ids["active"]), "VM_IS_DURING_SNAPSHOT")
        _locked(vm, _remove_disk(vm, [vm.owned(ids["s1"])[d0]]), "DISKS_LOCKED")
        create = snapshots_pb2.CreateSnapshotRequest(vm_id=vm.vm_id, description="x")
        _locked(
            vm, lambda: vm.api.snapshots.CreateSnapshot(create, timeout=10), "VM_IS_DURING_SNAPSHOT"
        )
        assert vm.api.wait_job(job.id).state == common_pb2.JOB_STATE_SUCCEEDED
        vm.forget([s2_d0])
    finally:
        shared.faults[0].clear()
        shared.faults[1].clear()
    vm.verify()
    vm.api.assert_consistent()


def test_remove_disk_snapshots_checks(shared: Cluster) -> None:
    t = Tracker(shared, "vmdv")
    d0, d1 = t.add_disk(0), t.add_disk(2)
    s1 = t.snapshot("S1")
    heads = t.api.heads(t.vm_id)
    v0, v1 = t.owned(s1)[d0], t.owned(s1)[d1]
    _rejected(shared, _remove_disk(t, []), INVALID, "INVALID_FIELD")
    _rejected(shared, _remove_disk(t, ["nope"]), INVALID, "INVALID_FIELD")
    _rejected(shared, _remove_disk(t, [NIL]), INVALID, "INVALID_FIELD")
    meta = _rejected(shared, _remove_disk(t, [v0, v0]), INVALID, "DUPLICATE_DISK_IDS")
    assert meta["volume_ids"] == v0
    meta = _rejected(shared, _remove_disk(t, [v0, UNKNOWN]), NOT_FOUND, "DISK_SNAPSHOTS_NOT_EXIST")
    assert meta["volume_ids"] == UNKNOWN
    # Existence wins over "another disk" and "active".
    _rejected(shared, _remove_disk(t, [heads[d1], UNKNOWN]), NOT_FOUND, "DISK_SNAPSHOTS_NOT_EXIST")
    meta = _rejected(
        shared,
        _remove_disk(t, [v0, v1]),
        PRECONDITION,
        "DISKS_SNAPSHOTS_DONT_BELONG_TO_SAME_DISK",
    )
    assert meta["volume_ids"] == ",".join(sorted([v0, v1]))
    _rejected(
        shared,
        _remove_disk(t, [v0, heads[d1]]),
        PRECONDITION,
        "DISKS_SNAPSHOTS_DONT_BELONG_TO_SAME_DISK",
    )
    meta = _rejected(
        shared, _remove_disk(t, [v0, heads[d0]]), PRECONDITION, "DISK_SNAPSHOTS_ACTIVE"
    )
    assert meta["volume_ids"] == heads[d0]
    t.api.assert_consistent()


def test_in_preview_is_refused(shared: Cluster) -> None:
    t = Tracker(shared, "vmpv")
    d0 = t.add_disk(0)
    s1 = t.snapshot("S1")
    if not preview_available(t.api, t.vm_id):
        # TODO(preview): needs PreviewSnapshot; runs as soon as the lead's preview lands.
        pytest.skip("TODO: PreviewSnapshot not implemented yet (VM_IN_PREVIEW checks)")
    job = t.api.snapshots.PreviewSnapshot(
        snapshots_pb2.PreviewSnapshotRequest(vm_id=t.vm_id, config_snapshot_id=s1), timeout=10
    ).job
    assert t.api.wait_job(job.id).state == common_pb2.JOB_STATE_SUCCEEDED
    preview_id = next(s.id for s in t.snapshots() if s.type == snapshots_pb2.SNAPSHOT_TYPE_PREVIEW)
    _rejected(shared, _remove(t, t.vm_id, s1), PRECONDITION, "VM_IN_PREVIEW")
    # In preview is checked before the type (SPEC §3.6: as in oVirt).
    _rejected(shared, _remove(t, t.vm_id, preview_id), PRECONDITION, "VM_IN_PREVIEW")
    _rejected(shared, _remove_disk(t, [t.owned(s1)[d0]]), PRECONDITION, "VM_IN_PREVIEW")
    undo = t.api.snapshots.UndoPreview(
        snapshots_pb2.UndoPreviewRequest(vm_id=t.vm_id), timeout=10
    ).job
    assert t.api.wait_job(undo.id).state == common_pb2.JOB_STATE_SUCCEEDED
    t.api.assert_consistent()


def test_space_and_domain_status(cluster: Cluster) -> None:
    """The space check counts the allocation the agent measures now, not stale DB sizes.

    Free space on the shared test filesystem swings by hundreds of MiB per second, so the
    engine is restarted with a reserve no domain can meet, and the check is judged by the
    ``required_bytes`` it reports.
    """
    t = Tracker(cluster, "vmspace")
    d0 = t.add_disk(0, size=128 * MiB)
    t.write(d0, Write(0, 64, 0x5A))
    big = t.snapshot("big")
    t.write(d0, Write(100, 1, 0x5B))
    small = t.snapshot("small")
    t.write(d0, Write(101, 1, 0x5C))
    domain = cluster.domain_ids[0]
    recorded = {n.id: n.actual_size for n in t.tree(d0)}
    assert recorded[t.owned(big)[d0]] < MiB  # what the volume held when it was created

    _restart_engine(t, ("--free-space-reserve", str(2**60)))
    meta = _rejected(
        cluster, _remove(t, t.vm_id, big), PRECONDITION, "DISK_SPACE_LOW_ON_STORAGE_DOMAIN"
    )
    assert meta["domain_id"] == domain and meta["domain_name"] == "sd0"
    assert 64 * MiB <= int(meta["required_bytes"]) < 66 * MiB
    assert int(meta["free_bytes"]) > 0
    meta = _rejected(
        cluster, _remove(t, t.vm_id, small), PRECONDITION, "DISK_SPACE_LOW_ON_STORAGE_DOMAIN"
    )
    assert MiB <= int(meta["required_bytes"]) < 2 * MiB
    _rejected(
        cluster,
        _remove_disk(t, [t.owned(big)[d0]]),
        PRECONDITION,
        "DISK_SPACE_LOW_ON_STORAGE_DOMAIN",
    )

    # No UP host serves the domain: STORAGE_DOMAIN_STATUS_ILLEGAL (checked before space).
    cluster.agents[0].kill9()
    time.sleep(4)
    meta = _rejected(
        cluster, _remove(t, t.vm_id, big), PRECONDITION, "STORAGE_DOMAIN_STATUS_ILLEGAL"
    )
    assert meta["domain_id"] == domain and meta["status"] == "INACTIVE"
    cluster.agents[0].restart(same_port=True)
    _restart_engine(t, ())
    volume = t.owned(big)[d0]
    job = t.remove(big)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget([volume])
    t.verify()
    t.api.assert_consistent()


def _restart_engine(t: Tracker, extra_args: tuple[str, ...]) -> None:
    """Restart the engine with other arguments; wait for heartbeats newer than the restart."""
    engine = t.cluster.engines[0]
    engine.stop()
    engine.extra_args = extra_args
    started = time.time()
    engine.restart()
    t.refresh()

    def fresh() -> None:
        hosts = t.api.inventory.ListHosts(inventory_pb2.ListHostsRequest(), timeout=5).hosts
        stale = [h.name for h in hosts if h.last_heartbeat_at.ToMicroseconds() / 1e6 < started]
        assert not stale, f"no heartbeat since the restart from {stale}"

    retry(fresh, 30)


def _locked(t: Tracker, call: Callable[[], Any], reason: str) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code, got, meta = error_info(err.value)
    assert (code, got) == (ABORTED, reason), meta
    return meta
