"""Every exception class the current engine can produce, raised by the real engine."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest

import disksnap
from disksnap import errors
from disksnap.embedded import EmbeddedServer
from sdk.conftest import MIB, make_vm
from sdk.embedded_fixture import unique

MISSING = "00000000-0000-4000-8000-000000000001"


def test_vm_not_exist(client: disksnap.Client) -> None:
    with pytest.raises(errors.VmNotExist) as caught:
        client.get_vm(MISSING)
    err = caught.value
    assert err.reason == "VM_NOT_EXIST"
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.metadata["vm_id"] == MISSING
    assert err.domain == "disksnap.engine"
    assert not err.retryable


def test_disks_not_exist(client: disksnap.Client, vm: disksnap.Vm) -> None:
    with pytest.raises(errors.DisksNotExist) as caught:
        client.create_snapshot(vm.id, "s", disk_ids=[MISSING])
    assert caught.value.reason == "DISKS_NOT_EXIST"
    assert MISSING in caught.value.metadata["disk_ids"]
    assert caught.value.request_id is not None


def test_name_already_used(client: disksnap.Client, vm: disksnap.Vm) -> None:
    with pytest.raises(errors.NameAlreadyUsed) as caught:
        client.create_vm(vm.name)
    assert caught.value.reason == "NAME_ALREADY_USED"
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.metadata["name"] == vm.name
    assert isinstance(caught.value, errors.Conflict)


@pytest.mark.parametrize(
    ("description", "reason"),
    [("", "DESCRIPTION_EMPTY"), ("   ", "DESCRIPTION_EMPTY"), ("x" * 4001, "DESCRIPTION_TOO_LONG")],
)
def test_invalid_description(
    client: disksnap.Client, vm: disksnap.Vm, description: str, reason: str
) -> None:
    with pytest.raises(errors.InvalidDescription) as caught:
        client.create_snapshot(vm.id, description)
    assert caught.value.reason == reason
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_description_invalid(client: disksnap.Client, vm: disksnap.Vm) -> None:
    with pytest.raises(errors.InvalidDescription) as caught:
        client.create_snapshot(vm.id, "bell\x07")
    assert caught.value.reason == "DESCRIPTION_INVALID"


@pytest.mark.parametrize("call", ["bad_vm_name", "bad_id", "bad_cpu"])
def test_invalid_field(client: disksnap.Client, call: str) -> None:
    with pytest.raises(errors.InvalidField) as caught:
        if call == "bad_vm_name":
            client.create_vm("no spaces allowed")
        elif call == "bad_id":
            client.get_vm("not-a-uuid")
        else:
            client.create_vm(unique("cpu"), cpu_count=0)
    assert caught.value.reason == "INVALID_FIELD"
    assert caught.value.metadata["field"]


def test_duplicate_disk_ids(client: disksnap.Client, vm: disksnap.Vm) -> None:
    d = vm.disks[0].id
    with pytest.raises(errors.DuplicateDiskIds) as caught:
        client.create_snapshot(vm.id, "dup", disk_ids=[d, d])
    assert caught.value.reason == "DUPLICATE_DISK_IDS"


def test_disks_not_attached_to_vm(
    client: disksnap.Client, server: EmbeddedServer, vm: disksnap.Vm
) -> None:
    other = make_vm(client, server, disks=1, prefix="other")
    with pytest.raises(errors.DisksNotAttachedToVm) as caught:
        client.create_snapshot(vm.id, "foreign", disk_ids=[other.disks[0].id])
    assert caught.value.reason == "DISKS_NOT_ATTACHED_TO_VM"
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert other.disks[0].id in caught.value.metadata["disk_ids"]


def test_disk_snapshot_not_supported(
    client: disksnap.Client, server: EmbeddedServer, vm: disksnap.Vm
) -> None:
    job = client.add_disk(
        "shared", 16 * MIB, domain_id=server.domain_id, vm_id=vm.id, shareable=True
    )
    assert job.result.disk_id
    with pytest.raises(errors.PreconditionFailed) as caught:
        client.create_snapshot(vm.id, "shareable", disk_ids=[job.result.disk_id])
    assert caught.value.reason == "DISK_SNAPSHOT_NOT_SUPPORTED"


def test_request_id_reused(client: disksnap.Client) -> None:
    rid = str(uuid.uuid4())
    first = client.create_vm(unique("rid"), request_id=rid)
    with pytest.raises(errors.RequestIdReused) as caught:
        client.create_vm(unique("rid"), request_id=rid)
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert caught.value.metadata["job_id"] == first.id
    assert caught.value.request_id == rid


def test_same_request_id_and_request_returns_the_same_job(client: disksnap.Client) -> None:
    rid, name = str(uuid.uuid4()), unique("idem")
    first = client.create_vm(name, request_id=rid)
    again = client.create_vm(name, request_id=rid)
    assert again.id == first.id and again.result.vm_id == first.result.vm_id


def test_job_not_exist(client: disksnap.Client) -> None:
    with pytest.raises(errors.JobNotExist) as caught:
        client.get_job(MISSING)
    assert caught.value.reason == "JOB_NOT_EXIST"
    with pytest.raises(errors.JobNotExist):
        list(client.watch_job(MISSING))


def test_snapshot_not_exist(client: disksnap.Client, vm: disksnap.Vm) -> None:
    with pytest.raises(errors.SnapshotNotExist) as caught:
        client.get_snapshot(vm.id, MISSING)
    assert caught.value.reason == "VM_SNAPSHOT_DOES_NOT_EXIST"


def test_host_not_exist(client: disksnap.Client) -> None:
    with pytest.raises(errors.HostNotExist) as caught:
        client.create_storage_domain(unique("sd"), MISSING)
    assert caught.value.reason == "HOST_NOT_EXIST"


def test_storage_domain_not_exist(client: disksnap.Client, vm: disksnap.Vm) -> None:
    with pytest.raises(errors.StorageDomainNotExist) as caught:
        client.add_disk("nowhere", 16 * MIB, domain_id=MISSING, vm_id=vm.id)
    assert caught.value.reason == "STORAGE_DOMAIN_NOT_EXIST"


def test_lock_conflict(client: disksnap.Client, server: EmbeddedServer) -> None:
    busy = make_vm(client, server, disks=4, prefix="busy")
    first = client.create_snapshot(busy.id, "first", wait=False)
    try:
        with pytest.raises(errors.LockConflict) as caught:
            client.create_snapshot(busy.id, "second")
        assert caught.value.reason == "SNAPSHOT_IS_BEING_TAKEN_FOR_VM"
        assert caught.value.code == grpc.StatusCode.ABORTED
        assert caught.value.retryable
        assert caught.value.metadata["job_id"] == first.id
    finally:
        first.wait()


# Every implemented operation, called so that it changes nothing, fails its own check.
IMPLEMENTED: dict[
    str, tuple[Callable[[disksnap.Client, disksnap.Vm], object], type[errors.ApiError], str]
] = {
    "update_vm": (
        lambda c, v: c.update_vm(MISSING, cpu_count=2),
        errors.VmNotExist,
        "VM_NOT_EXIST",
    ),
    "set_vm_run_state": (
        lambda c, v: c.set_vm_run_state(MISSING, disksnap.RunState.DOWN),
        errors.VmNotExist,
        "VM_NOT_EXIST",
    ),
    "remove_vm": (lambda c, v: c.remove_vm(MISSING), errors.VmNotExist, "VM_NOT_EXIST"),
    "remove_disk": (lambda c, v: c.remove_disk(MISSING), errors.DisksNotExist, "DISKS_NOT_EXIST"),
    "attach_disk": (
        lambda c, v: c.attach_disk(MISSING, v.id),
        errors.DisksNotExist,
        "DISKS_NOT_EXIST",
    ),
    "detach_disk": (
        lambda c, v: c.detach_disk(MISSING, v.id),
        errors.DisksNotExist,
        "DISKS_NOT_EXIST",
    ),
    "preview_snapshot": (
        lambda c, v: c.preview_snapshot(MISSING, config_snapshot_id=MISSING),
        errors.VmNotExist,
        "VM_NOT_EXIST",
    ),
    "commit_preview": (
        lambda c, v: c.commit_preview(v.id),
        errors.VmNotInPreview,
        "VM_SNAPSHOT_NOT_IN_PREVIEW",
    ),
    "undo_preview": (
        lambda c, v: c.undo_preview(v.id),
        errors.VmNotInPreview,
        "VM_SNAPSHOT_NOT_IN_PREVIEW",
    ),
    "restore_snapshot": (
        lambda c, v: c.restore_snapshot(MISSING, config_snapshot_id=MISSING),
        errors.VmNotExist,
        "VM_NOT_EXIST",
    ),
}


@pytest.mark.parametrize("operation", sorted(IMPLEMENTED))
def test_implemented_operations_fail_their_own_checks(
    client: disksnap.Client, vm: disksnap.Vm, operation: str
) -> None:
    call, error_type, reason = IMPLEMENTED[operation]
    with pytest.raises(error_type) as caught:
        call(client, vm)
    assert caught.value.reason == reason


# Operations another change is landing: Unimplemented until then, their own checks after.
LATER = {
    "remove_snapshot": lambda c, v: c.remove_snapshot(v.id, MISSING),
    "remove_disk_snapshots": lambda c, v: c.remove_disk_snapshots([MISSING]),
}


@pytest.mark.parametrize("operation", sorted(LATER))
def test_not_yet_implemented_operations(
    client: disksnap.Client, vm: disksnap.Vm, operation: str
) -> None:
    with pytest.raises(errors.ApiError) as caught:
        LATER[operation](client, vm)
    err = caught.value
    assert isinstance(err, errors.Unimplemented | errors.NotFound | errors.VmNotInPreview), err
    if isinstance(err, errors.Unimplemented):
        assert err.code == grpc.StatusCode.UNIMPLEMENTED
        assert err.reason == "UNIMPLEMENTED"


# ---------------------------------------------------------------- preview errors


def test_preview_errors(client: disksnap.Client, server: EmbeddedServer) -> None:
    pvm = make_vm(client, server, disks=2, prefix="pverr")
    d0, d1 = (d.id for d in sorted(pvm.disks, key=lambda d: d.alias))
    s1 = client.create_snapshot(pvm.id, "S1").result.snapshot_id or ""
    with pytest.raises(errors.PreviewSelectionIncomplete) as incomplete:
        client.preview_snapshot(pvm.id, disks=[disksnap.DiskSelection(d0, snapshot_id=s1)])
    assert incomplete.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert incomplete.value.metadata["disk_ids"] == d1
    assert incomplete.value.metadata["disk_aliases"] == "d1"
    with pytest.raises(errors.InvalidField) as nil:
        client.preview_snapshot(pvm.id, config_snapshot_id="00000000-0000-0000-0000-000000000000")
    assert nil.value.reason == "CORRUPTED_VM_SNAPSHOT_ID"
    with pytest.raises(errors.SnapshotNotExist):
        client.preview_snapshot(pvm.id, config_snapshot_id=MISSING)
    with pytest.raises(errors.DiskSnapshotsNotExist):
        client.preview_snapshot(
            pvm.id,
            disks=[disksnap.DiskSelection(d0, volume_id=MISSING)],
            exclude_disk_ids=[d1],
        )
    with pytest.raises(errors.MemoryUnavailable) as memory:
        client.restore_snapshot(pvm.id, config_snapshot_id=s1, restore_memory=True)
    assert memory.value.reason == "MEMORY_NOT_AVAILABLE"
    with pytest.raises(errors.PreconditionFailed) as nothing:
        client.preview_snapshot(pvm.id, config_snapshot_id=pvm.active_snapshot_id)
    assert nothing.value.reason == "CANNOT_PREVIEW_ACTIVE_SNAPSHOT"

    client.preview_snapshot(pvm.id, config_snapshot_id=s1)
    with pytest.raises(errors.VmInPreview) as in_preview:
        client.create_snapshot(pvm.id, "while previewing")
    assert in_preview.value.metadata["vm_name"] == pvm.name
    client.set_vm_run_state(pvm.id, disksnap.RunState.UP, host_id=server.host_id)
    with pytest.raises(errors.VmIsNotDown):
        client.commit_preview(pvm.id)
    client.set_vm_run_state(pvm.id, disksnap.RunState.DOWN)
    assert client.undo_preview(pvm.id).succeeded
    with pytest.raises(errors.VmNotInPreview):
        client.undo_preview(pvm.id)
