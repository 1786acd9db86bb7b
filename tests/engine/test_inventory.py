"""Inventory operations end to end (SPEC §3.9): UpdateVm, SetVmRunState, Attach/Detach/
RemoveDisk and RemoveVm against a real engine and real agents, on SQLite and PostgreSQL.

A VM "in preview" comes from a real PreviewSnapshot, and a floating disk whose history VM is
set from a preview that excluded it followed by CommitPreview with
``delete_detached_disks=false`` (D11).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, select, update

from disksnap.engine.v1 import (
    common_pb2,
    inventory_pb2,
    snapshots_pb2,
)
from engine_svc.commands.remove_disk import leaf_first
from engine_svc.db.models import Snapshot, Volume
from engine_svc.db.session import make_engine
from support.engine import Cluster, EngineApi, db_dump, error_info, retry

MiB = 1024 * 1024
SIZE = 16 * MiB
UNKNOWN = "0b7a3c5e-1111-4222-8333-944455556666"
SUCCEEDED = common_pb2.JOB_STATE_SUCCEEDED
DELETED = common_pb2.DISK_OUTCOME_KIND_DELETED
# Heartbeats rewrite these every second; a rejected request must leave everything else alone.
LIVENESS_TABLES = ("hosts", "host_domains")


@pytest.fixture(scope="module")
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> Iterator[Engine]:
    engine = make_engine(cluster.db_url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------- helpers


def _state(cluster: Cluster, tables: tuple[str, ...] = ()) -> dict[str, Any]:
    dump = db_dump(cluster.db_url)
    if tables:
        # Other jobs are running: compare what a rejected request could have touched.
        jobs = sorted(row[0] for row in dump["jobs"])
        return {"job_ids": jobs, **{k: dump[k] for k in tables}}
    return {k: v for k, v in dump.items() if k not in LIVENESS_TABLES}


def _rejected(
    cluster: Cluster,
    call: Callable[[], Any],
    code: grpc.StatusCode,
    reason: str,
    tables: tuple[str, ...] = (),
) -> dict[str, str]:
    """Run a call that must fail with (code, reason) and change nothing."""
    before = _state(cluster, tables)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    got_code, got_reason, metadata = error_info(caught.value)
    assert (got_code, got_reason) == (code, reason), caught.value.details()
    assert _state(cluster, tables) == before
    return metadata


def _env() -> common_pb2.RequestEnvelope:
    return common_pb2.RequestEnvelope(request_id=str(uuid.uuid4()))


def _job(resp: Any) -> common_pb2.Job:
    job: common_pb2.Job = resp.job
    return job


def _vm(api: EngineApi, vm_id: str) -> inventory_pb2.Vm:
    resp: inventory_pb2.GetVmResponse = api.inventory.GetVm(
        inventory_pb2.GetVmRequest(vm_id=vm_id), timeout=10
    )
    return resp.vm


def _disk(api: EngineApi, disk_id: str) -> inventory_pb2.Disk:
    resp: inventory_pb2.GetDiskResponse = api.inventory.GetDisk(
        inventory_pb2.GetDiskRequest(disk_id=disk_id), timeout=10
    )
    return resp.disk


def _tree(api: EngineApi, disk_id: str) -> snapshots_pb2.GetDiskVolumeTreeResponse:
    resp: snapshots_pb2.GetDiskVolumeTreeResponse = api.snapshots.GetDiskVolumeTree(
        snapshots_pb2.GetDiskVolumeTreeRequest(disk_id=disk_id), timeout=10
    )
    return resp


def _snapshots(api: EngineApi, vm_id: str) -> list[snapshots_pb2.Snapshot]:
    return list(
        api.snapshots.ListSnapshots(
            snapshots_pb2.ListSnapshotsRequest(vm_id=vm_id), timeout=10
        ).snapshots
    )


def _floating_disk(api: EngineApi, alias: str, domain_id: str, **extra: Any) -> str:
    job: common_pb2.Job = api.inventory.AddDisk(
        inventory_pb2.AddDiskRequest(
            alias=alias,
            domain_id=domain_id,
            virtual_size=SIZE,
            format=inventory_pb2.DISK_FORMAT_COW,
            **extra,
        ),
        timeout=10,
    ).job
    job = api.wait_job(job.id)
    assert job.state == SUCCEEDED, job
    return job.result.disk_id


def _lun_disk(api: EngineApi, alias: str, vm_id: str = "") -> str:
    job: common_pb2.Job = api.inventory.AddDisk(
        inventory_pb2.AddDiskRequest(
            alias=alias, kind=inventory_pb2.DISK_KIND_LUN, lun_id=f"lun-{alias}", vm_id=vm_id
        ),
        timeout=10,
    ).job
    assert job.state == SUCCEEDED, job
    return job.result.disk_id


def _update(api: EngineApi, vm_id: str, paths: list[str], **config: Any) -> common_pb2.Job:
    disks = config.pop("disks", [])
    req = inventory_pb2.UpdateVmRequest(
        vm_id=vm_id,
        config=inventory_pb2.VmConfig(**config),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        disks=disks,
        envelope=_env(),
    )
    return _job(api.inventory.UpdateVm(req, timeout=10))


def _disk_attrs(disk_id: str, paths: list[str], **attrs: Any) -> inventory_pb2.DiskAttributes:
    return inventory_pb2.DiskAttributes(
        disk_id=disk_id, update_mask=field_mask_pb2.FieldMask(paths=paths), **attrs
    )


def _run_state(
    api: EngineApi, vm_id: str, state: inventory_pb2.RunState.ValueType, host_id: str = ""
) -> common_pb2.Job:
    return _job(
        api.inventory.SetVmRunState(
            inventory_pb2.SetVmRunStateRequest(
                vm_id=vm_id, run_state=state, host_id=host_id, envelope=_env()
            ),
            timeout=10,
        )
    )


def _attach(api: EngineApi, disk_id: str, vm_id: str, **extra: Any) -> common_pb2.Job:
    return _job(
        api.inventory.AttachDisk(
            inventory_pb2.AttachDiskRequest(disk_id=disk_id, vm_id=vm_id, envelope=_env(), **extra),
            timeout=10,
        )
    )


def _detach(api: EngineApi, disk_id: str, vm_id: str) -> common_pb2.Job:
    return _job(
        api.inventory.DetachDisk(
            inventory_pb2.DetachDiskRequest(disk_id=disk_id, vm_id=vm_id, envelope=_env()),
            timeout=10,
        )
    )


def _remove_disk(api: EngineApi, disk_id: str) -> common_pb2.Job:
    return _job(
        api.inventory.RemoveDisk(
            inventory_pb2.RemoveDiskRequest(disk_id=disk_id, envelope=_env()), timeout=10
        )
    )


def _remove_vm(api: EngineApi, vm_id: str) -> common_pb2.Job:
    return _job(
        api.inventory.RemoveVm(
            inventory_pb2.RemoveVmRequest(vm_id=vm_id, envelope=_env()), timeout=10
        )
    )


def _wait(api: EngineApi, job: common_pb2.Job) -> common_pb2.Job:
    return api.wait_job(job.id, timeout=60)


def _files(cluster: Cluster, host: int, disk_id: str) -> set[str]:
    """Volume files (sidecars excluded) of a disk on a host's domain."""
    folder = cluster.agents[host].root / cluster.domain_ids[host] / "images" / disk_id
    if not folder.exists():
        return set()
    return {p.name for p in folder.iterdir() if "." not in p.name}


def _volume_rows(db: Engine, disk_id: str) -> list[tuple[str, bool]]:
    with db.connect() as conn:
        return [
            (r.id, r.pending_delete)
            for r in conn.execute(
                select(Volume.id, Volume.pending_delete).where(Volume.disk_id == disk_id)
            )
        ]


def _preview_run(api: EngineApi, rpc: str, **fields: Any) -> common_pb2.Job:
    request = getattr(snapshots_pb2, f"{rpc}Request")(envelope=_env(), **fields)
    job = _wait(api, _job(getattr(api.snapshots, rpc)(request, timeout=10)))
    assert job.state == SUCCEEDED, job
    return job


@contextmanager
def _in_preview(api: EngineApi, vm_id: str) -> Iterator[None]:
    """The VM is in preview of a fresh snapshot of all its disks; undone afterwards."""
    snapshot_id = api.snapshot(vm_id, "to preview").result.snapshot_id
    _preview_run(api, "PreviewSnapshot", vm_id=vm_id, config_snapshot_id=snapshot_id)
    try:
        yield
    finally:
        _preview_run(api, "UndoPreview", vm_id=vm_id)


def _make_floating(
    api: EngineApi, vm_id: str, disk_id: str, *, previewed: str, snapshot_id: str
) -> None:
    """Float ``disk_id`` with ``vm_id`` as its history VM (D11): a preview that excludes it,
    shows ``previewed`` as in ``snapshot_id`` and keeps every other disk, then a commit."""
    vm = _vm(api, vm_id)
    selections = [
        snapshots_pb2.DiskSelection(
            disk_id=d.id,
            snapshot_id=snapshot_id if d.id == previewed else vm.active_snapshot_id,
        )
        for d in vm.disks
        if d.kind == inventory_pb2.DISK_KIND_IMAGE and not d.shareable and d.id != disk_id
    ]
    _preview_run(api, "PreviewSnapshot", vm_id=vm_id, disks=selections, exclude_disk_ids=[disk_id])
    job = _preview_run(api, "CommitPreview", vm_id=vm_id, delete_detached_disks=False)
    assert (disk_id, common_pb2.DISK_OUTCOME_KIND_FLOATING) in {
        (o.disk_id, o.outcome) for o in job.outcomes
    }


# ---------------------------------------------------------------- a shared setup for rejections


@pytest.fixture(scope="module")
def setup(cluster: Cluster) -> Iterator[dict[str, str]]:
    """VMs and disks in every state the rejection cases need."""
    api = cluster.api()
    sd0, sd1 = cluster.domain_ids[0], cluster.domain_ids[1]
    a = api.create_vm("rej-a")
    a0 = api.add_disk(a, "rej-a0", sd0, SIZE, bootable=True)
    a1 = api.add_disk(a, "rej-a1", sd1, SIZE)
    shared = api.add_disk(a, "rej-shared", sd0, SIZE, shareable=True)
    a1_only = api.snapshot(a, "a1 only", [a1])
    assert a1_only.state == SUCCEEDED
    hist = api.add_disk(a, "rej-hist", sd1, SIZE)
    assert api.snapshot(a, "hist only", [hist]).state == SUCCEEDED
    _make_floating(api, a, hist, previewed=a1, snapshot_id=a1_only.result.snapshot_id)
    b = api.create_vm("rej-b")
    b0 = api.add_disk(b, "rej-b0", sd0, SIZE)
    up = api.create_vm("rej-up")
    u0 = api.add_disk(up, "rej-u0", sd0, SIZE)
    assert _run_state(api, up, inventory_pb2.RUN_STATE_UP, cluster.host_ids[0]).state == SUCCEEDED
    p = api.create_vm("rej-p")
    p0 = api.add_disk(p, "rej-p0", sd1, SIZE)
    fl = _floating_disk(api, "rej-floating", sd1)
    ids = {
        "a": a,
        "a0": a0,
        "a1": a1,
        "shared": shared,
        "hist": hist,
        "b": b,
        "b0": b0,
        "up": up,
        "u0": u0,
        "p": p,
        "p0": p0,
        "fl": fl,
        "host0": cluster.host_ids[0],
    }
    with _in_preview(api, p):
        api.assert_consistent()
        yield ids


IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
AE = grpc.StatusCode.ALREADY_EXISTS
FP = grpc.StatusCode.FAILED_PRECONDITION


def _ref(setup: dict[str, str], value: str) -> str:
    return setup[value[1:]] if value.startswith("@") else value


def _call(api: EngineApi, setup: dict[str, str], op: str, f: dict[str, Any]) -> Any:
    def r(key: str, default: str = "") -> str:
        return _ref(setup, str(f.get(key, default)))

    env = _env()
    if op == "update":
        disks = [
            _disk_attrs(_ref(setup, d["disk_id"]), d["paths"], **d.get("attrs", {}))
            for d in f.get("disks", [])
        ]
        return api.inventory.UpdateVm(
            inventory_pb2.UpdateVmRequest(
                vm_id=r("vm", "@a"),
                config=inventory_pb2.VmConfig(**f.get("config", {})),
                update_mask=field_mask_pb2.FieldMask(paths=f.get("paths", [])),
                disks=disks,
                envelope=env,
            ),
            timeout=10,
        )
    if op == "run":
        return api.inventory.SetVmRunState(
            inventory_pb2.SetVmRunStateRequest(
                vm_id=r("vm", "@b"),
                run_state=f.get("state", inventory_pb2.RUN_STATE_UP),
                host_id=r("host"),
                envelope=env,
            ),
            timeout=10,
        )
    if op == "attach":
        return api.inventory.AttachDisk(
            inventory_pb2.AttachDiskRequest(
                disk_id=r("disk", "@fl"),
                vm_id=r("vm", "@a"),
                bootable=bool(f.get("bootable", False)),
                envelope=env,
            ),
            timeout=10,
        )
    if op == "detach":
        return api.inventory.DetachDisk(
            inventory_pb2.DetachDiskRequest(disk_id=r("disk"), vm_id=r("vm", "@a"), envelope=env),
            timeout=10,
        )
    if op == "remove_disk":
        return api.inventory.RemoveDisk(
            inventory_pb2.RemoveDiskRequest(disk_id=r("disk"), envelope=env), timeout=10
        )
    assert op == "remove_vm"
    return api.inventory.RemoveVm(
        inventory_pb2.RemoveVmRequest(vm_id=r("vm"), envelope=env), timeout=10
    )


CASES: list[tuple[str, str, dict[str, Any], grpc.StatusCode, str]] = [
    # UpdateVm
    ("update bad vm id", "update", {"vm": "x", "paths": ["cpu_count"]}, IA, "INVALID_FIELD"),
    ("update unknown path", "update", {"paths": ["run_state"]}, IA, "INVALID_FIELD"),
    ("update empty mask", "update", {"paths": []}, IA, "INVALID_FIELD"),
    (
        "update bad cpu",
        "update",
        {"paths": ["cpu_count"], "config": {"cpu_count": 0}},
        IA,
        "INVALID_FIELD",
    ),
    (
        "update bad mac",
        "update",
        {"paths": ["nics"], "config": {"nics": [inventory_pb2.Nic(name="n", mac="AA")]}},
        IA,
        "INVALID_FIELD",
    ),
    (
        "update bad name",
        "update",
        {"paths": ["name"], "config": {"name": "-x"}},
        IA,
        "INVALID_FIELD",
    ),
    (
        "update bad alias",
        "update",
        {"disks": [{"disk_id": "@a0", "paths": ["alias"], "attrs": {"alias": "a/b"}}]},
        IA,
        "INVALID_FIELD",
    ),
    (
        "update unknown disk path",
        "update",
        {"disks": [{"disk_id": "@a0", "paths": ["format"]}]},
        IA,
        "INVALID_FIELD",
    ),
    (
        "update unset interface",
        "update",
        {"disks": [{"disk_id": "@a0", "paths": ["interface"]}]},
        IA,
        "INVALID_FIELD",
    ),
    (
        "update duplicate disks",
        "update",
        {
            "disks": [
                {"disk_id": "@a0", "paths": ["bootable"]},
                {"disk_id": "@a0", "paths": ["bootable"]},
            ]
        },
        IA,
        "DUPLICATE_DISK_IDS",
    ),
    (
        "update unknown vm",
        "update",
        {"vm": UNKNOWN, "paths": ["cpu_count"], "config": {"cpu_count": 2}},
        NF,
        "VM_NOT_EXIST",
    ),
    (
        "update unknown disk",
        "update",
        {"disks": [{"disk_id": UNKNOWN, "paths": ["bootable"]}]},
        NF,
        "DISKS_NOT_EXIST",
    ),
    (
        "update unknown home domain",
        "update",
        {"paths": ["home_domain_id"], "config": {"home_domain_id": UNKNOWN}},
        NF,
        "STORAGE_DOMAIN_NOT_EXIST",
    ),
    (
        "update name used",
        "update",
        {"paths": ["name"], "config": {"name": "rej-b"}},
        AE,
        "NAME_ALREADY_USED",
    ),
    (
        "update foreign disk",
        "update",
        {"disks": [{"disk_id": "@b0", "paths": ["bootable"]}]},
        FP,
        "DISKS_NOT_ATTACHED_TO_VM",
    ),
    (
        "update second bootable",
        "update",
        {"disks": [{"disk_id": "@a1", "paths": ["bootable"], "attrs": {"bootable": True}}]},
        FP,
        "DISK_BOOT_IN_USE",
    ),
    (
        "update arguments before existence",
        "update",
        {"vm": UNKNOWN, "paths": ["nope"]},
        IA,
        "INVALID_FIELD",
    ),
    # SetVmRunState
    ("run unset state", "run", {"state": 0}, IA, "INVALID_FIELD"),
    ("run up without host", "run", {}, IA, "INVALID_FIELD"),
    (
        "run down with host",
        "run",
        {"state": inventory_pb2.RUN_STATE_DOWN, "host": "@host0"},
        IA,
        "INVALID_FIELD",
    ),
    ("run unknown vm", "run", {"vm": UNKNOWN, "host": "@host0"}, NF, "VM_NOT_EXIST"),
    ("run unknown host", "run", {"host": UNKNOWN}, NF, "HOST_NOT_EXIST"),
    ("run vm before host", "run", {"vm": UNKNOWN, "host": UNKNOWN}, NF, "VM_NOT_EXIST"),
    # AttachDisk
    ("attach bad disk id", "attach", {"disk": "x"}, IA, "INVALID_FIELD"),
    ("attach unknown disk", "attach", {"disk": UNKNOWN, "vm": UNKNOWN}, NF, "DISKS_NOT_EXIST"),
    ("attach unknown vm", "attach", {"vm": UNKNOWN}, NF, "VM_NOT_EXIST"),
    ("attach to preview", "attach", {"vm": "@p"}, FP, "VM_IN_PREVIEW"),
    ("attach to up vm", "attach", {"vm": "@up"}, FP, "VM_IS_NOT_DOWN"),
    ("attach attached", "attach", {"disk": "@b0"}, FP, "DISK_ALREADY_ATTACHED"),
    ("attach shared twice", "attach", {"disk": "@shared"}, FP, "DISK_ALREADY_ATTACHED"),
    (
        "attach foreign history",
        "attach",
        {"disk": "@hist", "vm": "@b"},
        FP,
        "DISK_SNAPSHOTS_BELONG_TO_ANOTHER_VM",
    ),
    ("attach second bootable", "attach", {"bootable": True}, FP, "DISK_BOOT_IN_USE"),
    # DetachDisk
    ("detach bad vm id", "detach", {"disk": "@a0", "vm": "x"}, IA, "INVALID_FIELD"),
    ("detach unknown disk", "detach", {"disk": UNKNOWN}, NF, "DISKS_NOT_EXIST"),
    ("detach unknown vm", "detach", {"disk": "@a0", "vm": UNKNOWN}, NF, "VM_NOT_EXIST"),
    ("detach in preview", "detach", {"disk": "@p0", "vm": "@p"}, FP, "VM_IN_PREVIEW"),
    ("detach up vm", "detach", {"disk": "@u0", "vm": "@up"}, FP, "VM_IS_NOT_DOWN"),
    (
        "detach with snapshot",
        "detach",
        {"disk": "@a1"},
        FP,
        "CANNOT_DETACH_DISK_WITH_SNAPSHOT",
    ),
    ("detach foreign", "detach", {"disk": "@b0"}, FP, "DISKS_NOT_ATTACHED_TO_VM"),
    ("detach floating", "detach", {"disk": "@fl"}, FP, "DISKS_NOT_ATTACHED_TO_VM"),
    # RemoveDisk
    ("remove disk bad id", "remove_disk", {"disk": "../x"}, IA, "INVALID_FIELD"),
    ("remove disk unknown", "remove_disk", {"disk": UNKNOWN}, NF, "DISKS_NOT_EXIST"),
    ("remove disk in preview", "remove_disk", {"disk": "@p0"}, FP, "VM_IN_PREVIEW"),
    ("remove disk of up vm", "remove_disk", {"disk": "@u0"}, FP, "VM_IS_NOT_DOWN"),
    # RemoveVm
    ("remove vm bad id", "remove_vm", {"vm": ""}, IA, "INVALID_FIELD"),
    ("remove vm unknown", "remove_vm", {"vm": UNKNOWN}, NF, "VM_NOT_EXIST"),
    ("remove vm in preview", "remove_vm", {"vm": "@p"}, FP, "VM_IN_PREVIEW"),
    ("remove vm up", "remove_vm", {"vm": "@up"}, FP, "VM_IS_NOT_DOWN"),
]


@pytest.mark.parametrize(
    ("name", "op", "fields", "code", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_rejected_and_nothing_changed(
    cluster: Cluster,
    setup: dict[str, str],
    name: str,
    op: str,
    fields: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    api = cluster.api()
    metadata = _rejected(cluster, lambda: _call(api, setup, op, fields), code, reason)
    if reason in ("DISKS_NOT_ATTACHED_TO_VM", "DISK_ALREADY_ATTACHED", "DISKS_NOT_EXIST"):
        assert metadata["disk_ids"]
    if reason in ("VM_IN_PREVIEW", "VM_IS_NOT_DOWN", "DISK_BOOT_IN_USE"):
        assert metadata["vm_name"].startswith("rej-")
    if reason == "DISK_SNAPSHOTS_BELONG_TO_ANOTHER_VM":
        assert metadata == {"disk_ids": setup["hist"], "vm_id": setup["a"]}


def test_rejections_left_everything_consistent(cluster: Cluster, setup: dict[str, str]) -> None:
    cluster.api().assert_consistent()


# ---------------------------------------------------------------- locks


def test_operations_on_a_locked_vm_are_aborted(cluster: Cluster) -> None:
    api = cluster.api()
    sd2 = cluster.domain_ids[2]
    vm = api.create_vm("lock-vm")
    api.create_vm("lock-other")
    free_vm = api.create_vm("lock-free")
    d0 = api.add_disk(vm, "lock-d0", sd2, SIZE)
    floating = _floating_disk(api, "lock-fl", sd2)
    cluster.faults[2].set(
        [{"op": "CreateVolume", "disk_id": "*", "action": "delay", "seconds": 6, "times": 2}]
    )
    try:
        first = api.snapshots.CreateSnapshot(
            snapshots_pb2.CreateSnapshotRequest(vm_id=vm, description="slow"), timeout=10
        ).job
        adding = api.inventory.AddDisk(
            inventory_pb2.AddDiskRequest(
                alias="lock-new", domain_id=sd2, virtual_size=SIZE, envelope=_env()
            ),
            timeout=10,
        ).job
        new_disk = adding.result.disk_id
        held = "SNAPSHOT_IS_BEING_TAKEN_FOR_VM"
        calls: list[tuple[Callable[[], Any], str]] = [
            # The lock is checked before the name (NAME_ALREADY_USED would apply too).
            (lambda: _update(api, vm, ["cpu_count", "name"], cpu_count=4, name="lock-other"), held),
            (lambda: _run_state(api, vm, inventory_pb2.RUN_STATE_UP, cluster.host_ids[0]), held),
            (lambda: _attach(api, floating, vm), held),
            (lambda: _detach(api, d0, vm), held),
            (lambda: _remove_disk(api, d0), held),
            (lambda: _remove_vm(api, vm), held),
            # A floating disk locked only by its AddDisk job.
            (lambda: _remove_disk(api, new_disk), "DISKS_LOCKED"),
            (lambda: _attach(api, new_disk, free_vm), "DISKS_LOCKED"),
        ]
        tables = ("vms", "disks", "attachments", "snapshots", "locks")
        for call, reason in calls:
            metadata = _rejected(cluster, call, grpc.StatusCode.ABORTED, reason, tables)
            if reason == "DISKS_LOCKED":
                assert metadata["disk_ids"] == new_disk
                assert metadata["disk_aliases"] == "lock-new"
                assert metadata["job_id"] == adding.id
            else:
                assert metadata["job_id"] == first.id and metadata["vm_name"] == "lock-vm"
    finally:
        cluster.faults[2].clear()
    assert api.wait_job(first.id).state == SUCCEEDED
    assert api.wait_job(adding.id).state == SUCCEEDED
    # Once the jobs have ended the same requests go through.
    assert _update(api, vm, ["cpu_count"], cpu_count=4).state == SUCCEEDED
    assert _wait(api, _remove_disk(api, new_disk)).state == SUCCEEDED
    api.assert_consistent()


# ---------------------------------------------------------------- UpdateVm


def test_update_vm_applies_only_masked_fields(cluster: Cluster) -> None:
    api = cluster.api()
    vm = api.create_vm("upd-vm", description="before")
    d0 = api.add_disk(vm, "upd-d0", cluster.domain_ids[0], SIZE, bootable=True)
    d1 = api.add_disk(vm, "upd-d1", cluster.domain_ids[1], SIZE)
    nics = [inventory_pb2.Nic(name="eth0", mac="52:54:00:12:34:56", network="ovirtmgmt")]
    job = _update(
        api,
        vm,
        ["name", "cpu_count", "custom_properties", "nics", "home_domain_id"],
        name="upd-vm2",
        description="ignored: not in the mask",
        cpu_count=8,
        memory_mb=1,  # invalid, but not in the mask
        custom_properties={"k": "v"},
        nics=nics,
        home_domain_id=cluster.domain_ids[1],
        disks=[
            _disk_attrs(d0, ["bootable"], bootable=False),
            _disk_attrs(
                d1,
                ["alias", "interface", "bootable"],
                alias="upd-boot",
                interface=inventory_pb2.DISK_INTERFACE_SATA,
                bootable=True,
            ),
        ],
    )
    assert job.state == SUCCEEDED and job.kind == common_pb2.JOB_KIND_UPDATE_VM, job
    assert job.result.vm_id == vm and not job.steps
    got = _vm(api, vm)
    assert got.config.name == "upd-vm2"
    assert got.config.description == "before"
    assert (got.config.cpu_count, got.config.memory_mb) == (8, 2048)
    assert dict(got.config.custom_properties) == {"k": "v"}
    assert list(got.config.nics) == nics
    assert got.config.home_domain_id == cluster.domain_ids[1]
    disks = {d.id: d for d in got.disks}
    assert disks[d1].alias == "upd-boot"
    assert disks[d0].alias == "upd-d0"
    a0, a1 = disks[d0].attachments[0], disks[d1].attachments[0]
    assert (a0.bootable, a1.bootable) == (False, True)
    assert a1.interface == inventory_pb2.DISK_INTERFACE_SATA
    assert a0.interface == inventory_pb2.DISK_INTERFACE_VIRTIO
    assert not got.locked

    # Clearing the home domain; UpdateVm is allowed while the VM is in preview.
    with _in_preview(api, vm):
        job = _update(api, vm, ["home_domain_id", "memory_mb"], memory_mb=4096)
        assert job.state == SUCCEEDED, job
        got = _vm(api, vm)
        assert got.in_preview and got.config.home_domain_id == ""
        assert got.config.memory_mb == 4096

    # The ACTIVE configuration is rendered from the updated VM.
    active = api.snapshots.GetSnapshot(
        snapshots_pb2.GetSnapshotRequest(vm_id=vm, snapshot_id=got.active_snapshot_id),
        timeout=10,
    )
    assert active.config.vm.name == "upd-vm2"
    assert {d.alias for d in active.config.disks} == {"upd-d0", "upd-boot"}
    api.assert_consistent()


def test_update_vm_request_id(cluster: Cluster) -> None:
    api = cluster.api()
    vm = api.create_vm("upd-rid")
    env = _env()
    req = inventory_pb2.UpdateVmRequest(
        vm_id=vm,
        config=inventory_pb2.VmConfig(cpu_count=3),
        update_mask=field_mask_pb2.FieldMask(paths=["cpu_count"]),
        envelope=env,
    )
    first = api.inventory.UpdateVm(req, timeout=10).job
    assert api.inventory.UpdateVm(req, timeout=10).job.id == first.id
    req.config.cpu_count = 5
    _rejected(
        cluster,
        lambda: api.inventory.UpdateVm(req, timeout=10),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert _vm(api, vm).config.cpu_count == 3


# ---------------------------------------------------------------- SetVmRunState


def test_run_state_up_down_and_memory_is_consumed(cluster: Cluster, db: Engine) -> None:
    api = cluster.api()
    vm = api.create_vm("run-vm")
    active_id = _vm(api, vm).active_snapshot_id
    with db.begin() as conn:
        conn.execute(
            update(Snapshot)
            .where(Snapshot.id == active_id)
            .values(
                memory={
                    "memory_id": str(uuid.uuid4()),
                    "domain_id": cluster.domain_ids[0],
                    "size_bytes": 1,
                }
            )
        )

    def active_has_memory() -> bool:
        got: snapshots_pb2.GetSnapshotResponse = api.snapshots.GetSnapshot(
            snapshots_pb2.GetSnapshotRequest(vm_id=vm, snapshot_id=active_id), timeout=10
        )
        return got.snapshot.has_memory

    assert active_has_memory()
    job = _run_state(api, vm, inventory_pb2.RUN_STATE_UP, cluster.host_ids[1])
    assert job.state == SUCCEEDED and job.kind == common_pb2.JOB_KIND_SET_VM_RUN_STATE, job
    got = _vm(api, vm)
    assert got.run_state == inventory_pb2.RUN_STATE_UP and got.host_id == cluster.host_ids[1]
    assert not active_has_memory()
    # UP again on another host (a migration) and DOWN, which clears the host; both are
    # allowed while the VM is in preview (which needs a DOWN VM to begin).
    assert _run_state(api, vm, inventory_pb2.RUN_STATE_UP, cluster.host_ids[2]).state == SUCCEEDED
    assert _vm(api, vm).host_id == cluster.host_ids[2]
    assert _run_state(api, vm, inventory_pb2.RUN_STATE_DOWN).state == SUCCEEDED
    with _in_preview(api, vm):
        up = _run_state(api, vm, inventory_pb2.RUN_STATE_UP, cluster.host_ids[0])
        assert up.state == SUCCEEDED
        assert _run_state(api, vm, inventory_pb2.RUN_STATE_DOWN).state == SUCCEEDED
    got = _vm(api, vm)
    assert got.run_state == inventory_pb2.RUN_STATE_DOWN and got.host_id == ""
    api.assert_consistent()


def test_run_state_up_on_a_down_host(cluster: Cluster) -> None:
    api = cluster.api()
    vm = api.create_vm("run-down-host")
    agent = cluster.agents[2]
    agent.stop()
    try:

        def down() -> None:
            hosts = api.inventory.ListHosts(inventory_pb2.ListHostsRequest(), timeout=10).hosts
            status = {h.id: h.status for h in hosts}
            assert status[cluster.host_ids[2]] == inventory_pb2.HOST_STATUS_DOWN

        retry(down, timeout=15)
        metadata = _rejected(
            cluster,
            lambda: _run_state(api, vm, inventory_pb2.RUN_STATE_UP, cluster.host_ids[2]),
            grpc.StatusCode.FAILED_PRECONDITION,
            "HOST_NOT_UP",
        )
        assert metadata == {"host_id": cluster.host_ids[2], "host_name": "host2"}
    finally:
        agent.restart()
    api.wait_hosts_up()
    assert _run_state(api, vm, inventory_pb2.RUN_STATE_UP, cluster.host_ids[2]).state == SUCCEEDED
    assert _run_state(api, vm, inventory_pb2.RUN_STATE_DOWN).state == SUCCEEDED
    api.assert_consistent()


# ---------------------------------------------------------------- Attach / Detach


def test_detach_then_attach_elsewhere(cluster: Cluster) -> None:
    api = cluster.api()
    vm1, vm2 = api.create_vm("att-1"), api.create_vm("att-2")
    disk = api.add_disk(vm1, "att-d", cluster.domain_ids[0], SIZE, bootable=True)
    head = _disk(api, disk).head_volume_id

    job = _detach(api, disk, vm1)
    assert job.state == SUCCEEDED and job.kind == common_pb2.JOB_KIND_DETACH_DISK, job
    floating = api.inventory.ListDisks(
        inventory_pb2.ListDisksRequest(floating_only=True, page_size=500), timeout=10
    ).disks
    assert disk in {d.id for d in floating}
    assert not _tree(api, disk).volumes[0].HasField("owner")
    assert list(_vm(api, vm1).disks) == []
    api.assert_consistent()

    job = _attach(api, disk, vm2, interface=inventory_pb2.DISK_INTERFACE_IDE, bootable=True)
    assert job.state == SUCCEEDED and job.result.disk_id == disk, job
    got = _disk(api, disk)
    assert [(a.vm_id, a.interface, a.bootable) for a in got.attachments] == [
        (vm2, inventory_pb2.DISK_INTERFACE_IDE, True)
    ]
    owner = _tree(api, disk).volumes[0].owner
    assert owner.type == snapshots_pb2.SNAPSHOT_TYPE_ACTIVE and owner.vm_id == vm2
    # The disk is snapshot-able on its new VM.
    snap = api.snapshot(vm2, "after attach")
    assert snap.state == SUCCEEDED, snap
    assert _disk(api, disk).head_volume_id != head
    assert _disk(api, disk).history_vm_id == vm2
    api.assert_consistent()


def test_shareable_and_lun_disks_attach_to_several_vms(cluster: Cluster) -> None:
    api = cluster.api()
    vm1, vm2 = api.create_vm("shr-1"), api.create_vm("shr-2")
    shared = api.add_disk(vm1, "shr-d", cluster.domain_ids[1], SIZE, shareable=True)
    lun = _lun_disk(api, "shr-lun")
    assert _attach(api, shared, vm2).state == SUCCEEDED
    assert _attach(api, lun, vm1).state == SUCCEEDED
    assert {a.vm_id for a in _disk(api, shared).attachments} == {vm1, vm2}
    assert not _tree(api, shared).volumes[0].HasField("owner")
    # A shareable disk takes no part in snapshots of either VM.
    snap = api.snapshot(vm2, "config only")
    assert snap.state == SUCCEEDED
    assert [o.outcome for o in snap.outcomes] == [common_pb2.DISK_OUTCOME_KIND_NOT_SELECTED]
    assert _detach(api, shared, vm1).state == SUCCEEDED
    assert [a.vm_id for a in _disk(api, shared).attachments] == [vm2]
    assert _detach(api, lun, vm1).state == SUCCEEDED
    api.assert_consistent()


def test_floating_disk_with_history_goes_back_to_its_vm(cluster: Cluster) -> None:
    api = cluster.api()
    vm = api.create_vm("hist-1")
    other = api.create_vm("hist-2")
    disk = api.add_disk(vm, "hist-d", cluster.domain_ids[2], SIZE)
    kept = api.add_disk(vm, "hist-kept", cluster.domain_ids[2], SIZE)
    s1 = api.snapshot(vm, "S1")
    assert s1.state == SUCCEEDED
    _make_floating(api, vm, disk, previewed=kept, snapshot_id=s1.result.snapshot_id)
    api.assert_consistent()
    assert _disk(api, disk).history_vm_id == vm
    _rejected(
        cluster,
        lambda: _attach(api, disk, other),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DISK_SNAPSHOTS_BELONG_TO_ANOTHER_VM",
    )
    assert _attach(api, disk, vm).state == SUCCEEDED
    head = _tree(api, disk).head_id
    owners = {v.id: v.owner for v in _tree(api, disk).volumes}
    assert owners[head].type == snapshots_pb2.SNAPSHOT_TYPE_ACTIVE
    api.assert_consistent()


# ---------------------------------------------------------------- RemoveDisk


def test_remove_disk_with_snapshots_deletes_its_tree_leaf_first(cluster: Cluster) -> None:
    api = cluster.api()
    vm = api.create_vm("rmd-vm")
    d = api.add_disk(vm, "rmd-d", cluster.domain_ids[0], SIZE)
    e = api.add_disk(vm, "rmd-e", cluster.domain_ids[1], SIZE)
    s1 = api.snapshot(vm, "S1").result.snapshot_id
    s2 = api.snapshot(vm, "S2 d only", [d]).result.snapshot_id
    s3 = api.snapshot(vm, "S3").result.snapshot_id
    chain = [v.id for v in _tree(api, d).volumes]  # oldest first: base ← S2's ← S3's ← head
    assert len(chain) == 4 and _files(cluster, 0, d) == set(chain)
    e_files = _files(cluster, 1, e)

    job = _remove_disk(api, d)
    assert job.kind == common_pb2.JOB_KIND_REMOVE_DISK and job.result.disk_id == d
    # The decision was made at admission: the disk is gone whatever the cleanup does.
    with pytest.raises(grpc.RpcError) as caught:
        _disk(api, d)
    assert error_info(caught.value)[1] == "DISKS_NOT_EXIST"
    job = _wait(api, job)
    assert job.state == SUCCEEDED, job
    deletes = [s for s in job.steps if s.kind == common_pb2.STEP_KIND_DELETE_VOLUME]
    assert [s.volume_ids[0] for s in sorted(deletes, key=lambda s: s.seq)] == chain[::-1]
    assert {s.state for s in deletes} == {common_pb2.STEP_STATE_DONE}
    assert [(o.disk_id, o.outcome) for o in job.outcomes] == [(d, DELETED)]
    assert sorted(job.outcomes[0].volume_ids) == sorted(chain)
    assert _files(cluster, 0, d) == set()
    assert _files(cluster, 1, e) == e_files

    snaps = {s.id: s for s in _snapshots(api, vm)}
    assert [x.disk_id for x in snaps[s1].disks] == [e]
    assert list(snaps[s2].disks) == []  # kept as a configuration-only snapshot
    assert [x.disk_id for x in snaps[s3].disks] == [e]
    assert [x.id for x in _vm(api, vm).disks] == [e]
    api.assert_consistent()


def test_remove_floating_lun_and_shareable_disks(cluster: Cluster, db: Engine) -> None:
    api = cluster.api()
    vm1, vm2 = api.create_vm("rmf-1"), api.create_vm("rmf-2")
    floating = _floating_disk(api, "rmf-fl", cluster.domain_ids[2])
    lun = _lun_disk(api, "rmf-lun", vm1)
    shared = api.add_disk(vm1, "rmf-sh", cluster.domain_ids[2], SIZE, shareable=True)
    assert _attach(api, shared, vm2).state == SUCCEEDED

    job = _remove_disk(api, lun)
    assert job.state == SUCCEEDED and not job.steps, job  # DB only
    assert [(o.disk_id, o.outcome) for o in job.outcomes] == [(lun, DELETED)]

    for disk in (floating, shared):
        assert _files(cluster, 2, disk)
        job = _wait(api, _remove_disk(api, disk))
        assert job.state == SUCCEEDED, job
        assert [(o.disk_id, o.outcome) for o in job.outcomes] == [(disk, DELETED)]
        assert _files(cluster, 2, disk) == set()
        assert _volume_rows(db, disk) == []
    assert list(_vm(api, vm1).disks) == list(_vm(api, vm2).disks) == []
    api.assert_consistent()


def test_remove_disk_request_id_after_the_disk_is_gone(cluster: Cluster) -> None:
    api = cluster.api()
    disk = _floating_disk(api, "rmr-fl", cluster.domain_ids[1])
    req = inventory_pb2.RemoveDiskRequest(disk_id=disk, envelope=_env())
    first = api.inventory.RemoveDisk(req, timeout=10).job
    assert api.inventory.RemoveDisk(req, timeout=10).job.id == first.id
    assert _wait(api, first).state == SUCCEEDED
    assert api.inventory.RemoveDisk(req, timeout=10).job.id == first.id


def test_remove_disk_cleanup_failure_leaves_garbage_for_the_reaper(
    cluster: Cluster, db: Engine
) -> None:
    api = cluster.api()
    vm = api.create_vm("rmg-vm")
    disk = api.add_disk(vm, "rmg-d", cluster.domain_ids[2], SIZE)
    assert api.snapshot(vm, "S1").state == SUCCEEDED
    volumes = [v.id for v in _tree(api, disk).volumes]
    cluster.faults[2].set(
        [{"op": "DeleteVolume", "disk_id": "*", "action": "error", "code": "UNAVAILABLE"}]
    )
    try:
        job = _remove_disk(api, disk)
        with pytest.raises(grpc.RpcError):
            _disk(api, disk)  # finalized at admission
        job = api.wait_job(job.id, timeout=60)
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL, job
        (outcome,) = job.outcomes
        assert outcome.outcome == common_pb2.DISK_OUTCOME_KIND_CLEANUP_PENDING
        assert outcome.reason == "AGENT_UNAVAILABLE"
        assert sorted(outcome.volume_ids) == sorted(volumes)
        assert not job.HasField("error")
        # Garbage rows (INV-12) and their files remain; nothing was rolled back.
        assert sorted(_volume_rows(db, disk)) == sorted((v, True) for v in volumes)
        assert _files(cluster, 2, disk) == set(volumes)
        assert [x.disk_id for x in _snapshots(api, vm)[1].disks] == []
        api.assert_consistent()
    finally:
        cluster.faults[2].clear()

    def reaped() -> None:
        assert _volume_rows(db, disk) == []
        assert _files(cluster, 2, disk) == set()

    retry(reaped, timeout=30)
    api.assert_consistent()


# ---------------------------------------------------------------- RemoveVm


def test_remove_vm_deletes_snapshots_and_disks_keeps_shared(cluster: Cluster, db: Engine) -> None:
    api = cluster.api()
    vm = api.create_vm("rmv-vm")
    other = api.create_vm("rmv-other")
    d0 = api.add_disk(vm, "rmv-d0", cluster.domain_ids[0], SIZE, bootable=True)
    d1 = api.add_disk(vm, "rmv-d1", cluster.domain_ids[1], SIZE)
    hist = api.add_disk(vm, "rmv-hist", cluster.domain_ids[1], SIZE)
    shared = api.add_disk(vm, "rmv-sh", cluster.domain_ids[0], SIZE, shareable=True)
    assert _attach(api, shared, other).state == SUCCEEDED
    lun = _lun_disk(api, "rmv-lun", vm)
    s1 = api.snapshot(vm, "S1")
    assert s1.state == SUCCEEDED
    assert api.snapshot(vm, "S2", [d0]).state == SUCCEEDED
    # Floating, its history VM is still rmv-vm; d1's head is now an overlay on S1's volume.
    _make_floating(api, vm, hist, previewed=d1, snapshot_id=s1.result.snapshot_id)
    files = {d0: _files(cluster, 0, d0), d1: _files(cluster, 1, d1), hist: _files(cluster, 1, hist)}
    parents = {v.id: v.parent_id for d in files for v in _tree(api, d).volumes}
    assert [len(f) for f in files.values()] == [3, 2, 2]
    shared_files = _files(cluster, 0, shared)
    api.assert_consistent()

    job = _wait(api, _remove_vm(api, vm))
    assert job.state == SUCCEEDED and job.kind == common_pb2.JOB_KIND_REMOVE_VM, job
    assert job.result.vm_id == vm
    assert {o.disk_id: o.outcome for o in job.outcomes} == {d0: DELETED, d1: DELETED, hist: DELETED}
    for disk, host in ((d0, 0), (d1, 1), (hist, 1)):
        assert _files(cluster, host, disk) == set()
        assert _volume_rows(db, disk) == []
        # Leaf-first within each disk.
        seqs = [s for s in job.steps if s.disk_id == disk]
        order = [s.volume_ids[0] for s in sorted(seqs, key=lambda s: s.seq)]
        assert set(order) == files[disk]
        for i, volume_id in enumerate(order):
            assert parents[volume_id] not in order[:i], "a parent was deleted before its child"
    with pytest.raises(grpc.RpcError) as caught:
        _vm(api, vm)
    assert error_info(caught.value)[1] == "VM_NOT_EXIST"
    with pytest.raises(grpc.RpcError) as caught:
        _snapshots(api, vm)
    assert error_info(caught.value)[1] == "VM_NOT_EXIST"
    # Shareable and LUN disks are detached and kept.
    assert [a.vm_id for a in _disk(api, shared).attachments] == [other]
    assert _files(cluster, 0, shared) == shared_files
    assert list(_disk(api, lun).attachments) == []
    with db.connect() as conn:
        assert conn.execute(select(Snapshot.id).where(Snapshot.vm_id == vm)).all() == []
    api.assert_consistent()


def test_remove_vm_without_volumes_is_db_only(cluster: Cluster) -> None:
    api = cluster.api()
    vm = api.create_vm("rmv-empty")
    lun = _lun_disk(api, "rmv-empty-lun", vm)
    job = _remove_vm(api, vm)
    assert job.state == SUCCEEDED and not job.steps and list(job.outcomes) == [], job
    assert list(_disk(api, lun).attachments) == []
    # The name is free again.
    assert api.create_vm("rmv-empty")
    api.assert_consistent()


def test_leaf_first_order_of_a_tree() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def vol(vid: str, parent: str | None, second: int) -> Volume:
        return Volume(id=vid, parent_id=parent, created_at=t0.replace(second=second))

    # root ← a ← {b, c ← d}: every child precedes its parent.
    order = [
        v.id
        for v in leaf_first(
            [
                vol("root", None, 0),
                vol("a", "root", 1),
                vol("b", "a", 2),
                vol("c", "a", 3),
                vol("d", "c", 4),
            ]
        )
    ]
    assert order == ["d", "c", "b", "a", "root"]
