"""Preview, commit, undo, restore (SPEC §3.2-3.5), data read back after every step.

Every disk gets a distinct byte pattern before each snapshot; after each operation every
disk is read back through its head with qemu-io and must hold exactly the pattern of the
snapshot chosen for it (or its current data when kept).
"""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2

from disksnap.engine.v1 import common_pb2, inventory_pb2, snapshots_pb2
from support.engine import Cluster
from support.vms import Vm

OK = snapshots_pb2.SNAPSHOT_STATUS_OK
IN_PREVIEW = snapshots_pb2.SNAPSHOT_STATUS_IN_PREVIEW
ACTIVE = snapshots_pb2.SNAPSHOT_TYPE_ACTIVE
REGULAR = snapshots_pb2.SNAPSHOT_TYPE_REGULAR
PREVIEW = snapshots_pb2.SNAPSHOT_TYPE_PREVIEW


def test_spec_worked_example(cluster: Cluster) -> None:
    """SPEC §9, step by step, with the snapshot/volume table asserted after each step."""
    vm = Vm(cluster, "vm1", {"d1": 0, "d2": 0, "d3": 0})
    api = vm.api
    a = vm.active_id()
    step0 = api.heads(vm.id)
    a0, b0, c0 = (step0[vm.disks[x]] for x in ("d1", "d2", "d3"))
    for i, alias in enumerate(("d1", "d2", "d3")):
        vm.write(alias, 0x11 + i, 0)

    # Step 1: S1 of all disks.
    s1 = vm.snapshot("S1")
    step1 = api.heads(vm.id)
    a1, b1, c1 = (step1[vm.disks[x]] for x in ("d1", "d2", "d3"))
    assert vm.table() == {
        a: (ACTIVE, OK, {"d1": a1, "d2": b1, "d3": c1}),
        s1: (REGULAR, OK, {"d1": a0, "d2": b0, "d3": c0}),
    }

    # Step 2: pattern X lands in a1, b1, c1.
    for alias in ("d1", "d2", "d3"):
        vm.write(alias, 0x58, 1)

    # Step 3: S2 of d1 only; A keeps its id, b1 and c1 untouched.
    s2 = vm.snapshot("S2", ["d1"])
    a2 = api.heads(vm.id)[vm.disks["d1"]]
    assert vm.active_id() == a
    assert vm.table() == {
        a: (ACTIVE, OK, {"d1": a2, "d2": b1, "d3": c1}),
        s1: (REGULAR, OK, {"d1": a0, "d2": b0, "d3": c0}),
        s2: (REGULAR, OK, {"d1": a1}),
    }

    # Step 4: custom preview: configuration from S1, d1 from S2, d2 from S1, d3 kept.
    job = vm.run(
        "PreviewSnapshot",
        config_snapshot_id=s1,
        disks=vm.select(d1=s2, d2=s1, d3=a),
    )
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    outcomes = {vm.alias_of[o.disk_id]: o.outcome for o in job.outcomes}
    assert outcomes == {
        "d1": common_pb2.DISK_OUTCOME_KIND_PREVIEWED,
        "d2": common_pb2.DISK_OUTCOME_KIND_PREVIEWED,
        "d3": common_pb2.DISK_OUTCOME_KIND_KEPT,
    }
    heads = api.heads(vm.id)
    p1, p2 = heads[vm.disks["d1"]], heads[vm.disks["d2"]]
    assert heads[vm.disks["d3"]] == c1
    table = vm.table()
    preview_id = next(k for k, v in table.items() if v[0] == PREVIEW)
    assert table == {
        a: (ACTIVE, OK, {"d1": p1, "d2": p2, "d3": c1}),
        s1: (REGULAR, IN_PREVIEW, {"d1": a0, "d2": b0, "d3": c0}),
        s2: (REGULAR, IN_PREVIEW, {"d1": a1}),
        preview_id: (PREVIEW, OK, {"d1": a2, "d2": b1, "d3": c1}),
    }
    assert vm.tree("d1") == {
        a0: ("", s1, False),
        a1: (a0, s2, False),
        a2: (a1, preview_id, False),
        p1: (a1, a, True),
    }
    assert vm.tree("d2") == {b0: ("", s1, False), b1: (b0, preview_id, False), p2: (b0, a, True)}
    vm.expect("d1", {0: 0x11, 1: 0x58})
    vm.expect("d2", {0: 0x12, 1: 0})
    vm.expect("d3", {0: 0x13, 1: 0x58})
    api.assert_consistent()

    # Step 5: commit keeps every snapshot; a2 and b1 are deleted.
    job = vm.run("CommitPreview")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert vm.table() == {
        a: (ACTIVE, OK, {"d1": p1, "d2": p2, "d3": c1}),
        s1: (REGULAR, OK, {"d1": a0, "d2": b0, "d3": c0}),
        s2: (REGULAR, OK, {"d1": a1}),
    }
    assert vm.tree("d1") == {a0: ("", s1, False), a1: (a0, s2, False), p1: (a1, a, True)}
    assert vm.tree("d2") == {b0: ("", s1, False), p2: (b0, a, True)}
    assert vm.tree("d3") == {c0: ("", s1, False), c1: (c0, a, True)}
    assert not vm.path("d1", a2).exists()
    assert not vm.path("d2", b1).exists()
    vm.expect("d1", {0: 0x11, 1: 0x58})
    vm.expect("d2", {0: 0x12, 1: 0})
    vm.expect("d3", {0: 0x13, 1: 0x58})
    api.assert_consistent()


def test_undo_restores_everything_and_keeps_data_of_kept_disks(cluster: Cluster) -> None:
    vm = Vm(cluster, "vmundo", {"os": 0, "data": 1})
    api = vm.api
    for alias, byte in (("os", 0x21), ("data", 0x22)):
        vm.write(alias, byte, 0)
    s1 = vm.snapshot("S1")
    api.inventory.UpdateVm(
        inventory_pb2.UpdateVmRequest(
            vm_id=vm.id,
            config=inventory_pb2.VmConfig(cpu_count=8),
            update_mask=field_mask_pb2.FieldMask(paths=["cpu_count"]),
        ),
        timeout=10,
    )
    vm.write("os", 0x31, 1)
    vm.write("data", 0x32, 1)
    before_heads = api.heads(vm.id)
    job = vm.run(
        "PreviewSnapshot", config_snapshot_id=s1, disks=vm.select(os=s1, data=vm.active_id())
    )
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert vm.vm().config.cpu_count == 2  # S1's configuration
    vm.expect("os", {0: 0x21, 1: 0})
    # Writes during the preview: into the overlay of os, into the kept head of data.
    vm.write("os", 0x41, 2)
    vm.write("data", 0x42, 2)
    job = vm.run("UndoPreview")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert api.heads(vm.id) == before_heads
    assert vm.vm().config.cpu_count == 8
    vm.expect("os", {0: 0x21, 1: 0x31, 2: 0})
    vm.expect("data", {0: 0x22, 1: 0x32, 2: 0x42})
    assert {v[1] for v in vm.table().values()} == {OK}
    api.assert_consistent()


def test_restore_is_preview_plus_commit(cluster: Cluster) -> None:
    vm = Vm(cluster, "vmrestore", {"d1": 1, "d2": 2})
    api = vm.api
    vm.write("d1", 0x51, 0)
    vm.write("d2", 0x52, 0)
    s1 = vm.snapshot("S1")
    vm.write("d1", 0x61, 0)
    vm.write("d2", 0x62, 0)
    old = api.heads(vm.id)
    job = vm.run("RestoreSnapshot", config_snapshot_id=s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert {o.outcome for o in job.outcomes} == {common_pb2.DISK_OUTCOME_KIND_COMMITTED}
    vm.expect("d1", {0: 0x51})
    vm.expect("d2", {0: 0x52})
    assert all(not vm.path(vm.alias_of[d], v).exists() for d, v in old.items())
    assert not any(t[0] == PREVIEW for t in vm.table().values())
    api.assert_consistent()


def test_mixed_preview_two_hosts_excluded_disk_then_newer_snapshot(cluster: Cluster) -> None:
    """Three snapshots across three disks on two hosts, one disk excluded; commit; then
    preview a snapshot newer than the committed one (still there with its data); undo."""
    vm = Vm(cluster, "vmmix", {"a": 0, "b": 1, "c": 1})
    api = vm.api
    for alias, base in (("a", 0x10), ("b", 0x20), ("c", 0x30)):
        vm.write(alias, base + 1, 0)
    s1 = vm.snapshot("S1")
    for alias, base in (("a", 0x10), ("b", 0x20), ("c", 0x30)):
        vm.write(alias, base + 2, 0)
    s2 = vm.snapshot("S2")
    for alias, base in (("a", 0x10), ("b", 0x20), ("c", 0x30)):
        vm.write(alias, base + 3, 0)
    s3 = vm.snapshot("S3")
    for alias, base in (("a", 0x10), ("b", 0x20), ("c", 0x30)):
        vm.write(alias, base + 4, 0)
    job = vm.run(
        "PreviewSnapshot",
        config_snapshot_id=s2,
        disks=vm.select(a=s1, b=s3),
        exclude_disk_ids=[vm.disks["c"]],
    )
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    outcomes = {vm.alias_of[o.disk_id]: o.outcome for o in job.outcomes}
    assert outcomes["c"] == common_pb2.DISK_OUTCOME_KIND_DETACHED
    vm.expect("a", {0: 0x11})
    vm.expect("b", {0: 0x23})
    attached = {
        d.id
        for d in vm.vm().disks
        if d.attachments[0].state == inventory_pb2.ATTACHMENT_STATE_ATTACHED
    }
    assert vm.disks["c"] not in attached
    api.assert_consistent()

    job = vm.run("CommitPreview")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    outcomes = {vm.alias_of[o.disk_id]: o.outcome for o in job.outcomes}
    assert outcomes["c"] == common_pb2.DISK_OUTCOME_KIND_FLOATING
    assert vm.disks["c"] not in {d.id for d in vm.vm().disks}
    floating = api.inventory.ListDisks(
        inventory_pb2.ListDisksRequest(floating_only=True), timeout=10
    ).disks
    assert vm.disks["c"] in {d.id for d in floating}
    vm.expect("a", {0: 0x11})
    vm.expect("b", {0: 0x23})
    api.assert_consistent()

    # S3 is newer than S1 (previewed for a) and still exists with its data.
    assert {s1, s2, s3} <= set(vm.table())
    job = vm.run("PreviewSnapshot", disks=vm.select(a=s3, b=vm.active_id()))
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    vm.expect("a", {0: 0x13})
    vm.expect("b", {0: 0x23})
    api.assert_consistent()
    job = vm.run("UndoPreview")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    vm.expect("a", {0: 0x11})
    api.assert_consistent()


@pytest.mark.parametrize("atomic_failure", ["error"])
def test_overlay_failure_rolls_preview_back(cluster: Cluster, atomic_failure: str) -> None:
    vm = Vm(cluster, "vmpf", {"d1": 0, "d2": 1})
    api = vm.api
    s1 = vm.snapshot("S1")
    vm.write("d1", 0x71, 0)
    before = (api.heads(vm.id), vm.table(), vm.vm().config)
    cluster.faults[1].set(
        [
            {
                "op": "CreateVolume",
                "disk_id": vm.disks["d2"],
                "action": atomic_failure,
                "code": "INTERNAL",
                "when": "after",
                "times": 1,
            }
        ]
    )
    job = vm.run("PreviewSnapshot", config_snapshot_id=s1)
    assert job.state == common_pb2.JOB_STATE_FAILED, job
    assert (api.heads(vm.id), vm.table(), vm.vm().config) == before
    vm.expect("d1", {0: 0x71})
    api.assert_consistent()


def _set_bootable(vm: Vm, alias: str) -> None:
    """Make ``alias`` the VM's only bootable disk."""
    attrs = [
        inventory_pb2.DiskAttributes(
            disk_id=disk_id,
            bootable=a == alias,
            update_mask=field_mask_pb2.FieldMask(paths=["bootable"]),
        )
        for a, disk_id in sorted(vm.disks.items(), key=lambda item: item[0] != alias)
    ]
    job = vm.api.inventory.UpdateVm(
        inventory_pb2.UpdateVmRequest(vm_id=vm.id, disks=attrs), timeout=10
    ).job
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job


def _bootable(vm: Vm) -> set[str]:
    return {vm.alias_of[d.id] for d in vm.vm().disks if d.attachments[0].bootable}


@pytest.mark.parametrize("config", ["current", "snapshot"])
def test_one_bootable_disk_after_preview(cluster: Cluster, config: str) -> None:
    """A previewed disk that was bootable in its snapshot meets a kept disk that is bootable
    now: only the configuration source's bootable disk keeps the flag (SPEC §3.2)."""
    vm = Vm(cluster, f"vmboot-{config}", {"a": 0, "b": 1})
    # "first" sorts first by id, so picking "the first bootable attachment" is not enough.
    first, second = sorted(vm.disks, key=lambda alias: vm.disks[alias])
    _set_bootable(vm, first)
    s1 = vm.snapshot("S1")
    _set_bootable(vm, second)
    fields: dict[str, object] = {"disks": vm.select(**{first: s1, second: vm.active_id()})}
    if config == "snapshot":
        fields["config_snapshot_id"] = s1
    job = vm.run("PreviewSnapshot", **fields)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert _bootable(vm) == ({second} if config == "current" else {first})
    vm.api.assert_consistent()
    assert vm.run("UndoPreview").state == common_pb2.JOB_STATE_SUCCEEDED
    assert _bootable(vm) == {second}
