"""Helpers for the storage agent's unit tests: chain building and operation polling."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from storage_agent.model import VolumeFormat, VolumeMeta
from storage_agent.operations import OperationRecord
from storage_agent.ops.create_volume import BaseSpec, CreateVolumeInput, create_volume
from storage_agent.ops.merge_volumes import MergeVolumesInput, merge_volumes
from storage_agent.ops.rebase_volume import RebaseVolumeInput, rebase_volume
from storage_agent.runtime import Runtime

MiB = 1 << 20
DISK_SIZE = 16 * MiB


def new_id() -> str:
    """A fresh lowercase UUID."""
    return str(uuid.uuid4())


@dataclass
class Disk:
    """One disk of the test domain, with shortcuts to build and merge chains."""

    rt: Runtime
    domain_id: str
    disk_id: str

    def path(self, volume_id: str) -> Path:
        return self.rt.layout.volume_path(self.domain_id, self.disk_id, volume_id)

    def sidecar(self, volume_id: str) -> VolumeMeta:
        meta = self.rt.layout.read_sidecar(self.domain_id, self.disk_id, volume_id)
        assert meta is not None, f"no sidecar for {volume_id}"
        return meta

    def base(
        self, fmt: VolumeFormat = VolumeFormat.COW, size: int = DISK_SIZE, volume_id: str = ""
    ) -> str:
        volume = volume_id or new_id()
        create_volume(self.rt, self.create_input(volume, base=BaseSpec(size, fmt)))
        return volume

    def overlay(self, parent_id: str, volume_id: str = "") -> str:
        volume = volume_id or new_id()
        create_volume(self.rt, self.create_input(volume, parent_id=parent_id))
        return volume

    def create_input(
        self, volume_id: str, *, parent_id: str | None = None, base: BaseSpec | None = None
    ) -> CreateVolumeInput:
        return CreateVolumeInput(
            new_id(), self.domain_id, self.disk_id, volume_id, parent_id=parent_id, base=base
        )

    def merge(
        self, base: str, top: str, base_parent: str | None, op_id: str = ""
    ) -> OperationRecord:
        inp = MergeVolumesInput(
            op_id or new_id(), self.domain_id, self.disk_id, base, top, base_parent, top
        )
        return wait(self.rt, merge_volumes(self.rt, inp).op_id)

    def rebase(self, volume_id: str, new_parent: str | None) -> OperationRecord:
        inp = RebaseVolumeInput(new_id(), self.domain_id, self.disk_id, volume_id, new_parent)
        return wait(self.rt, rebase_volume(self.rt, inp).op_id)


def wait(rt: Runtime, op_id: str, timeout: float = 60.0) -> OperationRecord:
    """Poll the runner until ``op_id`` is terminal."""
    deadline = time.monotonic() + timeout
    while True:
        record = rt.runner.get(op_id)
        if record.state.terminal:
            return record
        assert time.monotonic() < deadline, f"{op_id} still {record.state}"
        time.sleep(0.01)
