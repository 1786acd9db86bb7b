"""Preview, commit, undo and restore under failures, and their storage effects (SPEC §3.2-3.5,
§5.7, §5.9): agent crashes during commit's deletions, engine kill -9 mid-job, D9, D11.

Every test builds its own VMs on one module-scoped cluster and reads the data back through
the heads with qemu-io. Fault rules are cleared whatever happens, so later tests start clean.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from disksnap.engine.v1 import common_pb2, inventory_pb2, jobs_pb2, snapshots_pb2
from support.engine import Cluster, error_info, retry
from support.vms import Vm

SUCCEEDED = common_pb2.JOB_STATE_SUCCEEDED
PARTIAL = common_pb2.JOB_STATE_SUCCEEDED_PARTIAL
FAILED = common_pb2.JOB_STATE_FAILED
COMMITTED = common_pb2.DISK_OUTCOME_KIND_COMMITTED
KEPT = common_pb2.DISK_OUTCOME_KIND_KEPT
FLOATING = common_pb2.DISK_OUTCOME_KIND_FLOATING
DELETED = common_pb2.DISK_OUTCOME_KIND_DELETED
DETACHED = common_pb2.DISK_OUTCOME_KIND_DETACHED
PREVIEWED = common_pb2.DISK_OUTCOME_KIND_PREVIEWED
RESTORED = common_pb2.DISK_OUTCOME_KIND_RESTORED
CLEANUP_PENDING = common_pb2.DISK_OUTCOME_KIND_CLEANUP_PENDING


@pytest.fixture(scope="module")
def cluster(module_cluster: Cluster) -> Iterator[Cluster]:
    yield module_cluster
    for faults in module_cluster.faults:
        faults.clear()


def _two_states(vm: Vm) -> str:
    """Pattern 0x1n in every disk, snapshot S1, then pattern 0x2n; returns S1's id."""
    for n, alias in enumerate(vm.disks):
        vm.write(alias, 0x10 + n, 0)
    s1 = vm.snapshot("S1")
    for n, alias in enumerate(vm.disks):
        vm.write(alias, 0x20 + n, 0)
    return s1


def _expect_state(vm: Vm, base: int) -> None:
    for n, alias in enumerate(vm.disks):
        vm.expect(alias, {0: base + n})


def _files(vm: Vm, alias: str) -> set[str]:
    """Volume files (sidecars excluded) of a disk."""
    folder = vm.path(alias, "x").parent
    return {p.name for p in folder.iterdir() if "." not in p.name} if folder.exists() else set()


def _garbage(vm: Vm, alias: str) -> list[str]:
    tree = vm.api.snapshots.GetDiskVolumeTree(
        snapshots_pb2.GetDiskVolumeTreeRequest(disk_id=vm.disks[alias]), timeout=10
    )
    return [v.id for v in tree.volumes if v.pending_delete]


# ---------------------------------------------------------------- agent crash in cleanup


@pytest.mark.parametrize("agent_returns", [True, False], ids=["restarted", "down-past-budget"])
def test_agent_crash_during_commit_deletions(cluster: Cluster, agent_returns: bool) -> None:
    """Commit is decided at admission (D13); a crashed agent only delays the deletions."""
    name = "vmcc" if agent_returns else "vmcd"
    vm = Vm(cluster, name, {"d1": 1, "d2": 0})
    s1 = _two_states(vm)
    before = vm.api.heads(vm.id)
    assert vm.run("PreviewSnapshot", config_snapshot_id=s1).state == SUCCEEDED
    old = {alias: before[vm.disks[alias]] for alias in vm.disks}
    agent = cluster.agents[1]
    when = "after" if agent_returns else "before"
    cluster.faults[1].set(
        [
            {
                "op": "DeleteVolume",
                "disk_id": vm.disks["d1"],
                "action": "crash",
                "when": when,
                "times": 1,
            }
        ]
    )
    try:
        job = vm.start("CommitPreview")
        agent.wait_exit(timeout=30)
        assert not vm.vm().in_preview  # the decision stands while the agent is down
        if agent_returns:
            agent.restart(same_port=True)
        job = vm.api.wait_job(job.id, timeout=90)
    finally:
        cluster.faults[1].clear()
        if not agent.is_running():
            agent.restart(same_port=True)
    _expect_state(vm, 0x10)
    assert not vm.path("d2", old["d2"]).exists()
    if agent_returns:
        assert job.state == SUCCEEDED, job
        assert vm.outcomes(job) == {
            "d1": COMMITTED,
            "d2": COMMITTED,
        }
        assert not vm.path("d1", old["d1"]).exists()
    else:
        assert job.state == PARTIAL, job
        pending = next(o for o in job.outcomes if o.disk_id == vm.disks["d1"])
        assert pending.outcome == CLEANUP_PENDING
        assert pending.reason == "AGENT_UNAVAILABLE"
        assert list(pending.volume_ids) == [old["d1"]]
        assert vm.outcomes(job)["d2"] == COMMITTED
        assert not job.HasField("error")
        # The garbage survives the job; the reaper (every 2 s here) deletes it once the
        # agent is back.
        assert _garbage(vm, "d1") == [old["d1"]]

        def reaped() -> None:
            assert _garbage(vm, "d1") == []
            assert not vm.path("d1", old["d1"]).exists()

        retry(reaped, timeout=40)
    _expect_state(vm, 0x10)
    vm.api.assert_consistent()


# ---------------------------------------------------------------- engine kill -9


@pytest.mark.parametrize("operation", ["preview", "commit", "restore"])
def test_engine_killed_mid_job_recovers(cluster: Cluster, operation: str) -> None:
    """After kill -9 and restart every job ends, nothing is left LOCKED (INV-11), and the
    data reads as if the operation happened completely or not at all."""
    vm = Vm(cluster, f"vmk-{operation}", {"d1": 0, "d2": 1})
    s1 = _two_states(vm)
    before = vm.api.heads(vm.id)
    if operation == "commit":
        assert vm.run("PreviewSnapshot", config_snapshot_id=s1).state == SUCCEEDED
    # Every step is delayed so the kill lands in flight: preview mid-overlays, commit
    # mid-deletions, restore after its preview phase, mid-cleanup.
    op = "CreateVolume" if operation == "preview" else "DeleteVolume"
    delays = [{"op": op, "disk_id": "*", "action": "delay", "seconds": 3}]
    for faults in cluster.faults[:2]:
        faults.set(delays)
    engine = cluster.engines[0]
    try:
        if operation == "commit":
            job = vm.start("CommitPreview")
        else:
            rpc = "PreviewSnapshot" if operation == "preview" else "RestoreSnapshot"
            job = vm.start(rpc, config_snapshot_id=s1)
        time.sleep(1.5)
        engine.kill9()
        engine.restart()
        vm.api = cluster.api()
        job = vm.api.wait_job(job.id, timeout=120)
    finally:
        for faults in cluster.faults[:2]:
            faults.clear()
    in_preview = vm.vm().in_preview
    if job.state == SUCCEEDED:
        _expect_state(vm, 0x10)
        assert in_preview is (operation == "preview")
        if operation != "preview":
            for disk_id, head in before.items():
                assert not vm.path(vm.alias_of[disk_id], head).exists()
    else:
        # Only a preview (or a restore's preview phase) can be rolled back.
        assert operation != "commit", job
        assert job.state == FAILED, job
        assert vm.api.heads(vm.id) == before and not in_preview
        _expect_state(vm, 0x20)
    jobs = vm.api.jobs.ListJobs(jobs_pb2.ListJobsRequest(vm_id=vm.id), timeout=10).jobs
    assert {j.state for j in jobs} <= {SUCCEEDED, PARTIAL, FAILED}
    vm.api.assert_consistent()
    if in_preview:
        assert vm.run("UndoPreview").state == SUCCEEDED
        _expect_state(vm, 0x20)


def test_restore_failures(cluster: Cluster) -> None:
    """SPEC §3.5: a failed overlay fails the whole restore with nothing changed; a failed
    deletion after the commit only makes it SUCCEEDED_PARTIAL and leaves garbage."""
    vm = Vm(cluster, "vmrf", {"d1": 2, "d2": 0})
    s1 = _two_states(vm)
    before = (vm.api.heads(vm.id), vm.table(), vm.vm().config)
    error = {"disk_id": vm.disks["d1"], "action": "error", "code": "INTERNAL", "times": 1}
    cluster.faults[2].set([{**error, "op": "CreateVolume", "when": "after"}])
    try:
        job = vm.run("RestoreSnapshot", config_snapshot_id=s1)
        assert job.state == FAILED, job
        assert job.error.reason == "VOLUME_CREATION_ERROR"
        assert set(vm.outcomes(job).values()) == {common_pb2.DISK_OUTCOME_KIND_ROLLED_BACK}
        assert (vm.api.heads(vm.id), vm.table(), vm.vm().config) == before
        _expect_state(vm, 0x20)
        vm.api.assert_consistent()

        cluster.faults[2].set([{**error, "op": "DeleteVolume"}])
        job = vm.run("RestoreSnapshot", config_snapshot_id=s1)
    finally:
        cluster.faults[2].clear()
    assert job.state == PARTIAL, job
    old_d1 = before[0][vm.disks["d1"]]
    pending = next(o for o in job.outcomes if o.disk_id == vm.disks["d1"])
    assert (pending.outcome, list(pending.volume_ids)) == (CLEANUP_PENDING, [old_d1])
    assert vm.outcomes(job)["d2"] == COMMITTED
    assert not vm.vm().in_preview
    _expect_state(vm, 0x10)

    def reaped() -> None:
        assert _garbage(vm, "d1") == [] and not vm.path("d1", old_d1).exists()

    retry(reaped, timeout=30)
    vm.api.assert_consistent()


# ---------------------------------------------------------------- storage effects


def test_disks_only_preview_commit_keeps_the_previewed_data(cluster: Cluster) -> None:
    """D9: commit follows the stored plan. oVirt turned this commit into an undo."""
    vm = Vm(cluster, "vmd9", {"d1": 0, "d2": 2})
    s1 = _two_states(vm)
    vm.api.inventory.UpdateVm(
        inventory_pb2.UpdateVmRequest(
            vm_id=vm.id,
            config=inventory_pb2.VmConfig(cpu_count=4),
            update_mask=field_mask_pb2.FieldMask(paths=["cpu_count"]),
        ),
        timeout=10,
    )
    old_d1 = vm.head("d1")
    job = vm.run("PreviewSnapshot", disks=vm.select(d1=s1, d2=vm.active_id()))
    assert job.state == SUCCEEDED, job
    preview_id = next(
        k for k, v in vm.table().items() if v[0] == snapshots_pb2.SNAPSHOT_TYPE_PREVIEW
    )
    plan = vm.api.snapshots.GetSnapshot(
        snapshots_pb2.GetSnapshotRequest(vm_id=vm.id, snapshot_id=preview_id), timeout=10
    ).preview_plan
    assert plan.config_snapshot_id == ""
    assert {vm.alias_of[e.disk_id]: e.category for e in plan.entries} == {
        "d1": snapshots_pb2.PREVIEW_CATEGORY_PREVIEWED,
        "d2": snapshots_pb2.PREVIEW_CATEGORY_KEPT,
    }
    vm.expect("d1", {0: 0x10})
    vm.expect("d2", {0: 0x21})
    job = vm.run("CommitPreview")
    assert job.state == SUCCEEDED, job
    assert vm.outcomes(job) == {
        "d1": COMMITTED,
        "d2": KEPT,
    }
    vm.expect("d1", {0: 0x10})
    vm.expect("d2", {0: 0x21})
    assert not vm.path("d1", old_d1).exists()
    assert vm.vm().config.cpu_count == 4  # no configuration snapshot: the config stays
    assert not vm.vm().in_preview
    vm.api.assert_consistent()


def test_commit_deletes_detached_disks_when_asked(cluster: Cluster) -> None:
    """D11 opt-in: the excluded disk gets RemoveDisk semantics."""
    vm = Vm(cluster, "vmdel", {"d1": 0, "d2": 2})
    s1 = _two_states(vm)
    s2 = vm.snapshot("S2")
    d2 = vm.disks["d2"]
    assert len(_files(vm, "d2")) == 3
    job = vm.run(
        "PreviewSnapshot", config_snapshot_id=s1, disks=vm.select(d1=s1), exclude_disk_ids=[d2]
    )
    assert job.state == SUCCEEDED, job
    assert vm.outcomes(job)["d2"] == DETACHED
    job = vm.run("CommitPreview", delete_detached_disks=True)
    assert job.state == SUCCEEDED, job
    assert vm.outcomes(job) == {
        "d1": COMMITTED,
        "d2": DELETED,
    }
    with pytest.raises(grpc.RpcError) as caught:
        vm.api.inventory.GetDisk(inventory_pb2.GetDiskRequest(disk_id=d2), timeout=10)
    assert error_info(caught.value)[1] == "DISKS_NOT_EXIST"
    assert _files(vm, "d2") == set()
    table = vm.table()
    # Both snapshots stay, without the deleted disk.
    assert set(table[s1][2]) == set(table[s2][2]) == {"d1"}
    assert [d.id for d in vm.vm().disks] == [vm.disks["d1"]]
    vm.expect("d1", {0: 0x10})
    vm.api.assert_consistent()


def test_floating_disk_with_history_is_reattached_by_preview(cluster: Cluster) -> None:
    """A floating disk whose history VM is this VM can be selected: undo makes it floating
    again, commit keeps it attached."""
    vm = Vm(cluster, "vmre", {"d1": 0, "hist": 1})
    s1 = _two_states(vm)
    hist = vm.disks["hist"]
    job = vm.run(
        "PreviewSnapshot",
        disks=vm.select(d1=s1),
        exclude_disk_ids=[hist],
    )
    assert job.state == SUCCEEDED, job
    assert vm.outcomes(vm.run("CommitPreview")) == {
        "d1": COMMITTED,
        "hist": FLOATING,
    }

    def floating() -> bool:
        disks = vm.api.inventory.ListDisks(
            inventory_pb2.ListDisksRequest(floating_only=True, page_size=500), timeout=10
        ).disks
        return hist in {d.id for d in disks}

    disk = vm.api.inventory.GetDisk(inventory_pb2.GetDiskRequest(disk_id=hist), timeout=10).disk
    assert floating() and disk.history_vm_id == vm.id
    floating_head = vm.head("hist")
    vm.expect("hist", {0: 0x21})
    vm.api.assert_consistent()

    for end in ("UndoPreview", "CommitPreview"):
        job = vm.run("PreviewSnapshot", disks=vm.select(d1=vm.active_id(), hist=s1))
        assert job.state == SUCCEEDED, job
        (entry,) = (o for o in job.outcomes if o.disk_id == hist)
        assert entry.outcome == PREVIEWED
        assert dict(entry.metadata) == {"reattached": "true"}
        assert not floating() and hist in {d.id for d in vm.vm().disks}
        vm.expect("hist", {0: 0x11})
        vm.api.assert_consistent()
        job = vm.run(end)
        assert job.state == SUCCEEDED, job
        if end == "UndoPreview":
            assert vm.outcomes(job)["hist"] == RESTORED
            assert floating() and vm.head("hist") == floating_head
            vm.expect("hist", {0: 0x21})
        else:
            assert vm.outcomes(job)["hist"] == COMMITTED
            assert not floating() and not vm.path("hist", floating_head).exists()
            vm.expect("hist", {0: 0x11})
        vm.expect("d1", {0: 0x10})
        vm.api.assert_consistent()


def test_request_id_of_a_commit_returns_the_same_job(cluster: Cluster) -> None:
    vm = Vm(cluster, "vmrid", {"d1": 2})
    s1 = _two_states(vm)
    assert vm.run("PreviewSnapshot", config_snapshot_id=s1).state == SUCCEEDED
    env = common_pb2.RequestEnvelope(request_id=str(uuid.uuid4()))
    first = vm.start("CommitPreview", envelope=env)
    again = vm.start("CommitPreview", envelope=env)
    assert again.id == first.id
    assert vm.api.wait_job(first.id).state == SUCCEEDED
    # After the preview is gone the retry still returns the job instead of an error.
    assert vm.start("CommitPreview", envelope=env).id == first.id
