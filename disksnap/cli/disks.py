"""``disksnap disk``: virtual disks and their volume trees."""

from __future__ import annotations

from typing import Annotated

import typer

from disksnap._types import DiskFormat, DiskKind
from disksnap.cli import _render as render
from disksnap.cli import _resolve as resolve
from disksnap.cli._errors import invalid
from disksnap.cli._parse import parse_disk_spec, parse_interface, parse_lun_alias
from disksnap.cli._resolve import names_by_id
from disksnap.cli._session import NoWaitOption, OutputOption, session

app = typer.Typer(help="Virtual disks and their volume trees.", no_args_is_help=True)

VmArg = Annotated[str, typer.Argument(metavar="VM", help="VM name, id or id prefix.")]
DiskArg = Annotated[str, typer.Argument(metavar="DISK", help="Disk alias, id or id prefix.")]
VmOption = Annotated[
    str | None, typer.Option("--vm", help="Look the disk up among this VM's disks.")
]
InterfaceOption = Annotated[
    str, typer.Option("--interface", help="virtio, virtio_scsi, sata or ide.")
]
BootableOption = Annotated[bool, typer.Option("--bootable", help="Make it the boot disk.")]


@app.command("list")
def list_disks(
    ctx: typer.Context,
    vm: Annotated[str | None, typer.Argument(metavar="[VM]", help="Only this VM's disks.")] = None,
    floating: Annotated[bool, typer.Option("--floating", help="Only floating disks.")] = False,
    output: OutputOption = None,
) -> None:
    """List disks (all, one VM's, or floating). JSON: an array of disk objects."""
    s = session(ctx, output)
    vm_id = resolve.vm(s.client, vm).id if vm else None
    disks = s.client.list_disks(vm_id=vm_id, floating_only=floating)
    if s.json:
        s.emit([render.disk_json(d) for d in disks])
        return
    s.emit(None, render.disks_table(disks, names_by_id(s.client.list_vms()), vm_id or ""))


@app.command("show")
def show(
    ctx: typer.Context, disk: DiskArg, vm: VmOption = None, output: OutputOption = None
) -> None:
    """Show one disk. JSON: a disk object."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm) if vm else None
    found = s.client.get_disk(resolve.disk(s.client, disk, target).id)
    if s.json:
        s.emit(render.disk_json(found))
        return
    s.emit(None, render.disks_table([found], names_by_id(s.client.list_vms())))


@app.command("add")
def add(
    ctx: typer.Context,
    vm: VmArg,
    spec: Annotated[
        str,
        typer.Argument(
            metavar="ALIAS:SIZE[:FORMAT]",
            help="ALIAS:SIZE[:raw|qcow2], e.g. data:10G; just ALIAS with --lun.",
        ),
    ],
    lun: Annotated[
        str | None,
        typer.Option(
            "--lun",
            metavar="LUN_ID",
            help="A LUN disk backed by this LUN: no size, no domain, never snapshotted.",
        ),
    ] = None,
    shareable: Annotated[bool, typer.Option("--shareable", help="A shareable disk.")] = False,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="Storage domain (name or id); default: the only ACTIVE one."),
    ] = None,
    interface: InterfaceOption = "virtio",
    bootable: BootableOption = False,
    description: Annotated[str, typer.Option("--description", help="Description.")] = "",
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Create a disk attached to a VM. JSON: {"job": ..., "disk": ...}."""
    s = session(ctx, output)
    if lun is None:
        parsed = parse_disk_spec(spec)
        alias, size, fmt = parsed.alias, parsed.size, parsed.format
        what = f"Disk {alias} ({render.human_size(size)})"
    else:
        if domain is not None:
            raise invalid("--domain is for image disks: a LUN disk lives on no storage domain")
        alias, size, fmt = parse_lun_alias(spec), 0, DiskFormat.COW
        what = f"LUN disk {alias} ({lun})"
    target = resolve.vm(s.client, vm)
    handle = s.client.add_disk(
        alias,
        size,
        domain_id=resolve.domain(s.client, domain).id if lun is None else None,
        vm_id=target.id,
        format=fmt,
        kind=DiskKind.IMAGE if lun is None else DiskKind.LUN,
        lun_id=lun,
        shareable=shareable,
        interface=parse_interface(interface),
        bootable=bootable,
        description=description,
        wait=False,
    )
    job = s.follow(handle, f"Creating disk {alias}", wait=not no_wait)
    extra: dict[str, object] = {"disk": None}
    if job.succeeded and job.result.disk_id:
        extra["disk"] = render.disk_json(s.client.get_disk(job.result.disk_id))
    s.emit_job(job, f"{what} added to {target.name}", extra=extra, waited=not no_wait)


@app.command("remove")
def remove(
    ctx: typer.Context,
    disk: DiskArg,
    vm: VmOption = None,
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Delete a disk and all of its volumes. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm) if vm else None
    found = resolve.disk(s.client, disk, target)
    handle = s.client.remove_disk(found.id, wait=False)
    job = s.follow(handle, f"Removing disk {found.alias}", wait=not no_wait)
    s.emit_job(job, f"Disk {found.alias} removed", waited=not no_wait)


@app.command("attach")
def attach(
    ctx: typer.Context,
    vm: VmArg,
    disk: DiskArg,
    interface: InterfaceOption = "virtio",
    bootable: BootableOption = False,
    output: OutputOption = None,
) -> None:
    """Attach a (floating) disk to a VM. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    found = resolve.disk(s.client, disk)
    job = s.client.attach_disk(
        found.id, target.id, interface=parse_interface(interface), bootable=bootable
    )
    s.emit_job(job, f"Disk {found.alias} attached to {target.name}")


@app.command("detach")
def detach(ctx: typer.Context, vm: VmArg, disk: DiskArg, output: OutputOption = None) -> None:
    """Detach a disk from a VM; it becomes floating. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    found = resolve.disk(s.client, disk, target)
    job = s.client.detach_disk(found.id, target.id)
    s.emit_job(job, f"Disk {found.alias} detached from {target.name}")


@app.command("tree")
def tree(ctx: typer.Context, vm: VmArg, disk: DiskArg, output: OutputOption = None) -> None:
    """Show a disk's volume tree with the owner of each volume. JSON: a tree object."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    found = resolve.disk(s.client, disk, target)
    volumes = s.client.get_disk_volume_tree(found.id)
    s.emit(render.tree_json(volumes), render.tree_view(volumes))
