"""RemoveVm cleanup (SPEC §3.9): the VM's deleted disks are cleaned up as RemoveDisk's are."""

from __future__ import annotations

from engine_svc.saga.context import JobContext
from engine_svc.saga.flows import remove_disk


def run(ctx: JobContext) -> None:
    """Delete the garbage volumes of every disk the VM took with it, leaf-first per disk."""
    remove_disk.run(ctx)
