"""Every exception class the current engine can produce, raised by the real engine.

These run against the shared embedded server; the reasons that need a differently configured
engine (a stopped agent, tokens, an unreachable database, fault injection) are in
``test_engine_errors_more.py``. Rejections also check that the engine's database is unchanged.

Not produced by this engine, so only mapped (against a fake) in ``test_error_mapping.py``:
``Unimplemented`` (the engine implements every RPC), ``NO_SUITABLE_DOMAIN_FOUND`` (needs a host
with ``live_ops``, which v1 agents never report), ``ENGINE_SHUTTING_DOWN`` (a stopping engine
never sends it) and ``HOST_IDENTITY_MISMATCH`` (only the agents' registry RPCs, which the SDK
does not call, return it: see tests/engine/test_security.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest

import disksnap
from disksnap import SnapshotType, errors
from disksnap.embedded import EmbeddedServer
from sdk.conftest import MIB, MISSING, make_vm, rejected
from sdk.embedded_fixture import unique
from support.engine import volume_status


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
    "remove_snapshot": (
        lambda c, v: c.remove_snapshot(v.id, MISSING),
        errors.SnapshotNotExist,
        "VM_SNAPSHOT_DOES_NOT_EXIST",
    ),
    "remove_disk_snapshots": (
        lambda c, v: c.remove_disk_snapshots([MISSING]),
        errors.DiskSnapshotsNotExist,
        "DISK_SNAPSHOTS_NOT_EXIST",
    ),
}


@pytest.mark.parametrize("operation", sorted(IMPLEMENTED))
def test_implemented_operations_fail_their_own_checks(
    client: disksnap.Client, server_db: str, vm: disksnap.Vm, operation: str
) -> None:
    call, error_type, reason = IMPLEMENTED[operation]
    err = rejected(server_db, error_type, lambda: call(client, vm))
    assert err.reason == reason
    assert err.request_id is not None


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


# ---------------------------------------------------------------- removal errors


def _volumes(client: disksnap.Client, vm_id: str, snapshot_id: str) -> dict[str, str]:
    """Disk alias → the volume the snapshot holds for it."""
    snap = next(s for s in client.list_snapshots(vm_id) if s.id == snapshot_id)
    return {d.alias: d.volume_id for d in snap.disks}


def test_removal_errors(client: disksnap.Client, server_db: str, vm: disksnap.Vm) -> None:
    s1 = client.create_snapshot(vm.id, "S1").result.snapshot_id or ""
    held = _volumes(client, vm.id, s1)
    heads = {d.alias: d.head_volume_id or "" for d in client.get_vm(vm.id).disks}

    active = rejected(
        server_db,
        errors.PreconditionFailed,
        lambda: client.remove_snapshot(vm.id, vm.active_snapshot_id),
    )
    assert type(active) is errors.PreconditionFailed
    assert active.reason == "VM_SNAPSHOT_TYPE_NOT_ALLOWED"
    assert active.code == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(active.metadata) == {
        "snapshot_id": vm.active_snapshot_id,
        "snapshot_type": "ACTIVE",
        "supported_snapshot_types": "REGULAR",
    }

    missing = rejected(
        server_db, errors.DiskSnapshotsNotExist, lambda: client.remove_disk_snapshots([MISSING])
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert dict(missing.metadata) == {"volume_ids": MISSING}

    twice = rejected(
        server_db,
        errors.DuplicateDiskIds,
        lambda: client.remove_disk_snapshots([held["d0"], held["d0"]]),
    )
    assert dict(twice.metadata) == {"volume_ids": held["d0"]}

    two_disks = rejected(
        server_db,
        errors.PreconditionFailed,
        lambda: client.remove_disk_snapshots([held["d0"], held["d1"]]),
    )
    assert two_disks.reason == "DISKS_SNAPSHOTS_DONT_BELONG_TO_SAME_DISK"
    assert two_disks.metadata["volume_ids"] == ",".join(sorted(held.values()))

    head = rejected(
        server_db,
        errors.PreconditionFailed,
        lambda: client.remove_disk_snapshots([held["d0"], heads["d0"]]),
    )
    assert head.reason == "DISK_SNAPSHOTS_ACTIVE"
    assert dict(head.metadata) == {"volume_ids": heads["d0"]}
    assert _volumes(client, vm.id, s1) == held


def test_disks_illegal(client: disksnap.Client, server_db: str, vm: disksnap.Vm) -> None:
    s1 = client.create_snapshot(vm.id, "S1").result.snapshot_id or ""
    d0 = next(d for d in vm.disks if d.alias == "d0")
    head = client.get_disk(d0.id).head_volume_id or ""
    # A head is ILLEGAL only after out-of-band damage or a failed merge: set it directly.
    with volume_status(server_db, head, "ILLEGAL"):
        assert client.get_disk(d0.id).status is disksnap.DiskStatus.ILLEGAL
        for call in (
            lambda: client.create_snapshot(vm.id, "over an illegal head"),
            lambda: client.remove_snapshot(vm.id, s1),
            lambda: client.remove_disk_snapshots([_volumes(client, vm.id, s1)["d0"]]),
        ):
            err = rejected(server_db, errors.DisksIllegal, call)
            assert err.reason == "DISKS_ILLEGAL"
            assert err.code == grpc.StatusCode.FAILED_PRECONDITION
            assert dict(err.metadata) == {"disk_ids": d0.id, "disk_aliases": "d0"}
    assert client.get_disk(d0.id).status is disksnap.DiskStatus.OK
    assert [s.description for s in client.list_snapshots(vm.id)][1:] == ["S1"]


# ---------------------------------------------------------------- memory, boot, space


def test_memory_errors(
    client: disksnap.Client, server: EmbeddedServer, server_db: str, vm: disksnap.Vm
) -> None:
    down = rejected(
        server_db,
        errors.MemoryUnavailable,
        lambda: client.create_snapshot(vm.id, "with memory", save_memory=True),
    )
    assert down.reason == "MEMORY_REQUIRES_RUNNING_VM"
    assert dict(down.metadata) == {"vm_id": vm.id, "run_state": "DOWN"}

    client.set_vm_run_state(vm.id, disksnap.RunState.UP, host_id=server.host_id)
    try:
        # v1 agents have no VM runtime (live_ops=false), so no host can save memory.
        no_runtime = rejected(
            server_db,
            errors.MemoryUnavailable,
            lambda: client.create_snapshot(vm.id, "with memory", save_memory=True),
        )
        assert no_runtime.reason == "HOST_CANNOT_SAVE_MEMORY"
        assert no_runtime.code == grpc.StatusCode.FAILED_PRECONDITION
        assert dict(no_runtime.metadata) == {"host_id": server.host_id, "host_name": "local"}
    finally:
        client.set_vm_run_state(vm.id, disksnap.RunState.DOWN)
    assert [s.type for s in client.list_snapshots(vm.id)] == [SnapshotType.ACTIVE]


def test_disk_boot_in_use(
    client: disksnap.Client, server: EmbeddedServer, server_db: str, vm: disksnap.Vm
) -> None:
    client.add_disk("boot", MIB, domain_id=server.domain_id, vm_id=vm.id, bootable=True)
    second = rejected(
        server_db,
        errors.PreconditionFailed,
        lambda: client.add_disk(
            "boot2", MIB, domain_id=server.domain_id, vm_id=vm.id, bootable=True
        ),
    )
    assert second.reason == "DISK_BOOT_IN_USE"
    assert dict(second.metadata) == {"vm_name": vm.name, "disk_aliases": "boot"}
    d0 = next(d for d in vm.disks if d.alias == "d0")
    update = rejected(
        server_db,
        errors.PreconditionFailed,
        lambda: client.update_vm(vm.id, disks=[disksnap.DiskUpdate(d0.id, bootable=True)]),
    )
    assert update.reason == "DISK_BOOT_IN_USE"
    assert dict(update.metadata) == {"vm_name": vm.name, "disk_aliases": "boot,d0"}
    assert sorted(d.alias for d in client.get_vm(vm.id).disks) == ["boot", "d0", "d1"]


def test_disk_space_low(
    client: disksnap.Client, server: EmbeddedServer, server_db: str, vm: disksnap.Vm
) -> None:
    # A RAW disk needs its whole size up front; no test machine has 64 TiB free.
    size = 64 << 40
    err = rejected(
        server_db,
        errors.StorageUnusable,
        lambda: client.add_disk(
            "huge", size, domain_id=server.domain_id, vm_id=vm.id, format=disksnap.DiskFormat.RAW
        ),
    )
    assert err.reason == "DISK_SPACE_LOW_ON_STORAGE_DOMAIN"
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.metadata["domain_id"] == server.domain_id
    assert err.metadata["domain_name"] == "local"
    assert err.metadata["required_bytes"] == str(size)
    assert 0 < int(err.metadata["free_bytes"]) < size
    assert "huge" not in {d.alias for d in client.list_disks()}


# ---------------------------------------------------------------- history and selection


def test_disk_snapshots_belong_to_another_vm(
    client: disksnap.Client, server: EmbeddedServer, server_db: str
) -> None:
    owner = make_vm(client, server, disks=2, prefix="owner")
    other = make_vm(client, server, disks=0, prefix="other")
    d0, d1 = (d.id for d in sorted(owner.disks, key=lambda d: d.alias))
    s1 = client.create_snapshot(owner.id, "S1").result.snapshot_id or ""
    # Committing a preview that excludes d1 leaves it floating, its history still owner's.
    client.preview_snapshot(
        owner.id, disks=[disksnap.DiskSelection(d0, snapshot_id=s1)], exclude_disk_ids=[d1]
    )
    client.commit_preview(owner.id)
    assert client.get_disk(d1).floating and client.get_disk(d1).history_vm_id == owner.id

    err = rejected(server_db, errors.PreconditionFailed, lambda: client.attach_disk(d1, other.id))
    assert err.reason == "DISK_SNAPSHOTS_BELONG_TO_ANOTHER_VM"
    assert dict(err.metadata) == {"disk_ids": d1, "vm_id": owner.id}
    assert client.get_disk(d1).floating


def test_volume_of_another_disk_is_refused(
    client: disksnap.Client, server_db: str, vm: disksnap.Vm
) -> None:
    s1 = client.create_snapshot(vm.id, "S1").result.snapshot_id or ""
    held = _volumes(client, vm.id, s1)
    d0, d1 = (d.id for d in sorted(vm.disks, key=lambda d: d.alias))
    err = rejected(
        server_db,
        errors.PreconditionFailed,
        lambda: client.preview_snapshot(
            vm.id,
            disks=[disksnap.DiskSelection(d0, volume_id=held["d1"])],
            exclude_disk_ids=[d1],
        ),
    )
    assert err.reason == "VM_DISK_SNAPSHOT_NOT_ATTACHED_TO_VM"
    assert err.metadata["disk_ids"] == d0 and err.metadata["volume_ids"] == held["d1"]
    assert err.metadata["vm_name"] == vm.name
    assert not client.get_vm(vm.id).in_preview


# ---------------------------------------------------------------- deadlines


def test_deadline_exceeded_keeps_the_request_id_for_a_retry(
    client: disksnap.Client, server: EmbeddedServer
) -> None:
    name = unique("late")
    with (
        disksnap.Client(server.address, timeout=1e-6) as hasty,
        pytest.raises(errors.DeadlineExceeded) as caught,
    ):
        hasty.create_vm(name)
    err = caught.value
    assert err.reason == "DEADLINE_EXCEEDED" and err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.retryable and isinstance(err, errors.Unavailable)
    assert err.request_id is not None
    # The first attempt may or may not have reached the engine: the same request_id makes
    # the retry safe either way.
    job = client.create_vm(name, request_id=err.request_id)
    assert job.succeeded
    assert [v.id for v in client.list_vms(name=name)] == [job.result.vm_id]
