"""RemoveSnapshot end to end: real engine, three real agents, real qemu-img (SPEC §3.6).

Every layer of every disk gets distinct data. ``Tracker`` keeps what each live volume must
read (its own writes over its parent's content, frozen once it stops being a head); after
every removal every remaining volume of every disk is read back in full with qemu-io and
compared byte for byte with what it held before.

The helpers here are shared by the other ``test_remove_*`` modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from disksnap.engine.v1 import common_pb2, inventory_pb2, snapshots_pb2
from engine_svc.db.models import JobStep
from engine_svc.db.session import make_engine
from support import qemu
from support.content import DiskContent, Write
from support.engine import Cluster, EngineApi

MiB = 1024 * 1024
SIZE = 32 * MiB
COW = inventory_pb2.DISK_FORMAT_COW
RAW = inventory_pb2.DISK_FORMAT_RAW
MERGED = common_pb2.DISK_OUTCOME_KIND_MERGED
NOT_MERGED = common_pb2.DISK_OUTCOME_KIND_NOT_MERGED
FAILED_ILLEGAL = common_pb2.DISK_OUTCOME_KIND_FAILED_ILLEGAL
NOT_ATTEMPTED = common_pb2.DISK_OUTCOME_KIND_NOT_ATTEMPTED


class Tracker:
    """A VM's disks and what every live volume of them must read."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.api: EngineApi = cluster.api()
        self.vm_id = self.api.create_vm(name)
        self.name = name
        self.host_of: dict[str, int] = {}
        self.expected: dict[str, DiskContent] = {}
        self.disks: list[str] = []

    def refresh(self) -> None:
        """Use the current engine (after a restart)."""
        self.api = self.cluster.api()

    def add_disk(self, host: int, *, fmt: Any = COW, size: int = SIZE) -> str:
        disk_id = self.api.add_disk(
            self.vm_id,
            f"{self.name}-d{len(self.disks)}",
            self.cluster.domain_ids[host],
            size,
            fmt=fmt,
        )
        self.host_of[disk_id] = host
        self.disks.append(disk_id)
        self.expected[self.api.heads(self.vm_id)[disk_id]] = DiskContent(size)
        return disk_id

    def path(self, disk_id: str, volume_id: str) -> Path:
        host = self.host_of[disk_id]
        return self.cluster.volume_path(host, self.cluster.domain_ids[host], disk_id, volume_id)

    def write(self, disk_id: str, *writes: Write) -> None:
        """The guest writes to the disk's head."""
        head = self.api.heads(self.vm_id)[disk_id]
        path = self.path(disk_id, head)
        fmt = str(qemu.info(path)["format"])
        qemu.write_patterns(path, fmt, [w.segment() for w in writes])
        self.expected[head] = self.expected[head].overlay(writes)

    def snapshot(self, description: str, disk_ids: Sequence[str] | None = None) -> str:
        before = self.api.heads(self.vm_id)
        job = self.api.snapshot(self.vm_id, description, disk_ids)
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
        after = self.api.heads(self.vm_id)
        for disk_id, head in after.items():
            if head != before[disk_id]:
                self.expected[head] = self.expected[before[disk_id]]
        return job.result.snapshot_id

    def tree(self, disk_id: str) -> list[snapshots_pb2.VolumeNode]:
        """The disk's live volumes, oldest first."""
        resp = self.api.snapshots.GetDiskVolumeTree(
            snapshots_pb2.GetDiskVolumeTreeRequest(disk_id=disk_id), timeout=10
        )
        return [v for v in resp.volumes if not v.pending_delete]

    def owned(self, snapshot_id: str) -> dict[str, str]:
        """Disk id → the volume the snapshot owns on it."""
        return {
            d: v.id
            for d in self.disks
            for v in self.tree(d)
            if v.HasField("owner") and v.owner.snapshot_id == snapshot_id
        }

    def verify(self, disk_ids: Iterable[str] | None = None, *, skip: Iterable[str] = ()) -> None:
        """Every live volume reads exactly what it held; no other volume exists.

        ``skip``: volumes whose own content is known to be damaged (ILLEGAL bases).
        """
        skipped = set(skip)
        for disk_id in disk_ids or self.disks:
            live = self.tree(disk_id)
            mine = {v for v in self.expected if v in {n.id for n in live}}
            assert mine == {n.id for n in live}, f"unexpected volumes on {disk_id}"
            for node in live:
                if node.id in skipped:
                    continue
                path = self.path(disk_id, node.id)
                fmt = "raw" if node.format == RAW else "qcow2"
                qemu.assert_segments(path, fmt, self.expected[node.id].segments())
                qemu.check_image(path, fmt)

    def forget(self, volume_ids: Iterable[str]) -> None:
        """Volumes merged away: nothing must read them any more."""
        for volume_id in volume_ids:
            self.expected.pop(volume_id)
        for disk_id in self.disks:
            ids = {n.id for n in self.tree(disk_id)}
            assert not ids & set(volume_ids), f"merged volumes still listed on {disk_id}"

    def snapshots(self) -> list[snapshots_pb2.Snapshot]:
        return list(
            self.api.snapshots.ListSnapshots(
                snapshots_pb2.ListSnapshotsRequest(vm_id=self.vm_id), timeout=10
            ).snapshots
        )

    def remove(self, snapshot_id: str, *, wait: bool = True, **env: Any) -> common_pb2.Job:
        req = snapshots_pb2.RemoveSnapshotRequest(vm_id=self.vm_id, snapshot_id=snapshot_id)
        if env:
            req.envelope.CopyFrom(common_pb2.RequestEnvelope(**env))
        job = self.api.snapshots.RemoveSnapshot(req, timeout=30).job
        return self.api.wait_job(job.id, timeout=240) if wait else job

    def remove_disk_snapshots(
        self, volume_ids: Sequence[str], *, wait: bool = True
    ) -> common_pb2.Job:
        req = snapshots_pb2.RemoveDiskSnapshotsRequest(volume_ids=list(volume_ids))
        job = self.api.snapshots.RemoveDiskSnapshots(req, timeout=30).job
        return self.api.wait_job(job.id, timeout=240) if wait else job


def outcomes(job: common_pb2.Job) -> dict[str, int]:
    """Disk id → outcome kind."""
    return {o.disk_id: o.outcome for o in job.outcomes}


def step_results(cluster: Cluster, job_id: str) -> list[tuple[str, list[str], dict[str, Any]]]:
    """(kind, volume_ids, result) of a job's steps, read from the engine's database."""
    engine = make_engine(cluster.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(JobStep.kind, JobStep.volume_ids, JobStep.result)
                .where(JobStep.job_id == job_id)
                .order_by(JobStep.seq)
            ).all()
    finally:
        engine.dispose()
    return [(kind, list(ids), dict(result or {})) for kind, ids, result in rows]


def directions(cluster: Cluster, job_id: str) -> list[str]:
    """The merge direction each MERGE_VOLUMES step took."""
    return [
        r.get("direction", "")
        for k, _ids, r in step_results(cluster, job_id)
        if k == "MERGE_VOLUMES"
    ]


def preview_available(api: EngineApi, vm_id: str) -> bool:
    """Whether this engine implements PreviewSnapshot yet (the lead is adding it)."""
    try:
        api.snapshots.PreviewSnapshot(
            snapshots_pb2.PreviewSnapshotRequest(vm_id="00000000-0000-0000-0000-00000000000x"),
            timeout=5,
        )
    except grpc.RpcError as err:
        return err.code() is not grpc.StatusCode.UNIMPLEMENTED
    return True


def _layered_vm(cluster: Cluster, name: str) -> tuple[Tracker, list[str], list[str]]:
    """Three disks (one RAW base) with S1..S4; layers of very different sizes.

    Per disk the layers hold (MiB at offset): base 8@0, S1→ 1@8, S2→ 12@4, S3→ 2@20, head 1@30,
    so removals take both merge directions.
    """
    t = Tracker(cluster, name)
    d0 = t.add_disk(0)
    d1 = t.add_disk(1, fmt=RAW)
    d2 = t.add_disk(2)
    disks = [d0, d1, d2]
    layers = [
        [Write(0, 8, 0x10)],
        [Write(8, 1, 0x20)],
        [Write(4, 12, 0x30)],
        [Write(20, 2, 0x40)],
        [Write(30, 1, 0x50)],
    ]
    snaps = []
    for i, writes in enumerate(layers):
        for k, d in enumerate(disks):
            t.write(d, *(Write(w.start, w.units, w.byte + k) for w in writes))
        if i < 4:
            snaps.append(t.snapshot(f"S{i + 1}"))
    t.verify()
    return t, disks, snaps


def test_remove_middle_oldest_newest(cluster: Cluster) -> None:
    t, disks, (s1, s2, s3, s4) = _layered_vm(cluster, "vmrm")
    api = t.api

    # Middle: S2's volume (1 MiB) under S3's (12 MiB): the smaller side is the base, so
    # the agent pulls the base's data up into the child.
    middle = t.owned(s2)
    job = t.remove(s2)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert set(outcomes(job).values()) == {MERGED}
    assert set(directions(cluster, job.id)) == {"PULL"}
    t.forget(middle.values())
    t.verify()
    assert [s.id for s in t.snapshots()][1:] == [s1, s3, s4]
    api.assert_consistent()

    # Oldest: the bases (8 MiB; one RAW) under S3's volumes (now holding 12+1 MiB) → PULL;
    # the survivors become roots, COW.
    oldest = t.owned(s1)
    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget(oldest.values())
    t.verify()
    for d in disks:
        root = t.tree(d)[0]
        assert root.parent_id == "" and root.format == COW
    api.assert_consistent()

    # Newest: S4's volumes (2 MiB) under the heads (1 MiB) → COMMIT; the heads keep their ids.
    heads = api.heads(t.vm_id)
    newest = t.owned(s4)
    job = t.remove(s4)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert set(directions(cluster, job.id)) == {"COMMIT"}
    assert api.heads(t.vm_id) == heads
    t.forget(newest.values())
    t.verify()
    assert [s.id for s in t.snapshots()][1:] == [s3]
    for d in disks:
        assert [n.id for n in t.tree(d)] == [t.owned(s3)[d], heads[d]]
    api.assert_consistent()


def test_commit_into_raw_base_keeps_raw_root(cluster: Cluster) -> None:
    t = Tracker(cluster, "vmraw")
    d = t.add_disk(1, fmt=RAW)
    t.write(d, Write(0, 16, 0x61))
    s1 = t.snapshot("S1")
    t.write(d, Write(3, 1, 0x62))
    base = t.owned(s1)[d]
    head = t.api.heads(t.vm_id)[d]
    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert directions(cluster, job.id) == ["COMMIT"]
    t.forget([base])
    t.verify()
    [root] = t.tree(d)
    assert (root.id, root.format, root.parent_id, root.active) == (head, RAW, "", True)
    t.api.assert_consistent()


def test_configuration_only_snapshot_is_removed_at_once(cluster: Cluster) -> None:
    t = Tracker(cluster, "vmcfg")
    t.add_disk(0)
    s1 = t.snapshot("config only", [])
    job = t.remove(s1, wait=False)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert job.result.snapshot_id == s1
    assert [s.id for s in t.snapshots()][1:] == []
    t.api.assert_consistent()


def test_request_id_returns_the_same_job(cluster: Cluster) -> None:
    t = Tracker(cluster, "vmrid")
    d = t.add_disk(0)
    t.write(d, Write(0, 2, 0x71))
    s1 = t.snapshot("S1")
    rid = "8a0b4c3e-1f2d-4e5a-9b6c-7d8e9f0a1b2c"
    first = t.remove(s1, wait=False, request_id=rid)
    second = t.remove(s1, wait=False, request_id=rid)
    assert first.id == second.id
    assert t.api.wait_job(first.id).state == common_pb2.JOB_STATE_SUCCEEDED
    third = t.remove(s1, wait=False, request_id=rid)
    assert third.id == first.id and third.state == common_pb2.JOB_STATE_SUCCEEDED
    t.api.assert_consistent()


def test_remove_snapshot_of_running_vm(cluster: Cluster) -> None:
    t = Tracker(cluster, "vmup")
    d = t.add_disk(2)
    t.write(d, Write(0, 4, 0x41))
    s1 = t.snapshot("S1")
    t.write(d, Write(2, 4, 0x42))
    t.api.inventory.SetVmRunState(
        inventory_pb2.SetVmRunStateRequest(
            vm_id=t.vm_id, run_state=inventory_pb2.RUN_STATE_UP, host_id=cluster.host_ids[2]
        ),
        timeout=10,
    )
    base = t.owned(s1)[d]
    job = t.remove(s1)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget([base])
    t.verify()
    t.api.assert_consistent()


def test_two_children_after_commit(cluster: Cluster) -> None:
    """SPEC §9 variant: after a commit that kept S3, S2's volume has two children.

    d0 also keeps the commit's garbage (its old head, whose deletion is made to fail) under
    S3's volume; d1's S3 volume is removed first on its own, as a childless leaf.
    """
    t = Tracker(cluster, "vmtwo")
    if not preview_available(t.api, t.vm_id):
        # TODO(preview/commit): needs PreviewSnapshot + CommitPreview (D10 keeps newer
        # snapshots as branches); the engine offers no other way to give a volume two
        # children. Runs as soon as the lead's preview/commit lands.
        pytest.skip("TODO: PreviewSnapshot/CommitPreview not implemented yet (two-children case)")
    d0, d1 = t.add_disk(0), t.add_disk(1)
    for k, d in enumerate((d0, d1)):
        t.write(d, Write(0, 4, 0x11 + k))
    s1 = t.snapshot("S1")
    for k, d in enumerate((d0, d1)):
        t.write(d, Write(2, 4, 0x21 + k))
    s2 = t.snapshot("S2")
    for k, d in enumerate((d0, d1)):
        t.write(d, Write(4, 6, 0x31 + k))
    s3 = t.snapshot("S3")
    for k, d in enumerate((d0, d1)):
        t.write(d, Write(7, 2, 0x41 + k))
    a0, a1, a2 = t.owned(s1)[d0], t.owned(s2)[d0], t.owned(s3)[d0]
    b1, b2 = t.owned(s2)[d1], t.owned(s3)[d1]
    old_heads = t.api.heads(t.vm_id)
    garbage = old_heads[d0]
    stuck = {
        "op": "DeleteVolume",
        "disk_id": d0,
        "volume_id": garbage,
        "action": "error",
        "code": "INTERNAL",
    }
    cluster.faults[0].set([stuck])
    preview = t.api.snapshots.PreviewSnapshot(
        snapshots_pb2.PreviewSnapshotRequest(vm_id=t.vm_id, config_snapshot_id=s2), timeout=10
    ).job
    assert t.api.wait_job(preview.id).state == common_pb2.JOB_STATE_SUCCEEDED
    commit = t.api.snapshots.CommitPreview(
        snapshots_pb2.CommitPreviewRequest(vm_id=t.vm_id), timeout=10
    ).job
    assert t.api.wait_job(commit.id).state == common_pb2.JOB_STATE_SUCCEEDED_PARTIAL
    p = t.api.heads(t.vm_id)
    for d, chosen in ((d0, a1), (d1, b1)):
        t.expected.pop(old_heads[d])
        t.expected[p[d]] = t.expected[chosen]
        t.write(d, Write(9, 3, 0x55))
    assert {n.id: n.parent_id for n in t.tree(d0)} == {a0: "", a1: a0, a2: a1, p[d0]: a1}
    t.verify()

    # A childless branch: DELETE_VOLUME only; S3's configuration drops d1.
    job = t.remove_disk_snapshots([b2])
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    assert [k for k, _ids, _r in step_results(cluster, job.id)] == ["DELETE_VOLUME"]
    t.forget([b2])
    t.verify()

    # S2: on d0 the younger child (the head) is rebased onto the older one, which then
    # absorbs a1; on d1 a1's only child is the head.
    job = t.remove(s2)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    steps = [(k, ids) for k, ids, _r in step_results(cluster, job.id)]
    assert sorted(steps) == sorted(
        [
            ("REBASE_VOLUME", [p[d0]]),
            ("MERGE_VOLUMES", [a1, a2]),
            ("MERGE_VOLUMES", [b1, p[d1]]),
        ]
    )
    t.forget([a1, b1])
    assert {n.id: n.parent_id for n in t.tree(d0)} == {a0: "", a2: a0, p[d0]: a2}
    t.verify()
    t.api.assert_consistent()

    # S3's volume on d0 still has the commit's garbage under it. Its deletion keeps failing:
    # the disk is NOT_MERGED with nothing changed. Once it can go, the retry completes.
    job = t.remove(s3)
    assert job.state == common_pb2.JOB_STATE_FAILED, job
    assert outcomes(job) == {d0: NOT_MERGED}
    assert [(k, ids) for k, ids, _r in step_results(cluster, job.id)] == [
        ("DELETE_VOLUME", [garbage]),
        ("MERGE_VOLUMES", [a2, p[d0]]),
    ]
    t.verify()
    cluster.faults[0].clear()
    job = t.remove(s3)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
    t.forget([a2])
    t.verify()
    assert [s.id for s in t.snapshots()][1:] == [s1]
    assert not cluster.volume_path(0, cluster.domain_ids[0], d0, garbage).exists()
    t.api.assert_consistent()
