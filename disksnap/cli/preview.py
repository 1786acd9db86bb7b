"""``disksnap preview|commit|undo|restore``: try a past state, then keep it or go back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from disksnap._client import Client
from disksnap._types import DiskSelection, Vm
from disksnap.cli import _resolve as resolve
from disksnap.cli._errors import invalid
from disksnap.cli._parse import parse_pair
from disksnap.cli._session import NoWaitOption, OutputOption, session

VmArg = Annotated[str, typer.Argument(metavar="VM", help="VM name, id or id prefix.")]
DiskSelectOption = Annotated[
    list[str] | None,
    typer.Option(
        "--disk",
        metavar="ALIAS=SNAP|current|exclude",
        help=(
            "ALIAS=SNAP (preview the disk as in that snapshot), ALIAS=current (keep it) or "
            "ALIAS=exclude (detach it); repeatable. With --disk every attached disk must be "
            "listed."
        ),
    ),
]
RestoreMemoryOption = Annotated[
    bool, typer.Option("--restore-memory", help="Restore the configuration snapshot's memory.")
]
DeleteDetachedOption = Annotated[
    bool,
    typer.Option(
        "--delete-detached-disks",
        help="Delete disks the preview detached instead of keeping them as floating disks.",
    ),
]


def _selection(
    client: Client, target: Vm, specs: Sequence[str]
) -> tuple[list[DiskSelection], list[str]]:
    disks: list[DiskSelection] = []
    excluded: list[str] = []
    for spec in specs:
        alias, value = parse_pair(spec, "disk selection")
        disk = resolve.disk_of_vm(target, alias)
        if value.lower() == "exclude":
            excluded.append(disk.id)
        elif value.lower() in resolve.ACTIVE_NAMES:
            disks.append(DiskSelection(disk.id, snapshot_id=target.active_snapshot_id))
        else:
            snap = resolve.snapshot(client, target, value)
            disks.append(DiskSelection(disk.id, snapshot_id=snap.id))
    return disks, excluded


def preview(
    ctx: typer.Context,
    vm: VmArg,
    config: Annotated[
        str | None,
        typer.Option("--config", help="Snapshot whose configuration (and memory) to preview."),
    ] = None,
    disks: DiskSelectOption = None,
    restore_memory: RestoreMemoryOption = False,
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Preview a snapshot: --config SNAP alone previews it whole; --disk picks per disk.

    JSON: {"job": ...}.
    """
    if config is None and not disks:
        raise invalid("give --config SNAP, --disk ALIAS=SNAP, or both")
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    config_id = resolve.snapshot(s.client, target, config).id if config else None
    selected, excluded = _selection(s.client, target, disks or [])
    handle = s.client.preview_snapshot(
        target.id,
        config_snapshot_id=config_id,
        disks=selected,
        exclude_disk_ids=excluded,
        restore_memory=restore_memory,
        wait=False,
    )
    job = s.follow(handle, f"Previewing {target.name}", wait=not no_wait)
    s.emit_job(job, f"{target.name} is in preview; 'commit' or 'undo' it", waited=not no_wait)


def commit(
    ctx: typer.Context,
    vm: VmArg,
    delete_detached_disks: DeleteDetachedOption = False,
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Keep the previewed state. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    handle = s.client.commit_preview(
        target.id, delete_detached_disks=delete_detached_disks, wait=False
    )
    job = s.follow(handle, f"Committing the preview of {target.name}", wait=not no_wait)
    s.emit_job(job, f"Preview of {target.name} committed", waited=not no_wait)


def undo(
    ctx: typer.Context, vm: VmArg, no_wait: NoWaitOption = False, output: OutputOption = None
) -> None:
    """Return to the state before the preview. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    handle = s.client.undo_preview(target.id, wait=False)
    job = s.follow(handle, f"Undoing the preview of {target.name}", wait=not no_wait)
    s.emit_job(job, f"Preview of {target.name} undone", waited=not no_wait)


def restore(
    ctx: typer.Context,
    vm: VmArg,
    snapshot: Annotated[
        str, typer.Argument(metavar="SNAP", help="Snapshot whose configuration to restore.")
    ],
    disks: DiskSelectOption = None,
    restore_memory: RestoreMemoryOption = False,
    delete_detached_disks: DeleteDetachedOption = False,
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Preview and commit in one step. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    config_id = resolve.snapshot(s.client, target, snapshot).id
    selected, excluded = _selection(s.client, target, disks or [])
    handle = s.client.restore_snapshot(
        target.id,
        config_snapshot_id=config_id,
        disks=selected,
        exclude_disk_ids=excluded,
        restore_memory=restore_memory,
        delete_detached_disks=delete_detached_disks,
        wait=False,
    )
    job = s.follow(handle, f"Restoring {target.name}", wait=not no_wait)
    s.emit_job(job, f"{target.name} restored to {snapshot!r}", waited=not no_wait)
