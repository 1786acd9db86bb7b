"""Output: the JSON documents (stable keys, see docs/cli.md) and the rich tables.

JSON conventions: ids are full UUID strings, enums are their SPEC names, sizes are bytes
(integers), times are RFC 3339 UTC strings, absent values are ``null``. Keys are only ever
added, never renamed or removed. Tables show short ids (the first 8 characters), which every
command accepts as an id prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from disksnap._types import (
    Disk,
    DiskKind,
    DiskOutcome,
    Host,
    Job,
    JobError,
    JobState,
    Nic,
    Snapshot,
    SnapshotConfig,
    SnapshotDetail,
    StorageDomain,
    Violation,
    Vm,
    VmConfig,
    VolumeNode,
    VolumeTree,
)

JsonDoc = dict[str, object]


def short(value: str | None) -> str:
    """The first 8 characters of an id ("-" when absent)."""
    return value[:8] if value else "-"


def human_size(n: int) -> str:
    """Bytes as a short binary-unit string (``1 GiB``, ``512 MiB``, ``1.5 KiB``)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            text = f"{size:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


# -- JSON documents -------------------------------------------------------------------------


def host_json(h: Host) -> JsonDoc:
    """A host."""
    return {
        "id": h.id,
        "name": h.name,
        "address": h.address,
        "status": h.status.value,
        "live_ops": h.live_ops,
        "agent_version": h.agent_version,
        "qemu_img_version": h.qemu_img_version,
        "domain_ids": list(h.domain_ids),
        "last_heartbeat_at": _time(h.last_heartbeat_at),
    }


def domain_json(d: StorageDomain) -> JsonDoc:
    """A storage domain."""
    return {
        "id": d.id,
        "name": d.name,
        "status": d.status.value,
        "free_bytes": d.free_bytes,
        "total_bytes": d.total_bytes,
        "host_ids": list(d.host_ids),
    }


def _nics(nics: Iterable[Nic]) -> list[JsonDoc]:
    return [{"name": n.name, "mac": n.mac, "network": n.network} for n in nics]


def vm_config_json(c: VmConfig) -> JsonDoc:
    """A VM configuration."""
    return {
        "name": c.name,
        "description": c.description,
        "cpu_count": c.cpu_count,
        "memory_mb": c.memory_mb,
        "custom_properties": dict(c.custom_properties),
        "nics": _nics(c.nics),
        "home_domain_id": c.home_domain_id,
    }


def disk_json(d: Disk) -> JsonDoc:
    """A disk with its attachments."""
    return {
        "id": d.id,
        "alias": d.alias,
        "description": d.description,
        "kind": d.kind.value,
        "shareable": d.shareable,
        "domain_id": d.domain_id,
        "virtual_size": d.virtual_size if d.kind is DiskKind.IMAGE else None,
        "format": d.base_format.value if d.base_format else None,
        "lun_id": d.lun_id,
        "status": d.status.value,
        "head_volume_id": d.head_volume_id,
        "history_vm_id": d.history_vm_id,
        "created_at": _time(d.created_at),
        "attachments": [
            {
                "vm_id": a.vm_id,
                "interface": a.interface.value,
                "bootable": a.bootable,
                "state": a.state.value,
            }
            for a in d.attachments
        ],
    }


def vm_json(v: Vm) -> JsonDoc:
    """A VM with its configuration and disks."""
    return {
        "id": v.id,
        **vm_config_json(v.config),
        "run_state": v.run_state.value,
        "host_id": v.host_id,
        "created_at": _time(v.created_at),
        "active_snapshot_id": v.active_snapshot_id,
        "in_preview": v.in_preview,
        "locked": v.locked,
        "disks": [disk_json(d) for d in v.disks],
    }


def snapshot_json(s: Snapshot) -> JsonDoc:
    """A snapshot summary."""
    return {
        "id": s.id,
        "vm_id": s.vm_id,
        "type": s.type.value,
        "status": s.status.value,
        "description": s.description,
        "created_at": _time(s.created_at),
        "has_memory": s.has_memory,
        "config_available": s.config_available,
        "disks": [
            {
                "disk_id": d.disk_id,
                "volume_id": d.volume_id,
                "alias": d.alias,
                "status": d.status.value,
            }
            for d in s.disks
        ],
    }


def _config_json(c: SnapshotConfig | None) -> JsonDoc | None:
    if c is None:
        return None
    return {
        "schema_version": c.schema_version,
        "vm": vm_config_json(c.vm),
        "disks": [
            {
                "disk_id": d.disk_id,
                "volume_id": d.volume_id,
                "alias": d.alias,
                "interface": d.interface.value,
                "bootable": d.bootable,
                "virtual_size": d.virtual_size,
                "format": d.format.value,
            }
            for d in c.disks
        ],
        "captured_at": _time(c.captured_at),
    }


def snapshot_detail_json(d: SnapshotDetail) -> JsonDoc:
    """A snapshot with its configuration, memory and preview plan."""
    plan = d.preview_plan
    return {
        **snapshot_json(d.snapshot),
        "config": _config_json(d.config),
        "memory": None
        if d.memory is None
        else {
            "memory_id": d.memory.memory_id,
            "domain_id": d.memory.domain_id,
            "size_bytes": d.memory.size_bytes,
        },
        "preview_plan": None
        if plan is None
        else {
            "config_snapshot_id": plan.config_snapshot_id,
            "restore_memory": plan.restore_memory,
            "entries": [
                {
                    "disk_id": e.disk_id,
                    "category": e.category.value,
                    "chosen_volume_id": e.chosen_volume_id,
                    "source_snapshot_id": e.source_snapshot_id,
                    "overlay_volume_id": e.overlay_volume_id,
                    "pre_preview_head_id": e.pre_preview_head_id,
                    "reattached": e.reattached,
                }
                for e in plan.entries
            ],
        },
    }


def volume_json(v: VolumeNode) -> JsonDoc:
    """One volume of a tree."""
    return {
        "id": v.id,
        "parent_id": v.parent_id,
        "owner": None
        if v.owner is None
        else {
            "snapshot_id": v.owner.snapshot_id,
            "type": v.owner.type.value,
            "description": v.owner.description,
            "vm_id": v.owner.vm_id,
        },
        "active": v.active,
        "status": v.status.value,
        "format": v.format.value,
        "virtual_size": v.virtual_size,
        "actual_size": v.actual_size,
        "created_at": _time(v.created_at),
        "pending_delete": v.pending_delete,
    }


def tree_json(t: VolumeTree) -> JsonDoc:
    """A disk's volume tree."""
    return {
        "disk": disk_json(t.disk),
        "root_id": t.root_id,
        "head_id": t.head_id,
        "volumes": [volume_json(v) for v in t.volumes],
    }


def _error_json(e: JobError | None) -> JsonDoc | None:
    if e is None:
        return None
    return {
        "reason": e.reason,
        "message": e.message,
        "metadata": dict(e.metadata),
        "cause": None
        if e.cause is None
        else {
            "reason": e.cause.reason,
            "domain": e.cause.domain,
            "message": e.cause.message,
            "metadata": dict(e.cause.metadata),
        },
    }


def _outcome_json(o: DiskOutcome) -> JsonDoc:
    return {
        "disk_id": o.disk_id,
        "disk_alias": o.disk_alias,
        "volume_ids": list(o.volume_ids),
        "outcome": o.outcome.value,
        "reason": o.reason,
        "message": o.message,
        "metadata": dict(o.metadata),
    }


def job_json(j: Job) -> JsonDoc:
    """A job with result, outcomes, error and steps."""
    return {
        "id": j.id,
        "kind": j.kind.value,
        "state": j.state.value,
        "progress": j.progress,
        "vm_id": j.vm_id,
        "target_ids": list(j.target_ids),
        "request_id": j.request_id,
        "correlation_id": j.correlation_id,
        "created_at": _time(j.created_at),
        "started_at": _time(j.started_at),
        "ended_at": _time(j.ended_at),
        "result": {
            "snapshot_id": j.result.snapshot_id,
            "vm_id": j.result.vm_id,
            "disk_id": j.result.disk_id,
            "domain_id": j.result.domain_id,
        },
        "outcomes": [_outcome_json(o) for o in j.outcomes],
        "memory_outcome": j.memory_outcome.value if j.memory_outcome else None,
        "error": _error_json(j.error),
        "steps": [
            {
                "seq": s.seq,
                "kind": s.kind.value,
                "disk_id": s.disk_id,
                "volume_ids": list(s.volume_ids),
                "host_id": s.host_id,
                "op_id": s.op_id,
                "state": s.state.value,
                "attempts": s.attempts,
                "progress": s.progress,
                "error": _error_json(s.error),
                "compensates": s.compensates,
                "started_at": _time(s.started_at),
                "ended_at": _time(s.ended_at),
            }
            for s in j.steps
        ],
    }


def violations_json(found: Sequence[Violation]) -> JsonDoc:
    """The consistency checker's answer."""
    return {
        "consistent": not found,
        "violations": [
            {"invariant": v.invariant, "entity_id": v.entity_id, "detail": v.detail} for v in found
        ],
    }


# -- tables ---------------------------------------------------------------------------------

_STATE_STYLES = {
    "UP": "green",
    "ACTIVE": "green",
    "OK": "green",
    "SUCCEEDED": "green",
    "DOWN": "dim",
    "INACTIVE": "red",
    "LOCKED": "yellow",
    "IN_PREVIEW": "magenta",
    "PENDING": "yellow",
    "RUNNING": "yellow",
    "COMPENSATING": "yellow",
    "SUCCEEDED_PARTIAL": "yellow",
    "ILLEGAL": "red",
    "FAILED": "red",
}


def styled(value: str) -> Text:
    """A state name in its colour."""
    return Text(value, style=_STATE_STYLES.get(value, ""))


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", box=None)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def hosts_table(hosts: Sequence[Host], domains: Mapping[str, str]) -> Table:
    """``host list``."""
    table = _table("NAME", "ID", "STATUS", "ADDRESS", "DOMAINS", "LAST HEARTBEAT")
    for h in hosts:
        table.add_row(
            h.name,
            short(h.id),
            styled(h.status.value),
            h.address,
            ", ".join(domains.get(d, short(d)) for d in h.domain_ids) or "-",
            _when(h.last_heartbeat_at),
        )
    return table


def domains_table(domains: Sequence[StorageDomain], hosts: Mapping[str, str]) -> Table:
    """``domain list``."""
    table = _table("NAME", "ID", "STATUS", "FREE", "TOTAL", "HOSTS")
    for d in domains:
        table.add_row(
            d.name,
            short(d.id),
            styled(d.status.value),
            human_size(d.free_bytes),
            human_size(d.total_bytes),
            ", ".join(hosts.get(h, short(h)) for h in d.host_ids) or "-",
        )
    return table


def _vm_state(v: Vm) -> Text:
    text = styled(v.run_state.value)
    if v.in_preview:
        text.append(" in-preview", style="magenta")
    if v.locked:
        text.append(" locked", style="yellow")
    return text


def vms_table(vms: Sequence[Vm]) -> Table:
    """``vm list``."""
    table = _table("NAME", "ID", "STATE", "CPUS", "MEMORY", "DISKS", "DESCRIPTION")
    for v in vms:
        table.add_row(
            v.name,
            short(v.id),
            _vm_state(v),
            str(v.config.cpu_count),
            human_size(v.config.memory_mb * 1024 * 1024),
            ", ".join(d.alias for d in v.disks) or "-",
            v.config.description,
        )
    return table


def disks_table(disks: Sequence[Disk], vm_names: Mapping[str, str], vm_id: str = "") -> Table:
    """``disk list`` and the disks of ``vm show``."""
    table = _table("ALIAS", "ID", "VM", "SIZE", "FORMAT", "STATUS", "HEAD", "FLAGS")
    for d in disks:
        flags = [f"lun={d.lun_id}"] if d.lun_id else []
        if d.shareable:
            flags.append("shareable")
        for a in d.attachments:
            if a.vm_id == vm_id or not vm_id:
                if a.bootable:
                    flags.append("bootable")
                if a.state.value != "ATTACHED":
                    flags.append(a.state.value.lower())
        vms = ", ".join(vm_names.get(a.vm_id, short(a.vm_id)) for a in d.attachments)
        table.add_row(
            d.alias,
            short(d.id),
            vms or "(floating)",
            human_size(d.virtual_size) if d.kind is DiskKind.IMAGE else "-",
            d.base_format.value if d.base_format else d.kind.value,
            styled(d.status.value),
            short(d.head_volume_id),
            " ".join(flags),
        )
    return table


def vm_view(v: Vm, vm_names: Mapping[str, str], hosts: Mapping[str, str]) -> Group:
    """``vm show``: properties, then the disks."""
    props = Table.grid(padding=(0, 2))
    props.add_column(style="bold")
    props.add_column()
    c = v.config
    props.add_row("name", c.name)
    props.add_row("id", v.id)
    props.add_row("state", _vm_state(v))
    props.add_row("host", hosts.get(v.host_id, v.host_id) if v.host_id else "-")
    props.add_row("description", c.description or "-")
    props.add_row("cpus", str(c.cpu_count))
    props.add_row("memory", human_size(c.memory_mb * 1024 * 1024))
    props.add_row("created", _when(v.created_at))
    props.add_row("active snapshot", v.active_snapshot_id)
    if c.custom_properties:
        props.add_row(
            "properties", ", ".join(f"{k}={val}" for k, val in sorted(c.custom_properties.items()))
        )
    if c.nics:
        props.add_row("nics", ", ".join(f"{n.name} {n.mac} {n.network}" for n in c.nics))
    if c.home_domain_id:
        props.add_row("home domain", c.home_domain_id)
    return Group(props, Text(""), disks_table(v.disks, vm_names, v.id))


def snapshots_table(snapshots: Sequence[Snapshot]) -> Table:
    """``snapshot list``."""
    table = _table("#", "ID", "TYPE", "STATUS", "DESCRIPTION", "CREATED", "MEMORY", "DISKS")
    for i, s in enumerate(snapshots):
        disks = ", ".join(
            d.alias if d.status.value == "OK" else f"{d.alias} ({d.status.value})" for d in s.disks
        )
        if not disks:
            disks = "(config only)" if s.config_available else "-"
        table.add_row(
            str(i),
            short(s.id),
            s.type.value,
            styled(s.status.value),
            s.description,
            _when(s.created_at),
            "yes" if s.has_memory else "-",
            disks,
        )
    return table


def snapshot_view(d: SnapshotDetail) -> Group:
    """``snapshot show``: properties, configuration, disks, plan."""
    s = d.snapshot
    props = Table.grid(padding=(0, 2))
    props.add_column(style="bold")
    props.add_column()
    props.add_row("id", s.id)
    props.add_row("description", s.description)
    props.add_row("type", s.type.value)
    props.add_row("status", styled(s.status.value))
    props.add_row("created", _when(s.created_at))
    props.add_row("memory", human_size(d.memory.size_bytes) if d.memory else "-")
    parts: list[Table | Text] = [props]
    if d.config is not None:
        c = d.config.vm
        props.add_row("config", f"{c.name}: {c.cpu_count} cpus, {human_size(c.memory_mb << 20)}")
        disks = _table("ALIAS", "DISK", "VOLUME", "SIZE", "FORMAT", "INTERFACE", "BOOT")
        for cd in d.config.disks:
            disks.add_row(
                cd.alias,
                short(cd.disk_id),
                short(cd.volume_id),
                human_size(cd.virtual_size),
                cd.format.value,
                cd.interface.value,
                "yes" if cd.bootable else "",
            )
        parts += [Text(""), disks]
    if d.preview_plan is not None:
        plan = _table("DISK", "CATEGORY", "CHOSEN", "FROM", "OVERLAY", "PRE-PREVIEW HEAD")
        for e in d.preview_plan.entries:
            plan.add_row(
                short(e.disk_id),
                e.category.value,
                short(e.chosen_volume_id),
                short(e.source_snapshot_id),
                short(e.overlay_volume_id),
                short(e.pre_preview_head_id),
            )
        parts += [Text(""), plan]
    return Group(*parts)


def _volume_label(v: VolumeNode, head_id: str | None) -> Text:
    text = Text(short(v.id), style="bold cyan" if v.id == head_id else "cyan")
    if v.id == head_id:
        text.append(" *head*", style="bold green")
    owner = v.owner
    if owner is not None:
        label = "Active VM" if owner.type.value == "ACTIVE" else owner.description
        text.append(f"  {owner.type.value.lower()}: {label}")
    elif not v.pending_delete:
        text.append("  (no owner)", style="dim")
    text.append(f"  {v.format.value} {human_size(v.actual_size)}", style="dim")
    if v.status.value != "OK":
        text.append(f"  {v.status.value}", style=_STATE_STYLES.get(v.status.value, ""))
    if v.pending_delete:
        text.append("  garbage", style="red")
    return text


def tree_view(t: VolumeTree) -> Tree:
    """``disk tree``: the volumes as a tree, the head marked."""
    root = Tree(
        Text(
            f"{t.disk.alias} ({short(t.disk.id)}, {human_size(t.disk.virtual_size)})",
            style="bold",
        )
    )

    def add(parent: Tree, volume_id: str | None) -> None:
        for child in t.children(volume_id):
            add(parent.add(_volume_label(child, t.head_id)), child.id)

    add(root, None)
    return root


def jobs_table(jobs: Sequence[Job]) -> Table:
    """``job list``."""
    table = _table("ID", "KIND", "STATE", "PROGRESS", "VM", "CREATED", "ERROR")
    for j in jobs:
        table.add_row(
            short(j.id),
            j.kind.value,
            styled(j.state.value),
            f"{j.progress}%",
            short(j.vm_id),
            _when(j.created_at),
            j.error.reason if j.error else "",
        )
    return table


def job_view(j: Job) -> Group:
    """``job show`` and the summary after a mutating command."""
    props = Table.grid(padding=(0, 2))
    props.add_column(style="bold")
    props.add_column()
    props.add_row("job", j.id)
    props.add_row("kind", j.kind.value)
    props.add_row("state", styled(j.state.value))
    props.add_row("progress", f"{j.progress}%")
    if j.correlation_id:
        props.add_row("correlation id", j.correlation_id)
    for key in ("snapshot_id", "vm_id", "disk_id", "domain_id"):
        value = getattr(j.result, key)
        if value:
            props.add_row(key.replace("_id", ""), value)
    if j.memory_outcome is not None:
        props.add_row("memory", j.memory_outcome.value)
    if j.error is not None:
        props.add_row("error", Text(f"{j.error.reason}: {j.error.message}", style="red"))
        if j.error.cause is not None:
            props.add_row("cause", f"{j.error.cause.reason}: {j.error.cause.message}")
    parts: list[Table | Text] = [props]
    if j.outcomes:
        outcomes = _table("DISK", "ID", "OUTCOME", "VOLUMES", "REASON")
        for o in j.outcomes:
            outcomes.add_row(
                o.disk_alias or "-",
                short(o.disk_id),
                styled(o.outcome.value),
                ", ".join(short(v) for v in o.volume_ids),
                f"{o.reason} {o.message}".strip(),
            )
        parts += [Text(""), outcomes]
    if j.steps:
        steps = _table("SEQ", "STEP", "DISK", "STATE", "ATTEMPTS", "ERROR")
        for s in j.steps:
            steps.add_row(
                str(s.seq),
                s.kind.value,
                short(s.disk_id),
                styled(s.state.value),
                str(s.attempts),
                s.error.reason if s.error else "",
            )
        parts += [Text(""), steps]
    return Group(*parts)


def job_line(j: Job, what: str) -> Text:
    """One line summarising a finished mutating command."""
    if j.state is JobState.SUCCEEDED:
        return Text.assemble(("✓ ", "green"), what)
    if j.state is JobState.SUCCEEDED_PARTIAL:
        failed = [o.disk_alias or short(o.disk_id) for o in j.outcomes if o.reason]
        return Text.assemble(
            ("! ", "yellow"), what, (f" (partially: failed {', '.join(failed)})", "yellow")
        )
    return Text.assemble(("… ", "yellow"), f"{what}: job {j.id} is {j.state.value}")


def violations_table(found: Sequence[Violation]) -> Table:
    """``check``."""
    table = _table("INVARIANT", "ENTITY", "DETAIL")
    for v in found:
        table.add_row(v.invariant, v.entity_id, v.detail)
    return table
