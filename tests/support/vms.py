"""A test VM on a `Cluster`: disks by alias, byte patterns written and read back with qemu-io.

Each disk gets distinct byte patterns in 1 MiB slots; after an operation every disk is read
back through its head and must hold exactly the patterns of the state chosen for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from disksnap.engine.v1 import common_pb2, inventory_pb2, snapshots_pb2
from support import qemu
from support.engine import Cluster, EngineApi

MiB = 1024 * 1024
SIZE = 16 * MiB


class Vm:
    """A test VM: disk ids by alias, the host of each disk, file access to heads."""

    def __init__(self, cluster: Cluster, name: str, hosts: dict[str, int]) -> None:
        self.cluster = cluster
        self.api: EngineApi = cluster.api()
        self.name = name
        self.hosts = hosts
        self.id = self.api.create_vm(name)
        self.disks = {
            alias: self.api.add_disk(self.id, alias, cluster.domain_ids[host], SIZE)
            for alias, host in hosts.items()
        }
        self.alias_of = {d: a for a, d in self.disks.items()}

    def head(self, alias: str) -> str:
        """The disk's head volume id (attached or floating)."""
        resp = self.api.snapshots.GetDiskVolumeTree(
            snapshots_pb2.GetDiskVolumeTreeRequest(disk_id=self.disks[alias]), timeout=10
        )
        head: str = resp.head_id
        return head

    def path(self, alias: str, volume_id: str | None = None) -> Path:
        """The file of a volume of the disk (its head by default)."""
        disk = self.disks[alias]
        host = self.hosts[alias]
        volume = volume_id or self.head(alias)
        return self.cluster.volume_path(host, self.cluster.domain_ids[host], disk, volume)

    def write(self, alias: str, byte: int, slot: int) -> None:
        """Write 1 MiB of ``byte`` at slot ``slot`` (a MiB offset) through the head."""
        qemu.write_pattern(self.path(alias), "qcow2", byte, slot * MiB, MiB)

    def expect(self, alias: str, slots: dict[int, int]) -> None:
        """Each slot (MiB offset) reads as the given byte (0 = never written)."""
        path = self.path(alias)
        for slot, byte in slots.items():
            qemu.assert_pattern(path, "qcow2", byte, slot * MiB, MiB)
        qemu.check_image(path)

    def snapshot(self, description: str, aliases: list[str] | None = None) -> str:
        """CreateSnapshot of the given disks (all by default); returns the snapshot id."""
        disk_ids = None if aliases is None else [self.disks[a] for a in aliases]
        job = self.api.snapshot(self.id, description, disk_ids)
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
        snapshot_id: str = job.result.snapshot_id
        return snapshot_id

    def active_id(self) -> str:
        """The id of the VM's ACTIVE snapshot."""
        active: str = self.vm().active_snapshot_id
        return active

    def vm(self) -> inventory_pb2.Vm:
        """GetVm."""
        resp: inventory_pb2.GetVmResponse = self.api.inventory.GetVm(
            inventory_pb2.GetVmRequest(vm_id=self.id), timeout=10
        )
        return resp.vm

    def table(self) -> dict[str, tuple[int, int, dict[str, str]]]:
        """Snapshot id → (type, status, {alias: volume id} as listed)."""
        resp: snapshots_pb2.ListSnapshotsResponse = self.api.snapshots.ListSnapshots(
            snapshots_pb2.ListSnapshotsRequest(vm_id=self.id), timeout=10
        )
        return {
            s.id: (
                s.type,
                s.status,
                {self.alias_of.get(d.disk_id, d.disk_id): d.volume_id for d in s.disks},
            )
            for s in resp.snapshots
        }

    def tree(self, alias: str) -> dict[str, tuple[str, str, bool]]:
        """Volume id → (parent id, owner snapshot id, active) for live volumes."""
        resp: snapshots_pb2.GetDiskVolumeTreeResponse = self.api.snapshots.GetDiskVolumeTree(
            snapshots_pb2.GetDiskVolumeTreeRequest(disk_id=self.disks[alias]), timeout=10
        )
        return {
            v.id: (v.parent_id, v.owner.snapshot_id, v.active)
            for v in resp.volumes
            if not v.pending_delete
        }

    def start(self, rpc: str, **fields: Any) -> common_pb2.Job:
        """Call a SnapshotService RPC that takes ``vm_id``; returns the admitted job."""
        request_type = getattr(snapshots_pb2, f"{rpc}Request")
        job: common_pb2.Job = getattr(self.api.snapshots, rpc)(
            request_type(vm_id=self.id, **fields), timeout=10
        ).job
        return job

    def run(self, rpc: str, **fields: Any) -> common_pb2.Job:
        """``start`` and wait until the job is terminal."""
        return self.api.wait_job(self.start(rpc, **fields).id)

    def select(self, **choices: str) -> list[snapshots_pb2.DiskSelection]:
        """DiskSelections by alias: ``select(d1=snapshot_id, ...)``."""
        return [
            snapshots_pb2.DiskSelection(disk_id=self.disks[alias], snapshot_id=snap)
            for alias, snap in choices.items()
        ]

    def outcomes(self, job: common_pb2.Job) -> dict[str, int]:
        """Alias → outcome kind of a job's per-disk outcomes."""
        return {self.alias_of.get(o.disk_id, o.disk_id): o.outcome for o in job.outcomes}
