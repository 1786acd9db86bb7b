"""``disksnap vm``: virtual machines."""

from __future__ import annotations

from typing import Annotated

import typer

from disksnap._types import DiskUpdate, Nic, RunState, Vm
from disksnap.cli import _render as render
from disksnap.cli import _resolve as resolve
from disksnap.cli._errors import invalid
from disksnap.cli._parse import (
    DiskAttributesSpec,
    parse_disk_attributes,
    parse_disk_spec,
    parse_pair,
    parse_size,
)
from disksnap.cli._resolve import names_by_id
from disksnap.cli._session import NoWaitOption, OutputOption, Session, session

app = typer.Typer(help="Virtual machines.", no_args_is_help=True)

VmArg = Annotated[str, typer.Argument(metavar="VM", help="VM name, id or id prefix.")]
DomainOption = Annotated[
    str | None,
    typer.Option("--domain", help="Storage domain (name or id); default: the only ACTIVE one."),
]


def _memory_mb(text: str) -> int:
    size = parse_size(text)
    if size % (1 << 20):
        raise invalid(f"memory must be a whole number of MiB: {text!r}")
    return size >> 20


def _nic(text: str) -> Nic:
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise invalid(f"not a NIC: {text!r} (use NAME,MAC[,NETWORK])")
    return Nic(name=parts[0], mac=parts[1], network=parts[2] if len(parts) == 3 else "")


def _disk_update(target: Vm, spec: DiskAttributesSpec) -> DiskUpdate:
    disk = resolve.disk_of_vm(target, spec.ref)
    return DiskUpdate(disk.id, alias=spec.alias, interface=spec.interface, bootable=spec.bootable)


def _show(s: Session, vm_id: str) -> None:
    vm = s.client.get_vm(vm_id)
    if s.json:
        s.emit(render.vm_json(vm))
        return
    vm_names = {vm.id: vm.name}
    s.emit(None, render.vm_view(vm, vm_names, names_by_id(s.client.list_hosts())))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Name of the new VM.")],
    disks: Annotated[
        list[str] | None,
        typer.Option(
            "--disk",
            metavar="ALIAS:SIZE[:FORMAT]",
            help="Add a disk ALIAS:SIZE[:raw|qcow2] (e.g. os:10G, data:512M:raw); repeatable.",
        ),
    ] = None,
    domain: DomainOption = None,
    cpus: Annotated[int, typer.Option("--cpus", help="Number of vCPUs.")] = 1,
    memory: Annotated[
        str, typer.Option("--memory", metavar="SIZE", help="Memory size, e.g. 2G.")
    ] = "1G",
    description: Annotated[str, typer.Option("--description", help="Description.")] = "",
    output: OutputOption = None,
) -> None:
    """Create a VM, optionally with disks.

    JSON: {"job": <create job>, "disk_jobs": [<add-disk jobs>], "vm": <vm>}.
    """
    s = session(ctx, output)
    specs = [parse_disk_spec(d) for d in disks or []]
    memory_mb = _memory_mb(memory)
    domain_id = resolve.domain(s.client, domain).id if specs else None
    job = s.client.create_vm(name, description=description, cpu_count=cpus, memory_mb=memory_mb)
    vm_id = job.result.vm_id or ""
    disk_jobs = []
    for spec in specs:
        handle = s.client.add_disk(
            spec.alias, spec.size, domain_id=domain_id, vm_id=vm_id, format=spec.format, wait=False
        )
        disk_jobs.append(s.follow(handle, f"Creating disk {spec.alias}"))
    vm = s.client.get_vm(vm_id)
    if s.json:
        s.emit(
            {
                "job": render.job_json(job),
                "disk_jobs": [render.job_json(j) for j in disk_jobs],
                "vm": render.vm_json(vm),
            }
        )
        return
    s.out.print(render.job_line(job, f"VM {name} created ({vm_id})"))
    for spec, disk_job in zip(specs, disk_jobs, strict=True):
        s.out.print(
            render.job_line(disk_job, f"Disk {spec.alias} ({render.human_size(spec.size)}) added")
        )


@app.command("list")
def list_vms(ctx: typer.Context, output: OutputOption = None) -> None:
    """List VMs. JSON: an array of VM objects (with their disks)."""
    s = session(ctx, output)
    vms = s.client.list_vms()
    if s.json:
        s.emit([render.vm_json(v) for v in vms])
        return
    s.emit(None, render.vms_table(vms))


@app.command("show")
def show(ctx: typer.Context, vm: VmArg, output: OutputOption = None) -> None:
    """Show a VM's configuration and disks. JSON: a VM object."""
    s = session(ctx, output)
    _show(s, resolve.vm(s.client, vm).id)


@app.command("update")
def update(
    ctx: typer.Context,
    vm: VmArg,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    description: Annotated[str | None, typer.Option("--description", help="Description.")] = None,
    cpus: Annotated[int | None, typer.Option("--cpus", help="Number of vCPUs.")] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", metavar="SIZE", help="Memory size, e.g. 4G.")
    ] = None,
    properties: Annotated[
        list[str] | None,
        typer.Option(
            "--property", help="Custom property KEY=VALUE; replaces them all; repeatable."
        ),
    ] = None,
    clear_properties: Annotated[
        bool, typer.Option("--clear-properties", help="Remove every custom property.")
    ] = False,
    nics: Annotated[
        list[str] | None,
        typer.Option("--nic", help="NIC NAME,MAC[,NETWORK]; replaces them all; repeatable."),
    ] = None,
    home_domain: Annotated[
        str | None, typer.Option("--home-domain", help="Home storage domain (name or id).")
    ] = None,
    disks: Annotated[
        list[str] | None,
        typer.Option(
            "--disk",
            metavar="DISK:KEY=VALUE[,KEY=VALUE]",
            help="Change a disk's alias, interface or bootable flag, e.g. "
            "os:alias=root,bootable=true or data:interface=sata; repeatable.",
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Change a VM's configuration and its disks' attributes. JSON: {"job": ..., "vm": ...}."""
    s = session(ctx, output)
    specs = [parse_disk_attributes(d) for d in disks or []]
    target = resolve.vm(s.client, vm)
    disk_updates = [_disk_update(target, spec) for spec in specs]
    props: dict[str, str] | None = None
    if clear_properties:
        props = {}
    if properties:
        props = dict(parse_pair(p, "property") for p in properties)
    home = resolve.domain(s.client, home_domain).id if home_domain else None
    job = s.client.update_vm(
        target.id,
        name=name,
        description=description,
        cpu_count=cpus,
        memory_mb=_memory_mb(memory) if memory else None,
        custom_properties=props,
        nics=[_nic(n) for n in nics] if nics else None,
        home_domain_id=home,
        disks=disk_updates,
    )
    extra: dict[str, object] = {"vm": render.vm_json(s.client.get_vm(target.id))}
    s.emit_job(job, f"VM {name or target.name} updated", extra=extra)


@app.command("start")
def start(
    ctx: typer.Context,
    vm: VmArg,
    host: Annotated[
        str | None, typer.Option("--host", help="Host (name or id); default: the only UP host.")
    ] = None,
    output: OutputOption = None,
) -> None:
    """Record the VM as running on a host. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    on = resolve.host(s.client, host)
    job = s.client.set_vm_run_state(target.id, RunState.UP, host_id=on.id)
    s.emit_job(job, f"VM {target.name} is up on {on.name}")


@app.command("stop")
def stop(ctx: typer.Context, vm: VmArg, output: OutputOption = None) -> None:
    """Record the VM as down. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    job = s.client.set_vm_run_state(target.id, RunState.DOWN)
    s.emit_job(job, f"VM {target.name} is down")


@app.command("remove")
def remove(
    ctx: typer.Context, vm: VmArg, no_wait: NoWaitOption = False, output: OutputOption = None
) -> None:
    """Delete a VM with its snapshots and snapshot-able disks. JSON: {"job": ...}."""
    s = session(ctx, output)
    target = resolve.vm(s.client, vm)
    handle = s.client.remove_vm(target.id, wait=False)
    job = s.follow(handle, f"Removing {target.name}", wait=not no_wait)
    s.emit_job(job, f"VM {target.name} removed", waited=not no_wait)
