"""Every exception class the current engine can produce, raised by the real engine."""

from __future__ import annotations

import uuid

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


# Operations this engine does not offer yet raise Unimplemented; once they land, the same calls
# (chosen to change nothing) fail their own checks instead.
LATER = {
    "update_vm": lambda c, v: c.update_vm(MISSING, cpu_count=2),
    "set_vm_run_state": lambda c, v: c.set_vm_run_state(MISSING, disksnap.RunState.DOWN),
    "remove_vm": lambda c, v: c.remove_vm(MISSING),
    "remove_disk": lambda c, v: c.remove_disk(MISSING),
    "attach_disk": lambda c, v: c.attach_disk(MISSING, v.id),
    "detach_disk": lambda c, v: c.detach_disk(MISSING, v.id),
    "preview_snapshot": lambda c, v: c.preview_snapshot(MISSING, config_snapshot_id=MISSING),
    "commit_preview": lambda c, v: c.commit_preview(v.id),
    "undo_preview": lambda c, v: c.undo_preview(v.id),
    "restore_snapshot": lambda c, v: c.restore_snapshot(MISSING, config_snapshot_id=MISSING),
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
