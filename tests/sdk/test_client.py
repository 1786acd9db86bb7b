"""The client's operations against the real engine: typed results, jobs, waiting."""

from __future__ import annotations

from datetime import datetime

import pytest

import disksnap
from disksnap import JobState, SnapshotType, errors
from disksnap.embedded import HOST_NAME, EmbeddedServer
from sdk.conftest import MIB, make_vm
from sdk.embedded_fixture import unique


def test_hosts_and_domains(client: disksnap.Client, server: EmbeddedServer) -> None:
    hosts = {h.name: h for h in client.list_hosts()}
    local = hosts[HOST_NAME]
    assert local.id == server.host_id
    assert local.status is disksnap.HostStatus.UP
    assert server.domain_id in local.domain_ids
    domains = {d.id: d for d in client.list_storage_domains()}
    domain = domains[server.domain_id]
    assert domain.name == "local"
    assert domain.status is disksnap.DomainStatus.ACTIVE
    assert domain.total_bytes >= domain.free_bytes > 0
    assert local.id in domain.host_ids


def test_vm_and_disks_round_trip(client: disksnap.Client, server: EmbeddedServer) -> None:
    name = unique("rt")
    job = client.create_vm(
        name,
        description="round trip",
        cpu_count=3,
        memory_mb=1536,
        custom_properties={"owner": "qa"},
        nics=[disksnap.Nic("eth0", "52:54:00:00:00:01", "default")],
    )
    assert job.kind is disksnap.JobKind.CREATE_VM
    assert job.state is JobState.SUCCEEDED and job.done and job.succeeded
    assert isinstance(job.created_at, datetime) and job.created_at.tzinfo is not None
    vm_id = job.result.vm_id
    assert vm_id
    added = client.add_disk(
        "raw0", 8 * MIB, domain_id=server.domain_id, vm_id=vm_id, format=disksnap.DiskFormat.RAW,
        bootable=True, interface=disksnap.DiskInterface.SATA,
    )  # fmt: skip
    assert added.kind is disksnap.JobKind.ADD_DISK and added.result.disk_id
    vm = client.get_vm(vm_id)
    assert vm.name == name and vm.config.description == "round trip"
    assert vm.config.cpu_count == 3 and vm.config.memory_mb == 1536
    assert dict(vm.config.custom_properties) == {"owner": "qa"}
    assert vm.config.nics == (disksnap.Nic("eth0", "52:54:00:00:00:01", "default"),)
    assert vm.run_state is disksnap.RunState.DOWN and vm.host_id is None
    assert not vm.in_preview and not vm.locked
    (disk,) = vm.disks
    assert disk.id == added.result.disk_id and disk.alias == "raw0"
    assert disk.base_format is disksnap.DiskFormat.RAW and disk.virtual_size == 8 * MIB
    assert disk.status is disksnap.DiskStatus.OK and not disk.floating
    (att,) = disk.attachments
    assert att.vm_id == vm_id and att.bootable and att.interface is disksnap.DiskInterface.SATA
    assert client.get_disk(disk.id) == disk
    assert client.list_disks(vm_id=vm_id) == [disk]
    assert [v.id for v in client.list_vms(name=name)] == [vm_id]
    assert vm_id in {v.id for v in client.list_vms()}


def test_snapshot_listing_and_detail(client: disksnap.Client, vm: disksnap.Vm) -> None:
    full = client.create_snapshot(vm.id, "full")
    assert full.state is JobState.SUCCEEDED
    assert {o.outcome for o in full.outcomes} == {disksnap.DiskOutcomeKind.SNAPSHOTTED}
    d0 = vm.disks[0]
    one = client.create_snapshot(vm.id, "one disk", disk_ids=[d0.id])
    outcomes = {o.disk_id: o.outcome for o in one.outcomes}
    assert outcomes[d0.id] is disksnap.DiskOutcomeKind.SNAPSHOTTED
    assert outcomes[vm.disks[1].id] is disksnap.DiskOutcomeKind.NOT_SELECTED
    config_only = client.create_snapshot(vm.id, "config only", disk_ids=[])
    assert config_only.state is JobState.SUCCEEDED

    snaps = client.list_snapshots(vm.id)
    assert [s.type for s in snaps] == [SnapshotType.ACTIVE] + [SnapshotType.REGULAR] * 3
    assert snaps[0].id == vm.active_snapshot_id and not snaps[0].config_available
    assert [s.description for s in snaps[1:]] == ["full", "one disk", "config only"]
    assert [len(s.disks) for s in snaps[1:]] == [2, 1, 0]
    assert snaps[1].id == full.result.snapshot_id

    detail = client.get_snapshot(vm.id, one.result.snapshot_id or "")
    assert detail.snapshot == snaps[2]
    assert detail.config is not None and detail.memory is None and detail.preview_plan is None
    assert detail.config.vm.name == vm.name
    assert [cd.disk_id for cd in detail.config.disks] == [d0.id]
    active = client.get_snapshot(vm.id, vm.active_snapshot_id)
    assert active.config is not None and len(active.config.disks) == 2


def test_volume_tree(client: disksnap.Client, vm: disksnap.Vm) -> None:
    d0 = vm.disks[0]
    client.create_snapshot(vm.id, "t1")
    client.create_snapshot(vm.id, "t2", disk_ids=[d0.id])
    tree = client.get_disk_volume_tree(d0.id)
    assert tree.disk.id == d0.id and len(tree.volumes) == 3
    root, middle, head = tree.volumes
    assert tree.root_id == root.id and root.parent_id is None
    assert middle.parent_id == root.id and head.parent_id == middle.id
    assert tree.head_id == head.id and head.active and not root.active
    assert head.owner is not None and head.owner.type is SnapshotType.ACTIVE
    assert root.owner is not None and root.owner.description == "t1"
    assert tree.children(None) == (root,) and tree.children(root.id) == (middle,)
    assert client.get_vm(vm.id).disks[0].head_volume_id == head.id


def test_wait_with_progress_is_monotonic(client: disksnap.Client, server: EmbeddedServer) -> None:
    many = make_vm(client, server, disks=5, prefix="progress")
    handle = client.create_snapshot(many.id, "five disks", wait=False)
    assert isinstance(handle, disksnap.JobHandle) and handle.id
    seen: list[disksnap.Job] = []
    final = handle.wait(progress=seen.append, timeout=120)
    progress = [j.progress for j in seen]
    assert progress == sorted(progress), progress
    assert seen[-1] == final and final.progress == 100
    assert final.state is JobState.SUCCEEDED and handle.done and handle.job == final
    assert len(final.outcomes) == 5
    assert all(j.id == handle.id for j in seen)


def test_wait_true_accepts_a_progress_callback(client: disksnap.Client, vm: disksnap.Vm) -> None:
    seen: list[int] = []
    job = client.create_snapshot(vm.id, "cb", progress=lambda j: seen.append(j.progress))
    assert job.state is JobState.SUCCEEDED
    assert seen and seen == sorted(seen) and seen[-1] == 100


def test_jobs_get_list_watch(client: disksnap.Client, vm: disksnap.Vm) -> None:
    job = client.create_snapshot(vm.id, "listed")
    assert client.get_job(job.id) == job
    mine = client.list_jobs(vm_id=vm.id)
    assert mine[0].id == job.id  # newest first
    kinds = {j.kind for j in client.list_jobs(vm_id=vm.id, kind=disksnap.JobKind.ADD_DISK)}
    assert kinds == {disksnap.JobKind.ADD_DISK}
    assert len(client.list_jobs(limit=2)) == 2
    ok = client.list_jobs(vm_id=vm.id, state=JobState.SUCCEEDED)
    assert job.id in {j.id for j in ok}
    watched = list(client.watch_job(job.id))
    assert watched[-1].state is JobState.SUCCEEDED
    handle = client.job_handle(job.id)
    assert handle.done and handle.refresh() == job and handle.wait() == job


def test_correlation_id_per_client_and_per_call(
    client: disksnap.Client, server: EmbeddedServer
) -> None:
    tag = unique("run")
    with disksnap.Client(server.address, correlation_id=tag) as tagged:
        assert tagged.correlation_id == tag and client.correlation_id is None
        created = tagged.create_vm(unique("corr"))
        handle = tagged.add_disk(
            "d0", MIB, domain_id=server.domain_id, vm_id=created.result.vm_id, wait=False
        )
        added = handle.wait()
        own = tagged.set_vm_run_state(
            created.result.vm_id or "", disksnap.RunState.DOWN, correlation_id="own-tag"
        )
    assert created.correlation_id == tag and client.get_job(added.id).correlation_id == tag
    assert own.correlation_id == "own-tag"
    assert {j.id for j in client.list_jobs(correlation_id=tag)} == {created.id, added.id}
    untagged = client.create_vm(unique("corr"))
    assert client.get_job(untagged.id).correlation_id is None


def test_check_consistency(client: disksnap.Client, vm: disksnap.Vm) -> None:
    client.create_snapshot(vm.id, "checked")
    assert client.check_consistency(vm_id=vm.id, verify_images=True) == []
    assert client.check_consistency() == []
    with pytest.raises(ValueError):
        client.check_consistency(vm_id=vm.id, domain_id=vm.id)


def test_create_storage_domain(client: disksnap.Client, server: EmbeddedServer) -> None:
    name = unique("sd")
    job = client.create_storage_domain(name, server.host_id)
    assert job.kind is disksnap.JobKind.CREATE_STORAGE_DOMAIN
    assert job.state is JobState.SUCCEEDED and job.result.domain_id
    assert job.result.domain_id in {d.id for d in client.list_storage_domains()}


def test_disk_selection_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError):
        disksnap.DiskSelection("d")
    with pytest.raises(ValueError):
        disksnap.DiskSelection("d", snapshot_id="s", volume_id="v")
    assert disksnap.DiskSelection("d", volume_id="v").volume_id == "v"


def test_update_vm(client: disksnap.Client, server: EmbeddedServer, vm: disksnap.Vm) -> None:
    d0 = vm.disks[0]
    job = client.update_vm(
        vm.id,
        description="updated",
        cpu_count=4,
        custom_properties={"k": "v"},
        home_domain_id=server.domain_id,
        disks=[disksnap.DiskUpdate(d0.id, alias="root", bootable=True)],
    )
    assert job.kind is disksnap.JobKind.UPDATE_VM and job.state is JobState.SUCCEEDED
    after = client.get_vm(vm.id)
    assert after.name == vm.name and after.config.memory_mb == vm.config.memory_mb
    assert after.config.description == "updated" and after.config.cpu_count == 4
    assert dict(after.config.custom_properties) == {"k": "v"}
    assert after.config.home_domain_id == server.domain_id
    root = next(d for d in after.disks if d.id == d0.id)
    assert root.alias == "root" and root.attachments[0].bootable
    client.update_vm(vm.id, home_domain_id="", custom_properties={})
    cleared = client.get_vm(vm.id).config
    assert cleared.home_domain_id is None and dict(cleared.custom_properties) == {}


def test_run_state(client: disksnap.Client, server: EmbeddedServer, vm: disksnap.Vm) -> None:
    up = client.set_vm_run_state(vm.id, disksnap.RunState.UP, host_id=server.host_id)
    assert up.kind is disksnap.JobKind.SET_VM_RUN_STATE and up.state is JobState.SUCCEEDED
    running = client.get_vm(vm.id)
    assert running.run_state is disksnap.RunState.UP and running.host_id == server.host_id
    with pytest.raises(errors.VmIsNotDown) as caught:
        client.add_disk("late", MIB, domain_id=server.domain_id, vm_id=vm.id)
    assert caught.value.reason == "VM_IS_NOT_DOWN"
    client.set_vm_run_state(vm.id, disksnap.RunState.DOWN)
    assert client.get_vm(vm.id).run_state is disksnap.RunState.DOWN


def test_detach_attach_remove_disk(client: disksnap.Client, vm: disksnap.Vm) -> None:
    d1 = vm.disks[1]
    client.detach_disk(d1.id, vm.id)
    assert client.get_disk(d1.id).floating
    assert d1.id in {d.id for d in client.list_disks(floating_only=True)}
    client.attach_disk(d1.id, vm.id)
    assert not client.get_disk(d1.id).floating
    with pytest.raises(errors.PreconditionFailed) as caught:
        client.attach_disk(d1.id, vm.id)
    assert caught.value.reason == "DISK_ALREADY_ATTACHED"
    removed = client.remove_disk(d1.id)
    assert removed.kind is disksnap.JobKind.REMOVE_DISK and removed.succeeded
    with pytest.raises(errors.DisksNotExist):
        client.get_disk(d1.id)


def test_detach_disk_with_snapshot_is_refused(client: disksnap.Client, vm: disksnap.Vm) -> None:
    client.create_snapshot(vm.id, "keeps history")
    with pytest.raises(errors.PreconditionFailed) as caught:
        client.detach_disk(vm.disks[0].id, vm.id)
    assert caught.value.reason == "CANNOT_DETACH_DISK_WITH_SNAPSHOT"


def test_remove_vm(client: disksnap.Client, vm: disksnap.Vm) -> None:
    client.create_snapshot(vm.id, "gone soon")
    job = client.remove_vm(vm.id)
    assert job.kind is disksnap.JobKind.REMOVE_VM and job.succeeded
    with pytest.raises(errors.VmNotExist):
        client.get_vm(vm.id)
    for disk in vm.disks:
        with pytest.raises(errors.DisksNotExist):
            client.get_disk(disk.id)


def test_preview_undo_commit_and_restore(
    client: disksnap.Client, server: EmbeddedServer, vm: disksnap.Vm
) -> None:
    d0, d1 = vm.disks
    Outcome = disksnap.DiskOutcomeKind
    s1 = client.create_snapshot(vm.id, "S1").result.snapshot_id or ""
    old_heads = {d.id: d.head_volume_id for d in client.get_vm(vm.id).disks}

    job = client.preview_snapshot(
        vm.id,
        config_snapshot_id=s1,
        disks=[disksnap.DiskSelection(d0.id, snapshot_id=s1)],
        exclude_disk_ids=[d1.id],
    )
    assert job.kind is disksnap.JobKind.PREVIEW_SNAPSHOT and job.state is JobState.SUCCEEDED
    outcomes = {o.disk_id: o for o in job.outcomes}
    assert outcomes[d0.id].outcome is Outcome.PREVIEWED
    assert outcomes[d0.id].metadata == {"reattached": "false"}
    assert outcomes[d1.id].outcome is Outcome.DETACHED
    previewing = client.get_vm(vm.id)
    assert previewing.in_preview
    preview = client.list_snapshots(vm.id)[-1]
    assert preview.type is SnapshotType.PREVIEW
    plan = client.get_snapshot(vm.id, preview.id).preview_plan
    assert plan is not None and plan.config_snapshot_id == s1 and not plan.restore_memory
    categories = {e.disk_id: e.category for e in plan.entries}
    assert categories == {
        d0.id: disksnap.PreviewCategory.PREVIEWED,
        d1.id: disksnap.PreviewCategory.DETACHED,
    }
    (d0_entry,) = (e for e in plan.entries if e.disk_id == d0.id)
    assert d0_entry.pre_preview_head_id == old_heads[d0.id]

    undone = client.undo_preview(vm.id)
    assert undone.kind is disksnap.JobKind.UNDO_PREVIEW and undone.succeeded
    assert {o.disk_id: o.outcome for o in undone.outcomes} == {
        d0.id: Outcome.RESTORED,
        d1.id: Outcome.REATTACHED,
    }
    after_undo = client.get_vm(vm.id)
    assert not after_undo.in_preview
    assert {d.id: d.head_volume_id for d in after_undo.disks} == old_heads

    client.preview_snapshot(
        vm.id,
        disks=[disksnap.DiskSelection(d0.id, snapshot_id=s1)],
        exclude_disk_ids=[d1.id],
    )
    committed = client.commit_preview(vm.id)
    assert committed.kind is disksnap.JobKind.COMMIT_PREVIEW and committed.succeeded
    assert {o.disk_id: o.outcome for o in committed.outcomes} == {
        d0.id: Outcome.COMMITTED,
        d1.id: Outcome.FLOATING,
    }
    assert client.get_disk(d1.id).floating
    assert not server.volume_path(d0.id, old_heads[d0.id] or "").exists()

    # A regular restore previews every disk of S1, re-attaching the floating d1 (its history
    # VM is this one), and commits.
    restored = client.restore_snapshot(vm.id, config_snapshot_id=s1)
    assert restored.kind is disksnap.JobKind.RESTORE_SNAPSHOT and restored.succeeded
    assert {o.disk_id: o.outcome for o in restored.outcomes} == {
        d0.id: Outcome.COMMITTED,
        d1.id: Outcome.COMMITTED,
    }
    assert not client.get_disk(d1.id).floating and not client.get_vm(vm.id).in_preview
    assert client.check_consistency(vm_id=vm.id, verify_images=True) == []
