"""Preview, restore, commit and undo validations (SPEC §3.2-3.5, §4): reason, gRPC code,
metadata, check order, and nothing changed by a rejected request.

One module-scoped cluster holds every VM the rejection cases need; they are built once with
real operations (a floating disk with history comes from a preview that excluded it and a
commit that kept it, D11). The cases only read, so they share that state.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, update

from disksnap.engine.v1 import common_pb2, inventory_pb2, snapshots_pb2
from engine_svc.commands.preview_snapshot import DiskSelection, PreviewSnapshot, validate_preview
from engine_svc.db.models import Volume
from engine_svc.db.session import make_engine
from engine_svc.errors import InvalidArgument
from support.engine import Cluster, EngineApi, db_dump, error_info, retry
from support.vms import SIZE, Vm

NIL = "00000000-0000-0000-0000-000000000000"
UNKNOWN = "0b7a3c5e-1111-4222-8333-944455556666"
SUCCEEDED = common_pb2.JOB_STATE_SUCCEEDED
IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION
AB = grpc.StatusCode.ABORTED
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


def _env() -> common_pb2.RequestEnvelope:
    return common_pb2.RequestEnvelope(request_id=str(uuid.uuid4()))


def _state(cluster: Cluster, tables: tuple[str, ...] = ()) -> dict[str, Any]:
    dump = db_dump(cluster.db_url)
    if tables:
        # A job is running: compare what a rejected request could have touched.
        return {"job_ids": sorted(row[0] for row in dump["jobs"]), **{k: dump[k] for k in tables}}
    return {k: v for k, v in dump.items() if k not in LIVENESS_TABLES}


def _rejected(
    cluster: Cluster,
    call: Callable[[], Any],
    code: grpc.StatusCode,
    reason: str,
    tables: tuple[str, ...] = (),
) -> dict[str, str]:
    """Run a call that must fail with (code, reason) and change nothing; returns metadata."""
    before = _state(cluster, tables)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    got_code, got_reason, metadata = error_info(caught.value)
    assert (got_code, got_reason) == (code, reason), caught.value.details()
    assert _state(cluster, tables) == before
    return metadata


def _snapshot_rpc(api: EngineApi, rpc: str, **fields: Any) -> common_pb2.Job:
    request = getattr(snapshots_pb2, f"{rpc}Request")(envelope=_env(), **fields)
    job: common_pb2.Job = getattr(api.snapshots, rpc)(request, timeout=10).job
    return job


def _run_state(api: EngineApi, vm_id: str, host_id: str = "") -> common_pb2.Job:
    state = inventory_pb2.RUN_STATE_UP if host_id else inventory_pb2.RUN_STATE_DOWN
    job: common_pb2.Job = api.inventory.SetVmRunState(
        inventory_pb2.SetVmRunStateRequest(
            vm_id=vm_id, run_state=state, host_id=host_id, envelope=_env()
        ),
        timeout=10,
    ).job
    return job


def _floating_disk(api: EngineApi, alias: str, domain_id: str) -> common_pb2.Job:
    job: common_pb2.Job = api.inventory.AddDisk(
        inventory_pb2.AddDiskRequest(
            alias=alias,
            domain_id=domain_id,
            virtual_size=SIZE,
            format=inventory_pb2.DISK_FORMAT_COW,
            envelope=_env(),
        ),
        timeout=10,
    ).job
    return job


def _wait_host(api: EngineApi, host_id: str, status: int) -> None:
    def reached() -> None:
        hosts = api.inventory.ListHosts(inventory_pb2.ListHostsRequest(), timeout=10).hosts
        assert {h.id: h.status for h in hosts}[host_id] == status

    retry(reached, timeout=20)


# ---------------------------------------------------------------- the shared world


@pytest.fixture(scope="module")
def world(cluster: Cluster) -> dict[str, str]:
    """VMs in every state the cases need; keys are referenced as "@key" by the cases.

    pv  DOWN, not in preview: pv-d1, pv-d2 (snapshot-able), pv-shared, pv-lun; S1 (d1, d2,
        hist), S2 (d1 only); pv-hist floating with pv's history.
    po  another VM with po-d1 and its snapshot SO.     fl  a floating disk, no history.
    pu  UP with snapshot SU.
    pi  in preview (pi-d1 from SI, pi-d2 preview-detached), then started: UP in preview.
    """
    api = cluster.api()
    sd0, sd1, sd2 = cluster.domain_ids
    pv = Vm(cluster, "pv", {"pv-d1": 0, "pv-d2": 1, "pv-hist": 1})
    shared = api.add_disk(pv.id, "pv-shared", sd0, SIZE, shareable=True)
    lun_job = api.inventory.AddDisk(
        inventory_pb2.AddDiskRequest(
            alias="pv-lun", kind=inventory_pb2.DISK_KIND_LUN, lun_id="lun-pv", vm_id=pv.id
        ),
        timeout=10,
    ).job
    s1 = pv.snapshot("S1")
    s1_volumes = pv.table()[s1][2]
    active = pv.active_id()
    job = pv.run(
        "PreviewSnapshot",
        disks=pv.select(**{"pv-d1": s1, "pv-d2": active}),
        exclude_disk_ids=[pv.disks["pv-hist"]],
    )
    assert job.state == SUCCEEDED, job
    job = pv.run("CommitPreview")
    assert job.state == SUCCEEDED, job
    assert pv.outcomes(job)["pv-hist"] == common_pb2.DISK_OUTCOME_KIND_FLOATING
    s2 = pv.snapshot("S2", ["pv-d1"])
    fl = api.wait_job(_floating_disk(api, "fl", sd2).id)
    assert fl.state == SUCCEEDED, fl

    po = Vm(cluster, "po", {"po-d1": 2})
    so = po.snapshot("SO")
    pu = Vm(cluster, "pu", {"pu-d1": 2})
    su = pu.snapshot("SU")
    assert _run_state(api, pu.id, cluster.host_ids[2]).state == SUCCEEDED

    pi = Vm(cluster, "pi", {"pi-d1": 0, "pi-d2": 2})
    si = pi.snapshot("SI")
    job = pi.run(
        "PreviewSnapshot", disks=pi.select(**{"pi-d1": si}), exclude_disk_ids=[pi.disks["pi-d2"]]
    )
    assert job.state == SUCCEEDED, job
    # Allowed while in preview (SPEC §3.2): starting the VM.
    assert _run_state(api, pi.id, cluster.host_ids[0]).state == SUCCEEDED
    assert pi.vm().in_preview and pi.vm().run_state == inventory_pb2.RUN_STATE_UP
    api.assert_consistent()
    return {
        "pv": pv.id,
        "active": active,
        "d1": pv.disks["pv-d1"],
        "d2": pv.disks["pv-d2"],
        "hist": pv.disks["pv-hist"],
        "hist_head": pv.head("pv-hist"),
        "shared": shared,
        "lun": lun_job.result.disk_id,
        "s1": s1,
        "s1_d2": s1_volumes["pv-d2"],
        "s2": s2,
        "s2_d1": pv.table()[s2][2]["pv-d1"],
        "fl": fl.result.disk_id,
        "fl_head": api.snapshots.GetDiskVolumeTree(
            snapshots_pb2.GetDiskVolumeTreeRequest(disk_id=fl.result.disk_id), timeout=10
        ).head_id,
        "po": po.id,
        "o1": po.disks["po-d1"],
        "so": so,
        "so_o1": po.table()[so][2]["po-d1"],
        "pu": pu.id,
        "su": su,
        "pi": pi.id,
        "i1": pi.disks["pi-d1"],
        "i2": pi.disks["pi-d2"],
        "si": si,
        "si_i1": pi.table()[si][2]["pi-d1"],
        "host0": cluster.host_ids[0],
        "sd0": sd0,
        "sd1": sd1,
    }


def _ref(world: dict[str, str], value: str) -> str:
    return world[value[1:]] if value.startswith("@") else value


def _preview_fields(world: dict[str, str], f: dict[str, Any]) -> dict[str, Any]:
    """PreviewSnapshotRequest fields (RestoreSnapshot takes the same ones)."""
    disks = []
    for disk, source in f.get("disks", []):
        selection = snapshots_pb2.DiskSelection(disk_id=_ref(world, disk))
        kind, _, value = source.partition(":")
        if kind == "snap":
            selection.snapshot_id = _ref(world, value)
        elif kind == "vol":
            selection.volume_id = _ref(world, value)
        disks.append(selection)
    return {
        "vm_id": _ref(world, f.get("vm", "@pv")),
        "config_snapshot_id": _ref(world, f.get("config", "")),
        "restore_memory": bool(f.get("memory", False)),
        "disks": disks,
        "exclude_disk_ids": [_ref(world, d) for d in f.get("exclude", [])],
    }


# Selections that cover pv's two snapshot-able disks, for cases about a third named disk.
D1_S1 = ("@d1", "snap:@s1")
D1_KEPT = ("@d1", "snap:@active")
D2_KEPT = ("@d2", "snap:@active")

# (name, request fields, code, reason, expected metadata subset)
PREVIEW_CASES: list[tuple[str, dict[str, Any], grpc.StatusCode, str, dict[str, str]]] = [
    # 1-2: arguments
    ("bad vm id", {"vm": "not-a-vm"}, IA, "INVALID_FIELD", {"field": "vm_id"}),
    ("bad config id", {"config": "S1"}, IA, "INVALID_FIELD", {"field": "config_snapshot_id"}),
    (
        "bad disk id",
        {"disks": [("../x", "snap:@s1")]},
        IA,
        "INVALID_FIELD",
        {"field": "disks.disk_id"},
    ),
    (
        "bad volume id",
        {"disks": [("@d1", "vol:X"), D2_KEPT]},
        IA,
        "INVALID_FIELD",
        {"field": "disks.volume_id"},
    ),
    (
        "bad excluded id",
        {"disks": [D1_S1], "exclude": ["x"]},
        IA,
        "INVALID_FIELD",
        {"field": "exclude_disk_ids"},
    ),
    (
        "nil config snapshot",
        {"config": NIL},
        IA,
        "CORRUPTED_VM_SNAPSHOT_ID",
        {"field": "config_snapshot_id"},
    ),
    (
        "nil selection snapshot",
        {"disks": [("@d1", f"snap:{NIL}"), D2_KEPT]},
        IA,
        "CORRUPTED_VM_SNAPSHOT_ID",
        {"field": "disks.snapshot_id"},
    ),
    (
        "selection without a source",
        {"disks": [("@d1", ""), D2_KEPT]},
        IA,
        "INVALID_FIELD",
        {"field": "disks"},
    ),
    (
        "disk selected twice",
        {"disks": [D1_S1, ("@d1", "snap:@s2"), D2_KEPT]},
        IA,
        "DUPLICATE_DISK_IDS",
        {"disk_ids": "@d1"},
    ),
    (
        "disk selected and excluded",
        {"disks": [D1_S1], "exclude": ["@d1", "@d2"]},
        IA,
        "DUPLICATE_DISK_IDS",
        {"disk_ids": "@d1"},
    ),
    (
        "disk excluded twice",
        {"disks": [D1_S1], "exclude": ["@d2", "@d2"]},
        IA,
        "DUPLICATE_DISK_IDS",
        {"disk_ids": "@d2"},
    ),
    # 3: existence
    ("unknown vm", {"vm": UNKNOWN, "config": "@s1"}, NF, "VM_NOT_EXIST", {"vm_id": UNKNOWN}),
    # 5-6: state
    (
        "vm in preview",
        {"vm": "@pi", "config": "@si"},
        FP,
        "VM_IN_PREVIEW",
        {"vm_id": "@pi", "vm_name": "pi"},
    ),
    (
        "vm up",
        {"vm": "@pu", "config": "@su"},
        FP,
        "VM_IS_NOT_DOWN",
        {"vm_id": "@pu", "vm_name": "pu", "run_state": "UP"},
    ),
    # 7: the configuration snapshot
    (
        "config of another vm",
        {"config": "@so"},
        NF,
        "VM_SNAPSHOT_DOES_NOT_EXIST",
        {"vm_id": "@pv", "snapshot_id": "@so"},
    ),
    (
        "unknown config",
        {"config": UNKNOWN},
        NF,
        "VM_SNAPSHOT_DOES_NOT_EXIST",
        {"snapshot_id": UNKNOWN},
    ),
    # 8: named disks
    (
        "unknown disk selected",
        {"disks": [D1_S1, D2_KEPT, (UNKNOWN, "snap:@s1")]},
        NF,
        "DISKS_NOT_EXIST",
        {"disk_ids": UNKNOWN},
    ),
    (
        "unknown disk excluded",
        {"disks": [D1_S1, D2_KEPT], "exclude": [UNKNOWN]},
        NF,
        "DISKS_NOT_EXIST",
        {"disk_ids": UNKNOWN},
    ),
    (
        "shareable disk selected",
        {"disks": [D1_S1, D2_KEPT, ("@shared", "snap:@active")]},
        FP,
        "DISK_SNAPSHOT_NOT_SUPPORTED",
        {"disk_ids": "@shared", "disk_aliases": "pv-shared"},
    ),
    (
        "lun disk excluded",
        {"disks": [D1_S1, D2_KEPT], "exclude": ["@lun"]},
        FP,
        "DISK_SNAPSHOT_NOT_SUPPORTED",
        {"disk_ids": "@lun", "disk_aliases": "pv-lun"},
    ),
    (
        "floating disk excluded",
        {"disks": [D1_S1, D2_KEPT], "exclude": ["@fl"]},
        FP,
        "DISKS_NOT_ATTACHED_TO_VM",
        {"disk_ids": "@fl", "disk_aliases": "fl", "vm_name": "pv"},
    ),
    (
        "floating disk with history excluded",
        {"disks": [D1_S1, D2_KEPT], "exclude": ["@hist"]},
        FP,
        "DISKS_NOT_ATTACHED_TO_VM",
        {"disk_ids": "@hist"},
    ),
    (
        "disk of another vm excluded",
        {"disks": [D1_S1, D2_KEPT], "exclude": ["@o1"]},
        FP,
        "DISKS_NOT_ATTACHED_TO_VM",
        {"disk_ids": "@o1"},
    ),
    # 9: every selection resolves (D6)
    (
        "selection from another vm's snapshot",
        {"disks": [("@d1", "snap:@so"), D2_KEPT]},
        NF,
        "VM_SNAPSHOT_DOES_NOT_EXIST",
        {"vm_id": "@pv", "snapshot_id": "@so"},
    ),
    (
        "selection from an unknown snapshot",
        {"disks": [("@d1", f"snap:{UNKNOWN}"), D2_KEPT]},
        NF,
        "VM_SNAPSHOT_DOES_NOT_EXIST",
        {"snapshot_id": UNKNOWN},
    ),
    (
        "snapshot without a volume of the disk",
        {"disks": [D1_KEPT, ("@d2", "snap:@s2")]},
        NF,
        "DISK_SNAPSHOTS_NOT_EXIST",
        {"disk_id": "@d2", "snapshot_id": "@s2"},
    ),
    (
        "unknown volume",
        {"disks": [("@d1", f"vol:{UNKNOWN}"), D2_KEPT]},
        NF,
        "DISK_SNAPSHOTS_NOT_EXIST",
        {"volume_ids": UNKNOWN},
    ),
    (
        "volume of another disk",
        {"disks": [("@d1", "vol:@s1_d2"), D2_KEPT]},
        FP,
        "VM_DISK_SNAPSHOT_NOT_ATTACHED_TO_VM",
        {"disk_ids": "@d1", "volume_ids": "@s1_d2", "vm_name": "pv"},
    ),
    (
        "disk of another vm selected",
        {"disks": [D1_S1, D2_KEPT, ("@o1", "vol:@so_o1")]},
        FP,
        "VM_DISK_SNAPSHOT_NOT_ATTACHED_TO_VM",
        {"disk_ids": "@o1", "volume_ids": "@so_o1"},
    ),
    (
        "floating disk without history selected",
        {"disks": [D1_S1, D2_KEPT, ("@fl", "vol:@fl_head")]},
        FP,
        "VM_DISK_SNAPSHOT_NOT_ATTACHED_TO_VM",
        {"disk_ids": "@fl"},
    ),
    (
        "head of a floating disk",
        {"disks": [D1_S1, D2_KEPT, ("@hist", "vol:@hist_head")]},
        FP,
        "DISK_SNAPSHOTS_ACTIVE",
        {"volume_ids": "@hist_head"},
    ),
    # 10: coverage (D7)
    (
        "selection incomplete",
        {"config": "@s1", "disks": [D1_S1]},
        IA,
        "PREVIEW_DISK_SELECTION_INCOMPLETE",
        {"disk_ids": "@d2", "disk_aliases": "pv-d2"},
    ),
    (
        "exclusion alone incomplete",
        {"exclude": ["@d1"]},
        IA,
        "PREVIEW_DISK_SELECTION_INCOMPLETE",
        {"disk_ids": "@d2", "disk_aliases": "pv-d2"},
    ),
    # 11: something changes
    (
        "every disk kept",
        {"disks": [D1_KEPT, D2_KEPT]},
        FP,
        "CANNOT_PREVIEW_ACTIVE_SNAPSHOT",
        {"vm_id": "@pv"},
    ),
    ("active as config", {"config": "@active"}, FP, "CANNOT_PREVIEW_ACTIVE_SNAPSHOT", {}),
    ("nothing requested", {}, FP, "CANNOT_PREVIEW_ACTIVE_SNAPSHOT", {}),
    (
        "every disk excluded",
        {"exclude": ["@d1", "@d2"]},
        FP,
        "CANNOT_PREVIEW_ACTIVE_SNAPSHOT",
        {},
    ),
    # 12: memory (D8)
    (
        "memory of a snapshot without memory",
        {"config": "@s1", "memory": True},
        FP,
        "MEMORY_NOT_AVAILABLE",
        {"snapshot_id": "@s1"},
    ),
    (
        "memory without a config snapshot",
        {"disks": [D1_S1, D2_KEPT], "memory": True},
        FP,
        "MEMORY_NOT_AVAILABLE",
        {},
    ),
    # Check order: the first failing check wins (SPEC §3.0).
    (
        "ids before the vm",
        {"vm": UNKNOWN, "disks": [("bad", "snap:@s1")]},
        IA,
        "INVALID_FIELD",
        {},
    ),
    ("nil before the vm", {"vm": UNKNOWN, "config": NIL}, IA, "CORRUPTED_VM_SNAPSHOT_ID", {}),
    (
        "duplicates before the vm",
        {"vm": UNKNOWN, "exclude": [UNKNOWN, UNKNOWN]},
        IA,
        "DUPLICATE_DISK_IDS",
        {},
    ),
    ("vm before its snapshot", {"vm": UNKNOWN, "config": UNKNOWN}, NF, "VM_NOT_EXIST", {}),
    (
        "in preview wins over up",
        {"vm": "@pi", "disks": [("@i1", "snap:@si")], "exclude": ["@i2"]},
        FP,
        "VM_IN_PREVIEW",
        {},
    ),
    (
        "in preview before the config",
        {"vm": "@pi", "config": UNKNOWN},
        FP,
        "VM_IN_PREVIEW",
        {},
    ),
    ("up before the config", {"vm": "@pu", "config": UNKNOWN}, FP, "VM_IS_NOT_DOWN", {}),
    (
        "config before the disks",
        {"config": UNKNOWN, "exclude": [UNKNOWN]},
        NF,
        "VM_SNAPSHOT_DOES_NOT_EXIST",
        {},
    ),
    (
        "existence before support",
        {"disks": [D1_S1, D2_KEPT, ("@shared", "snap:@s1"), (UNKNOWN, "snap:@s1")]},
        NF,
        "DISKS_NOT_EXIST",
        {},
    ),
    (
        "support before attachment",
        {"disks": [D1_S1, D2_KEPT], "exclude": ["@fl", "@lun"]},
        FP,
        "DISK_SNAPSHOT_NOT_SUPPORTED",
        {},
    ),
    (
        "attachment before resolution",
        {"disks": [("@d1", "snap:@so")], "exclude": ["@d2", "@fl"]},
        FP,
        "DISKS_NOT_ATTACHED_TO_VM",
        {},
    ),
    (
        "resolution before coverage",
        {"disks": [("@d1", "snap:@so")]},
        NF,
        "VM_SNAPSHOT_DOES_NOT_EXIST",
        {},
    ),
    (
        "coverage before nothing changing",
        {"disks": [D1_KEPT]},
        IA,
        "PREVIEW_DISK_SELECTION_INCOMPLETE",
        {},
    ),
    (
        "nothing changing before memory",
        {"disks": [D1_KEPT, D2_KEPT], "memory": True},
        FP,
        "CANNOT_PREVIEW_ACTIVE_SNAPSHOT",
        {},
    ),
]


@pytest.mark.parametrize("rpc", ["PreviewSnapshot", "RestoreSnapshot"])
@pytest.mark.parametrize(
    ("name", "fields", "code", "reason", "meta"), PREVIEW_CASES, ids=[c[0] for c in PREVIEW_CASES]
)
def test_preview_rejected_and_nothing_changed(
    cluster: Cluster,
    world: dict[str, str],
    rpc: str,
    name: str,
    fields: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
    meta: dict[str, str],
) -> None:
    """RestoreSnapshot runs exactly the preview checks (SPEC §3.5)."""
    api = cluster.api()
    request = _preview_fields(world, fields)
    metadata = _rejected(cluster, lambda: _snapshot_rpc(api, rpc, **request), code, reason)
    expected = {k: _ref(world, v) for k, v in meta.items()}
    assert {k: metadata.get(k) for k in expected} == expected, metadata


def test_selection_with_both_sources_is_invalid() -> None:
    """The proto oneof cannot carry both; the command checks it for other callers."""
    cmd = PreviewSnapshot(
        vm_id=UNKNOWN, disks=(DiskSelection(UNKNOWN, snapshot_id=UNKNOWN, volume_id=UNKNOWN),)
    )
    with pytest.raises(InvalidArgument) as caught:
        validate_preview(cmd)
    assert (caught.value.reason, caught.value.metadata["field"]) == ("INVALID_FIELD", "disks")


END_CASES: list[tuple[str, dict[str, Any], grpc.StatusCode, str, dict[str, str]]] = [
    ("bad vm id", {"vm_id": "nope"}, IA, "INVALID_FIELD", {"field": "vm_id"}),
    ("unknown vm", {"vm_id": UNKNOWN}, NF, "VM_NOT_EXIST", {"vm_id": UNKNOWN}),
    ("not in preview", {"vm_id": "@pv"}, FP, "VM_SNAPSHOT_NOT_IN_PREVIEW", {"vm_id": "@pv"}),
    # Check order: "in preview" (3) comes before "DOWN" (4).
    ("up and not in preview", {"vm_id": "@pu"}, FP, "VM_SNAPSHOT_NOT_IN_PREVIEW", {}),
    (
        "up in preview",
        {"vm_id": "@pi"},
        FP,
        "VM_IS_NOT_DOWN",
        {"vm_name": "pi", "run_state": "UP"},
    ),
]


@pytest.mark.parametrize("rpc", ["CommitPreview", "UndoPreview"])
@pytest.mark.parametrize(
    ("name", "fields", "code", "reason", "meta"), END_CASES, ids=[c[0] for c in END_CASES]
)
def test_commit_and_undo_rejected_and_nothing_changed(
    cluster: Cluster,
    world: dict[str, str],
    rpc: str,
    name: str,
    fields: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
    meta: dict[str, str],
) -> None:
    api = cluster.api()
    request: dict[str, Any] = {"vm_id": _ref(world, fields["vm_id"])}
    if rpc == "CommitPreview":
        request["delete_detached_disks"] = True
    metadata = _rejected(cluster, lambda: _snapshot_rpc(api, rpc, **request), code, reason)
    expected = {k: _ref(world, v) for k, v in meta.items()}
    assert {k: metadata.get(k) for k in expected} == expected, metadata


def _in_preview_calls(api: EngineApi, w: dict[str, str]) -> dict[str, Callable[[], Any]]:
    """Every request the "while in preview" rule (SPEC §3.2) refuses, aimed at VM pi."""
    inv = api.inventory
    return {
        "CreateSnapshot": lambda: _snapshot_rpc(
            api, "CreateSnapshot", vm_id=w["pi"], description="in preview"
        ),
        "PreviewSnapshot": lambda: _snapshot_rpc(
            api, "PreviewSnapshot", vm_id=w["pi"], config_snapshot_id=w["si"]
        ),
        "RestoreSnapshot": lambda: _snapshot_rpc(
            api, "RestoreSnapshot", vm_id=w["pi"], config_snapshot_id=w["si"]
        ),
        "RemoveSnapshot": lambda: _snapshot_rpc(
            api, "RemoveSnapshot", vm_id=w["pi"], snapshot_id=w["si"]
        ),
        "RemoveDiskSnapshots": lambda: api.snapshots.RemoveDiskSnapshots(
            snapshots_pb2.RemoveDiskSnapshotsRequest(volume_ids=[w["si_i1"]], envelope=_env()),
            timeout=10,
        ),
        "AddDisk": lambda: inv.AddDisk(
            inventory_pb2.AddDiskRequest(
                alias="late",
                domain_id=w["sd0"],
                virtual_size=SIZE,
                vm_id=w["pi"],
                envelope=_env(),
            ),
            timeout=10,
        ),
        "RemoveDisk": lambda: inv.RemoveDisk(
            inventory_pb2.RemoveDiskRequest(disk_id=w["i1"], envelope=_env()), timeout=10
        ),
        "RemoveDisk of a preview-detached disk": lambda: inv.RemoveDisk(
            inventory_pb2.RemoveDiskRequest(disk_id=w["i2"], envelope=_env()), timeout=10
        ),
        "AttachDisk": lambda: inv.AttachDisk(
            inventory_pb2.AttachDiskRequest(disk_id=w["fl"], vm_id=w["pi"], envelope=_env()),
            timeout=10,
        ),
        "AttachDisk of a preview-detached disk elsewhere": lambda: inv.AttachDisk(
            inventory_pb2.AttachDiskRequest(disk_id=w["i2"], vm_id=w["po"], envelope=_env()),
            timeout=10,
        ),
        "DetachDisk": lambda: inv.DetachDisk(
            inventory_pb2.DetachDiskRequest(disk_id=w["i1"], vm_id=w["pi"], envelope=_env()),
            timeout=10,
        ),
        "DetachDisk of a preview-detached disk": lambda: inv.DetachDisk(
            inventory_pb2.DetachDiskRequest(disk_id=w["i2"], vm_id=w["pi"], envelope=_env()),
            timeout=10,
        ),
        "RemoveVm": lambda: inv.RemoveVm(
            inventory_pb2.RemoveVmRequest(vm_id=w["pi"], envelope=_env()), timeout=10
        ),
    }


IN_PREVIEW_OPERATIONS = [
    "CreateSnapshot",
    "PreviewSnapshot",
    "RestoreSnapshot",
    "RemoveSnapshot",
    "RemoveDiskSnapshots",
    "AddDisk",
    "RemoveDisk",
    "RemoveDisk of a preview-detached disk",
    "AttachDisk",
    "AttachDisk of a preview-detached disk elsewhere",
    "DetachDisk",
    "DetachDisk of a preview-detached disk",
    "RemoveVm",
]


@pytest.mark.parametrize("operation", IN_PREVIEW_OPERATIONS)
def test_refused_while_in_preview(cluster: Cluster, world: dict[str, str], operation: str) -> None:
    """VM pi is in preview and UP: VM_IN_PREVIEW wins over VM_IS_NOT_DOWN everywhere."""
    api = cluster.api()
    call = _in_preview_calls(api, world)[operation]
    metadata = _rejected(cluster, call, FP, "VM_IN_PREVIEW")
    assert (metadata["vm_id"], metadata["vm_name"]) == (world["pi"], "pi")


def test_rejections_left_everything_consistent(cluster: Cluster, world: dict[str, str]) -> None:
    cluster.api().assert_consistent()


# ---------------------------------------------------------------- checks 13-14


def test_illegal_chosen_volume_is_refused(
    cluster: Cluster, world: dict[str, str], db: Engine
) -> None:
    """Check 13. An ILLEGAL REGULAR volume is what a merge that failed mid-way leaves
    (RemoveSnapshot FAILED_ILLEGAL); it is set directly here and put back afterwards."""
    api = cluster.api()
    s2_d1 = world["s2_d1"]
    with db.begin() as conn:
        conn.execute(update(Volume).where(Volume.id == s2_d1).values(status="ILLEGAL"))
    try:
        for rpc in ("PreviewSnapshot", "RestoreSnapshot"):
            request = _preview_fields(world, {"disks": [("@d1", "snap:@s2"), D2_KEPT]})
            metadata = _rejected(
                cluster, partial(_snapshot_rpc, api, rpc, **request), FP, "DISKS_ILLEGAL"
            )
            assert (metadata["disk_ids"], metadata["disk_aliases"]) == (world["d1"], "pv-d1")
        # The ILLEGAL volume is not involved when d1 is kept: that preview is admitted.
        request = _preview_fields(world, {"disks": [D1_KEPT, ("@d2", "snap:@s1")]})
        job = api.wait_job(_snapshot_rpc(api, "PreviewSnapshot", **request).id)
        assert job.state == SUCCEEDED, job
        assert api.wait_job(_snapshot_rpc(api, "UndoPreview", vm_id=world["pv"]).id).state == (
            SUCCEEDED
        )
    finally:
        with db.begin() as conn:
            conn.execute(update(Volume).where(Volume.id == s2_d1).values(status="OK"))
    api.assert_consistent()


def test_inactive_domain_is_refused(cluster: Cluster, world: dict[str, str]) -> None:
    """Check 14: the domain of a PREVIEWED disk must be usable (sd1 has no UP host)."""
    api = cluster.api()
    agent = cluster.agents[1]
    agent.stop()
    try:
        _wait_host(api, cluster.host_ids[1], inventory_pb2.HOST_STATUS_DOWN)
        # d2 lives on sd1: previewing it needs an overlay there.
        request = _preview_fields(world, {"disks": [D1_KEPT, ("@d2", "snap:@s1")]})
        metadata = _rejected(
            cluster,
            lambda: _snapshot_rpc(api, "PreviewSnapshot", **request),
            FP,
            "STORAGE_DOMAIN_STATUS_ILLEGAL",
        )
        assert (metadata["domain_id"], metadata["status"]) == (world["sd1"], "INACTIVE")
        # Check order: a state check (VM_IN_PREVIEW) before the storage check.
        _rejected(
            cluster,
            lambda: _snapshot_rpc(api, "PreviewSnapshot", vm_id=world["pi"]),
            FP,
            "VM_IN_PREVIEW",
        )
    finally:
        agent.restart(same_port=True)
    api.wait_hosts_up()


# ---------------------------------------------------------------- locks


def test_lock_conflicts_win_over_state_checks(cluster: Cluster) -> None:
    """Check 4 (locks) comes before 5 (in preview) and commit's 2 before 3 (SPEC §3.0)."""
    api = cluster.api()
    sd2 = cluster.domain_ids[2]
    vm = Vm(cluster, "pl", {"pl-d1": 2})
    free = Vm(cluster, "pl-free", {"pl-free-d1": 2})
    s1 = vm.snapshot("SL")
    tables = ("vms", "disks", "attachments", "snapshots", "locks")
    delay = {"op": "CreateVolume", "action": "delay", "seconds": 5, "times": 1}
    cluster.faults[2].set([{**delay, "disk_id": vm.disks["pl-d1"]}, {**delay, "disk_id": "*"}])
    try:
        # A CreateSnapshot job holds vm:pl, an AddDisk job holds disk:<new>.
        creating = vm.start("CreateSnapshot", description="slow")
        adding = _floating_disk(api, "pl-new", sd2)
        calls = [
            partial(_snapshot_rpc, api, "PreviewSnapshot", vm_id=vm.id, config_snapshot_id=s1),
            partial(_snapshot_rpc, api, "RestoreSnapshot", vm_id=vm.id, config_snapshot_id=s1),
            # Not in preview either: the lock is checked first.
            partial(_snapshot_rpc, api, "CommitPreview", vm_id=vm.id),
            partial(_snapshot_rpc, api, "UndoPreview", vm_id=vm.id),
        ]
        for call in calls:
            metadata = _rejected(cluster, call, AB, "SNAPSHOT_IS_BEING_TAKEN_FOR_VM", tables)
            assert (metadata["job_id"], metadata["vm_name"]) == (creating.id, "pl")
        # A named disk locked by another job (check 4) before "not attached" (check 8).
        metadata = _rejected(
            cluster,
            lambda: _snapshot_rpc(
                api,
                "PreviewSnapshot",
                vm_id=free.id,
                config_snapshot_id=free.active_id(),
                exclude_disk_ids=[adding.result.disk_id],
            ),
            AB,
            "DISKS_LOCKED",
            tables,
        )
        assert metadata["disk_ids"] == adding.result.disk_id
        assert metadata["job_id"] == adding.id
        assert api.wait_job(creating.id).state == SUCCEEDED
        assert api.wait_job(adding.id).state == SUCCEEDED

        # A preview in flight: the VM is already in preview (its PREVIEW row exists), and
        # the lock still wins.
        cluster.faults[2].set([{**delay, "disk_id": vm.disks["pl-d1"]}])
        previewing = vm.start("PreviewSnapshot", config_snapshot_id=s1)
        calls = [
            partial(_snapshot_rpc, api, "PreviewSnapshot", vm_id=vm.id, config_snapshot_id=s1),
            partial(_snapshot_rpc, api, "CreateSnapshot", vm_id=vm.id, description="x"),
            partial(_snapshot_rpc, api, "CommitPreview", vm_id=vm.id),
            partial(_snapshot_rpc, api, "UndoPreview", vm_id=vm.id),
            partial(_run_state, api, vm.id, cluster.host_ids[0]),
        ]
        assert vm.vm().in_preview
        for call in calls:
            metadata = _rejected(cluster, call, AB, "VM_IS_DURING_SNAPSHOT", tables)
            assert metadata["job_id"] == previewing.id
            assert metadata["job_kind"] == "PREVIEW_SNAPSHOT"
        assert api.wait_job(previewing.id).state == SUCCEEDED
    finally:
        cluster.faults[2].clear()
    assert vm.run("UndoPreview").state == SUCCEEDED
    api.assert_consistent()


# ---------------------------------------------------------------- allowed while in preview


def _update(api: EngineApi, vm: Vm, **config: Any) -> common_pb2.Job:
    disks = config.pop("disks", [])
    job: common_pb2.Job = api.inventory.UpdateVm(
        inventory_pb2.UpdateVmRequest(
            vm_id=vm.id,
            config=inventory_pb2.VmConfig(**config),
            update_mask=field_mask_pb2.FieldMask(paths=sorted(config)),
            disks=disks,
            envelope=_env(),
        ),
        timeout=10,
    ).job
    assert job.state == SUCCEEDED, job
    return job


Config = tuple[str, str, int, dict[str, str], dict[str, tuple[str, int]]]


def _config(vm: Vm) -> Config:
    """name, description, cpus, properties and {alias key: (alias, interface)} of a VM."""
    got = vm.vm()
    disks = {vm.alias_of[d.id]: (d.alias, int(d.attachments[0].interface)) for d in got.disks}
    return (
        got.config.name,
        got.config.description,
        got.config.cpu_count,
        dict(got.config.custom_properties),
        disks,
    )


def test_update_vm_in_preview_discarded_by_undo_kept_by_commit(cluster: Cluster) -> None:
    api = cluster.api()
    vm = Vm(cluster, "pupd", {"d1": 0, "d2": 1})
    vm.write("d1", 0x11, 0)
    s1 = vm.snapshot("S1")  # cpu 2, no description
    _update(api, vm, description="current", cpu_count=4, custom_properties={"k": "now"})
    sata = inventory_pb2.DISK_INTERFACE_SATA
    virtio = inventory_pb2.DISK_INTERFACE_VIRTIO
    before: Config = (
        "pupd",
        "current",
        4,
        {"k": "now"},
        {"d1": ("d1", virtio), "d2": ("d2", virtio)},
    )
    assert _config(vm) == before

    # A rejected request does not consume its request_id (SPEC §3.0).
    env = _env()
    incomplete = snapshots_pb2.PreviewSnapshotRequest(
        vm_id=vm.id, config_snapshot_id=s1, disks=vm.select(d1=s1), envelope=env
    )
    _rejected(
        cluster,
        lambda: api.snapshots.PreviewSnapshot(incomplete, timeout=10),
        IA,
        "PREVIEW_DISK_SELECTION_INCOMPLETE",
    )
    job = api.snapshots.PreviewSnapshot(
        snapshots_pb2.PreviewSnapshotRequest(vm_id=vm.id, config_snapshot_id=s1, envelope=env),
        timeout=10,
    ).job
    assert api.wait_job(job.id).state == SUCCEEDED
    assert _config(vm)[1:4] == ("", 2, {})  # S1's configuration

    # Allowed in preview: start (then commit/undo need DOWN), stop, UpdateVm.
    assert _run_state(api, vm.id, cluster.host_ids[1]).state == SUCCEEDED
    for rpc in ("UndoPreview", "CommitPreview"):
        _rejected(cluster, partial(_snapshot_rpc, api, rpc, vm_id=vm.id), FP, "VM_IS_NOT_DOWN")
    assert _run_state(api, vm.id).state == SUCCEEDED
    renamed = inventory_pb2.DiskAttributes(
        disk_id=vm.disks["d1"],
        alias="d1-new",
        interface=sata,
        update_mask=field_mask_pb2.FieldMask(paths=["alias", "interface"]),
    )
    _update(api, vm, name="pupd2", description="during", cpu_count=6, disks=[renamed])
    during: Config = ("pupd2", "during", 6, {}, {"d1": ("d1-new", sata), "d2": ("d2", virtio)})
    assert _config(vm) == during

    # Undo discards the changes, except the name (D16).
    job = vm.run("UndoPreview")
    assert job.state == SUCCEEDED, job
    assert _config(vm) == ("pupd2", *before[1:])
    vm.expect("d1", {0: 0x11})

    # Commit keeps them.
    assert vm.run("PreviewSnapshot", config_snapshot_id=s1).state == SUCCEEDED
    _update(api, vm, description="during", cpu_count=6, disks=[renamed])
    job = vm.run("CommitPreview")
    assert job.state == SUCCEEDED, job
    assert _config(vm) == during
    assert not vm.vm().in_preview
    vm.expect("d1", {0: 0x11})
    api.assert_consistent()


def test_world_unchanged_after_everything(cluster: Cluster, world: dict[str, str]) -> None:
    """The shared VMs are where the setup left them (no rejected request slipped through)."""
    api = cluster.api()
    got = {
        key: api.inventory.GetVm(inventory_pb2.GetVmRequest(vm_id=world[key]), timeout=10).vm
        for key in ("pv", "pi", "pu")
    }
    assert not got["pv"].in_preview and got["pi"].in_preview
    assert got["pu"].run_state == got["pi"].run_state == inventory_pb2.RUN_STATE_UP
    api.assert_consistent()
