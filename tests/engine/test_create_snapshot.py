"""CreateSnapshot end to end: real engine, three real agents, real qemu-img (SPEC §3.1)."""

from __future__ import annotations

from pathlib import Path

from disksnap.engine.v1 import common_pb2, snapshots_pb2
from support import qemu
from support.engine import Cluster

MiB = 1024 * 1024
SIZE = 64 * MiB


def _vm_with_disks(cluster: Cluster, name: str, hosts: list[int]) -> tuple[str, list[str]]:
    api = cluster.api()
    vm_id = api.create_vm(name)
    disks = [
        api.add_disk(vm_id, f"{name}-d{i}", cluster.domain_ids[h], SIZE)
        for i, h in enumerate(hosts)
    ]
    return vm_id, disks


def _path(cluster: Cluster, host: int, disk_id: str, volume_id: str) -> Path:
    return cluster.volume_path(host, cluster.domain_ids[host], disk_id, volume_id)


def _outcomes(job: common_pb2.Job) -> dict[str, int]:
    return {o.disk_id: o.outcome for o in job.outcomes}


def test_snapshot_all_one_none_with_data(cluster: Cluster) -> None:
    api = cluster.api()
    hosts = [0, 0, 1]
    vm_id, disks = _vm_with_disks(cluster, "vm1", hosts)
    base = api.heads(vm_id)
    for i, d in enumerate(disks):
        qemu.write_pattern(_path(cluster, hosts[i], d, base[d]), "qcow2", 0x10 + i, 0, MiB)

    job = api.snapshot(vm_id, "S1")
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert set(_outcomes(job).values()) == {common_pb2.DISK_OUTCOME_KIND_SNAPSHOTTED}
    s1 = job.result.snapshot_id
    after_s1 = api.heads(vm_id)
    for i, d in enumerate(disks):
        path = _path(cluster, hosts[i], d, after_s1[d])
        chain = qemu.backing_chain(path)
        assert [c["filename"].rsplit("/", 1)[-1] for c in chain] == [after_s1[d], base[d]]
        qemu.assert_pattern(path, "qcow2", 0x10 + i, 0, MiB)
        qemu.write_pattern(path, "qcow2", 0x20 + i, MiB, MiB)

    job = api.snapshot(vm_id, "S2 one disk", [disks[0]])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert _outcomes(job)[disks[0]] == common_pb2.DISK_OUTCOME_KIND_SNAPSHOTTED
    assert _outcomes(job)[disks[1]] == common_pb2.DISK_OUTCOME_KIND_NOT_SELECTED
    after_s2 = api.heads(vm_id)
    assert after_s2[disks[1]] == after_s1[disks[1]]
    assert after_s2[disks[2]] == after_s1[disks[2]]
    assert after_s2[disks[0]] != after_s1[disks[0]]

    job = api.snapshot(vm_id, "S3 config only", [])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert api.heads(vm_id) == after_s2

    snaps = api.snapshots.ListSnapshots(
        snapshots_pb2.ListSnapshotsRequest(vm_id=vm_id), timeout=10
    ).snapshots
    assert [s.type for s in snaps] == [
        snapshots_pb2.SNAPSHOT_TYPE_ACTIVE,
        snapshots_pb2.SNAPSHOT_TYPE_REGULAR,
        snapshots_pb2.SNAPSHOT_TYPE_REGULAR,
        snapshots_pb2.SNAPSHOT_TYPE_REGULAR,
    ]
    active, snap1, snap2, snap3 = snaps
    assert {d.disk_id: d.volume_id for d in active.disks} == after_s2
    assert snap1.id == s1
    assert {d.disk_id: d.volume_id for d in snap1.disks} == base
    assert {d.disk_id: d.volume_id for d in snap2.disks} == {disks[0]: after_s1[disks[0]]}
    assert list(snap3.disks) == []
    for i, d in enumerate(disks):
        head = _path(cluster, hosts[i], d, after_s2[d])
        qemu.assert_pattern(head, "qcow2", 0x10 + i, 0, MiB)
        qemu.assert_pattern(head, "qcow2", 0x20 + i, MiB, MiB)
        qemu.check_image(head)
    # The snapshot's own volume still reads as it did when it was taken.
    qemu.assert_pattern(_path(cluster, 0, disks[0], base[disks[0]]), "qcow2", 0x10, 0, MiB)
    qemu.assert_pattern(_path(cluster, 0, disks[0], base[disks[0]]), "qcow2", 0, MiB, MiB)
    got = api.snapshots.GetSnapshot(
        snapshots_pb2.GetSnapshotRequest(vm_id=vm_id, snapshot_id=s1), timeout=10
    )
    assert [d.disk_id for d in got.config.disks] == sorted(disks)
    assert got.config.vm.name == "vm1"
    api.assert_consistent()


def test_request_id_returns_the_same_job(cluster: Cluster) -> None:
    api = cluster.api()
    vm_id, _disks = _vm_with_disks(cluster, "vm2", [0])
    env = common_pb2.RequestEnvelope(request_id="6f1c0b7e-8f7e-4c55-9a55-3f0f6f3c2a11")
    req = snapshots_pb2.CreateSnapshotRequest(vm_id=vm_id, description="once", envelope=env)
    first = api.snapshots.CreateSnapshot(req, timeout=10).job
    second = api.snapshots.CreateSnapshot(req, timeout=10).job
    assert first.id == second.id
    api.wait_job(first.id)
    listed = api.snapshots.ListSnapshots(
        snapshots_pb2.ListSnapshotsRequest(vm_id=vm_id), timeout=10
    ).snapshots
    assert [s.description for s in listed] == ["Active VM", "once"]
