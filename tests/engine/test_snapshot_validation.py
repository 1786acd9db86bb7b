"""CreateSnapshot validations: reason codes, gRPC codes, check order, nothing changed."""

from __future__ import annotations

import uuid

import grpc
import pytest

from disksnap.engine.v1 import common_pb2, inventory_pb2, snapshots_pb2
from support.engine import Cluster, db_dump, error_info

MiB = 1024 * 1024
UNKNOWN = "0b7a3c5e-1111-4222-8333-944455556666"


@pytest.fixture(scope="module")
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


@pytest.fixture(scope="module")
def vm_setup(cluster: Cluster) -> dict[str, str]:
    api = cluster.api()
    vm = api.create_vm("vmv")
    other = api.create_vm("other")
    disk = api.add_disk(vm, "vmv-d0", cluster.domain_ids[0], 16 * MiB)
    foreign = api.add_disk(other, "other-d0", cluster.domain_ids[0], 16 * MiB)
    shared = api.add_disk(vm, "vmv-shared", cluster.domain_ids[1], 16 * MiB, shareable=True)
    lun_job = api.inventory.AddDisk(
        inventory_pb2.AddDiskRequest(
            alias="vmv-lun", kind=inventory_pb2.DISK_KIND_LUN, lun_id="lun-1", vm_id=vm
        ),
        timeout=10,
    ).job
    lun = api.wait_job(lun_job.id).result.disk_id
    return {"vm": vm, "disk": disk, "foreign": foreign, "shared": shared, "lun": lun}


CASES = [
    # (name, request fields, expected code, expected reason)
    (
        "empty description",
        {"description": ""},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DESCRIPTION_EMPTY",
    ),
    (
        "blank description",
        {"description": "   "},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DESCRIPTION_EMPTY",
    ),
    (
        "4001 chars",
        {"description": "x" * 4001},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DESCRIPTION_TOO_LONG",
    ),
    (
        "control char",
        {"description": "a\x07b"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DESCRIPTION_INVALID",
    ),
    ("bad vm id", {"vm_id": "not-a-uuid"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
    (
        "uppercase vm id",
        {"vm_id": UNKNOWN.upper()},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    ),
    ("bad disk id", {"disks": ["../../etc"]}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
    (
        "duplicate disks",
        {"disks": ["@disk", "@disk"]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DUPLICATE_DISK_IDS",
    ),
    ("unknown vm", {"vm_id": UNKNOWN}, grpc.StatusCode.NOT_FOUND, "VM_NOT_EXIST"),
    ("unknown disk", {"disks": [UNKNOWN]}, grpc.StatusCode.NOT_FOUND, "DISKS_NOT_EXIST"),
    (
        "foreign disk",
        {"disks": ["@foreign"]},
        grpc.StatusCode.FAILED_PRECONDITION,
        "DISKS_NOT_ATTACHED_TO_VM",
    ),
    (
        "shareable disk",
        {"disks": ["@shared"]},
        grpc.StatusCode.FAILED_PRECONDITION,
        "DISK_SNAPSHOT_NOT_SUPPORTED",
    ),
    (
        "lun disk",
        {"disks": ["@lun"]},
        grpc.StatusCode.FAILED_PRECONDITION,
        "DISK_SNAPSHOT_NOT_SUPPORTED",
    ),
    (
        "memory on a down vm",
        {"save_memory": True},
        grpc.StatusCode.FAILED_PRECONDITION,
        "MEMORY_REQUIRES_RUNNING_VM",
    ),
    # Check order: the first failing check wins (SPEC §3.0).
    (
        "description before vm",
        {"description": "", "vm_id": UNKNOWN},
        grpc.StatusCode.INVALID_ARGUMENT,
        "DESCRIPTION_EMPTY",
    ),
    (
        "ids before existence",
        {"vm_id": UNKNOWN, "disks": ["nope"]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    ),
    (
        "vm before disks",
        {"vm_id": UNKNOWN, "disks": [UNKNOWN]},
        grpc.StatusCode.NOT_FOUND,
        "VM_NOT_EXIST",
    ),
    (
        "existence before attachment",
        {"disks": [UNKNOWN, "@foreign"]},
        grpc.StatusCode.NOT_FOUND,
        "DISKS_NOT_EXIST",
    ),
]


@pytest.mark.parametrize(("name", "fields", "code", "reason"), CASES, ids=[c[0] for c in CASES])
def test_rejected_and_nothing_changed(
    cluster: Cluster,
    vm_setup: dict[str, str],
    name: str,
    fields: dict[str, object],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    api = cluster.api()
    req = snapshots_pb2.CreateSnapshotRequest(
        vm_id=str(fields.get("vm_id", vm_setup["vm"])),
        description=str(fields.get("description", "a snapshot")),
        save_memory=bool(fields.get("save_memory", False)),
        envelope=common_pb2.RequestEnvelope(request_id=str(uuid.uuid4())),
    )
    if "disks" in fields:
        ids = [vm_setup[d[1:]] if d.startswith("@") else d for d in fields["disks"]]  # type: ignore[attr-defined]
        req.disks.disk_ids.extend(ids)
    before = db_dump(cluster.db_url)
    with pytest.raises(grpc.RpcError) as caught:
        api.snapshots.CreateSnapshot(req, timeout=10)
    got_code, got_reason, metadata = error_info(caught.value)
    assert (got_code, got_reason) == (code, reason), caught.value.details()
    if reason.startswith("DISK") and reason != "DISKS_NOT_EXIST":
        assert metadata["disk_ids"]
    assert db_dump(cluster.db_url) == before
    # A rejected request does not consume its request_id.
    if reason not in ("VM_NOT_EXIST", "INVALID_FIELD") and "vm_id" not in fields:
        ok = snapshots_pb2.CreateSnapshotRequest(
            vm_id=vm_setup["vm"], description="fine", envelope=req.envelope
        )
        job = api.snapshots.CreateSnapshot(ok, timeout=10).job
        assert api.wait_job(job.id).state == common_pb2.JOB_STATE_SUCCEEDED


def test_locked_vm_is_aborted(cluster: Cluster, vm_setup: dict[str, str]) -> None:
    api = cluster.api()
    cluster.faults[0].set(
        [{"op": "CreateVolume", "disk_id": "*", "action": "delay", "seconds": 3, "times": 1}]
    )
    first = api.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(vm_id=vm_setup["vm"], description="slow"), timeout=10
    ).job
    with pytest.raises(grpc.RpcError) as caught:
        api.snapshots.CreateSnapshot(
            snapshots_pb2.CreateSnapshotRequest(vm_id=vm_setup["vm"], description="second"),
            timeout=10,
        )
    code, reason, metadata = error_info(caught.value)
    assert code == grpc.StatusCode.ABORTED
    assert reason == "SNAPSHOT_IS_BEING_TAKEN_FOR_VM"
    assert metadata["job_id"] == first.id and metadata["vm_name"] == "vmv"
    assert api.wait_job(first.id).state == common_pb2.JOB_STATE_SUCCEEDED


def test_request_id_reused_for_another_request(cluster: Cluster, vm_setup: dict[str, str]) -> None:
    api = cluster.api()
    env = common_pb2.RequestEnvelope(request_id=str(uuid.uuid4()))
    api.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(vm_id=vm_setup["vm"], description="a", envelope=env),
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as caught:
        api.snapshots.CreateSnapshot(
            snapshots_pb2.CreateSnapshotRequest(
                vm_id=vm_setup["vm"], description="b", envelope=env
            ),
            timeout=10,
        )
    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
