"""``disksnap snapshot``: create, list, show and remove snapshots."""

from __future__ import annotations

from typing import Annotated

import typer

from disksnap.cli import _render as render
from disksnap.cli import _resolve as resolve
from disksnap.cli._errors import invalid
from disksnap.cli._session import NoWaitOption, OutputOption, session

app = typer.Typer(help="Create, list, show and remove snapshots.", no_args_is_help=True)

VmArg = Annotated[str, typer.Argument(metavar="VM", help="VM name, id or id prefix.")]
SnapArg = Annotated[
    str, typer.Argument(metavar="SNAP", help="Snapshot description, id, id prefix, or 'active'.")
]


@app.command("create")
def create(
    ctx: typer.Context,
    vm: VmArg,
    description: Annotated[
        str, typer.Option("--description", "-d", help="Description of the snapshot (required).")
    ],
    disks: Annotated[
        list[str] | None,
        typer.Option(
            "--disk", metavar="DISK", help="Only this disk (alias or id); repeatable. Default: all."
        ),
    ] = None,
    config_only: Annotated[
        bool, typer.Option("--config-only", help="Capture the configuration, no disks.")
    ] = False,
    memory: Annotated[
        bool, typer.Option("--memory", metavar="SIZE", help="Also save memory state.")
    ] = False,
    atomic: Annotated[
        bool, typer.Option("--atomic", help="Roll everything back if any disk fails.")
    ] = False,
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Snapshot all disks, some disks (--disk) or none (--config-only) of a VM.

    JSON: {"job": ..., "snapshot": <snapshot object or null>}.
    """
    if config_only and disks:
        raise invalid("--config-only and --disk exclude each other")
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    disk_ids: list[str] | None = None
    if config_only:
        disk_ids = []
    elif disks:
        disk_ids = [resolve.disk_of_vm(target, d).id for d in disks]
    handle = s.client.create_snapshot(
        target.id, description, disk_ids=disk_ids, save_memory=memory, atomic=atomic, wait=False
    )
    job = s.follow(handle, f"Snapshotting {target.name}", wait=not no_wait)
    extra: dict[str, object] = {"snapshot": None}
    snapshot_id = job.result.snapshot_id
    if job.succeeded and snapshot_id:
        found = [x for x in s.client.list_snapshots(target.id) if x.id == snapshot_id]
        extra["snapshot"] = render.snapshot_json(found[0]) if found else None
    s.emit_job(
        job, f"Snapshot {description!r} of {target.name} created", extra=extra, waited=not no_wait
    )


@app.command("list")
def list_snapshots(ctx: typer.Context, vm: VmArg, output: OutputOption = None) -> None:
    """List a VM's snapshots, ACTIVE first. JSON: an array of snapshot objects."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    snapshots = s.client.list_snapshots(target.id)
    if s.json:
        s.emit([render.snapshot_json(x) for x in snapshots])
        return
    table = render.snapshots_table(snapshots)
    table.title = f"Snapshots of {target.name}"
    s.emit(None, table)


@app.command("show")
def show(ctx: typer.Context, vm: VmArg, snapshot: SnapArg, output: OutputOption = None) -> None:
    """Show a snapshot with its configuration (and preview plan). JSON: a snapshot object."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    found = resolve.snapshot(s.client, target, snapshot)
    detail = s.client.get_snapshot(target.id, found.id)
    s.emit(render.snapshot_detail_json(detail), render.snapshot_view(detail))


@app.command("remove")
def remove(
    ctx: typer.Context,
    vm: VmArg,
    snapshot: SnapArg,
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Merge a snapshot's volumes away and delete it. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    found = resolve.snapshot(s.client, target, snapshot)
    handle = s.client.remove_snapshot(target.id, found.id, wait=False)
    job = s.follow(handle, f"Removing snapshot {found.description!r}", wait=not no_wait)
    s.emit_job(job, f"Snapshot {found.description!r} removed", waited=not no_wait)


@app.command("remove-disk")
def remove_disk(
    ctx: typer.Context,
    vm: VmArg,
    snapshot: SnapArg,
    disk: Annotated[str, typer.Argument(metavar="DISK", help="Disk alias, id or id prefix.")],
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Remove one disk from a snapshot (merge its volume away). JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    found = resolve.snapshot(s.client, target, snapshot)
    held = resolve.pick(
        "disk",
        disk,
        found.disks,
        id_of=lambda d: d.disk_id,
        names_of=lambda d: (d.alias,),
        describe=lambda d: f"{d.disk_id}  {d.alias}",
        scope=f"in snapshot {found.description!r}",
    )
    handle = s.client.remove_disk_snapshots([held.volume_id], wait=False)
    job = s.follow(handle, f"Removing {held.alias} from {found.description!r}", wait=not no_wait)
    s.emit_job(
        job, f"Disk {held.alias} removed from snapshot {found.description!r}", waited=not no_wait
    )
