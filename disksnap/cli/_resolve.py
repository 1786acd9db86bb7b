"""Name resolution: VMs, disks, snapshots, hosts, domains and jobs by name or by id.

A reference matches, in this order of precedence: the full id; the name (VM, host, domain),
alias (disk) or description (snapshot); an id prefix of at least 4 characters (tables show 8).
The first level with any match decides; several matches on that level are an error listing the
candidates (exit 2), none on every level is "not found" (exit 3). Snapshots also accept
``active`` / ``current`` for the VM's ACTIVE snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from disksnap._client import Client
from disksnap._types import (
    Disk,
    DomainStatus,
    Host,
    HostStatus,
    Job,
    Snapshot,
    SnapshotType,
    StorageDomain,
    Vm,
)
from disksnap.cli._errors import CliError, ExitCode, ambiguous, invalid, not_found
from disksnap.errors import JobNotExist, VmNotExist

T = TypeVar("T")

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MIN_PREFIX = 4
ACTIVE_NAMES = ("active", "current")


def is_uuid(value: str) -> bool:
    """True for a lowercase canonical UUID."""
    return bool(_UUID.match(value))


def pick(
    kind: str,
    ref: str,
    items: Sequence[T],
    *,
    id_of: Callable[[T], str],
    names_of: Callable[[T], Sequence[str]],
    describe: Callable[[T], str],
    scope: str = "",
) -> T:
    """The single item ``ref`` names (see the module docstring)."""
    levels: list[Callable[[T], bool]] = [
        lambda item: id_of(item) == ref,
        lambda item: ref in names_of(item),
    ]
    if len(ref) >= MIN_PREFIX and re.fullmatch(r"[0-9a-f-]+", ref):
        levels.append(lambda item: id_of(item).startswith(ref))
    for matches in levels:
        found = [item for item in items if matches(item)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ambiguous(kind, ref, [describe(item) for item in found], scope)
    raise not_found(kind, ref, scope)


def vm(client: Client, ref: str) -> Vm:
    """A VM by id, name or id prefix."""
    if is_uuid(ref):
        try:
            return client.get_vm(ref)
        except VmNotExist:
            pass
    named = client.list_vms(name=ref) if not is_uuid(ref) else []
    if len(named) == 1:
        return named[0]
    return pick(
        "VM",
        ref,
        client.list_vms(),
        id_of=lambda v: v.id,
        names_of=lambda v: (v.name,),
        describe=lambda v: f"{v.id}  {v.name}",
    )


def _describe_disk(d: Disk) -> str:
    return f"{d.id}  {d.alias}"


def disk_of_vm(target: Vm, ref: str) -> Disk:
    """One of a VM's disks by alias, id or id prefix."""
    return pick(
        "disk",
        ref,
        target.disks,
        id_of=lambda d: d.id,
        names_of=lambda d: (d.alias,),
        describe=_describe_disk,
        scope=f"of VM {target.name}",
    )


def disk(client: Client, ref: str, target: Vm | None = None) -> Disk:
    """A disk of ``target`` (if given) or any disk, by alias, id or id prefix."""
    if target is not None:
        return disk_of_vm(target, ref)
    return pick(
        "disk",
        ref,
        client.list_disks(),
        id_of=lambda d: d.id,
        names_of=lambda d: (d.alias,),
        describe=_describe_disk,
    )


def snapshot(client: Client, target: Vm, ref: str) -> Snapshot:
    """A VM's snapshot by description, id, id prefix, or ``active``/``current``."""
    snapshots = client.list_snapshots(target.id)
    if ref.lower() in ACTIVE_NAMES:
        active = [s for s in snapshots if s.type is SnapshotType.ACTIVE]
        if active:
            return active[0]
    return pick(
        "snapshot",
        ref,
        snapshots,
        id_of=lambda s: s.id,
        names_of=lambda s: (s.description,),
        describe=lambda s: (
            f"{s.id}  {s.type.value:<8} {s.created_at:%Y-%m-%d %H:%M:%S}  {s.description}"
        ),
        scope=f"of VM {target.name}",
    )


def _choose(kind: str, option: str, candidates: Sequence[str]) -> CliError:
    lines = "\n".join(f"  {c}" for c in candidates)
    return CliError(
        "AMBIGUOUS_NAME",
        f"{len(candidates)} {kind}s could be meant; choose one with {option}:\n{lines}",
        ExitCode.INVALID,
        candidates=candidates,
    )


def host(client: Client, ref: str | None) -> Host:
    """A host by name or id; ``None`` means the only UP host."""
    hosts = client.list_hosts()
    if ref is None:
        up = [h for h in hosts if h.status is HostStatus.UP]
        if len(up) == 1:
            return up[0]
        if not up:
            raise invalid("no host is UP")
        raise _choose("host", "--host", [f"{h.id}  {h.name}" for h in up])
    return pick(
        "host",
        ref,
        hosts,
        id_of=lambda h: h.id,
        names_of=lambda h: (h.name,),
        describe=lambda h: f"{h.id}  {h.name}",
    )


def domain(client: Client, ref: str | None) -> StorageDomain:
    """A storage domain by name or id; ``None`` means the only ACTIVE domain."""
    domains = client.list_storage_domains()
    if ref is None:
        active = [d for d in domains if d.status is DomainStatus.ACTIVE]
        if len(active) == 1:
            return active[0]
        if not active:
            raise invalid("no storage domain is ACTIVE; create one with 'disksnap domain create'")
        raise _choose("storage domain", "--domain", [f"{d.id}  {d.name}" for d in active])
    return pick(
        "storage domain",
        ref,
        domains,
        id_of=lambda d: d.id,
        names_of=lambda d: (d.name,),
        describe=lambda d: f"{d.id}  {d.name}",
    )


def job(client: Client, ref: str) -> Job:
    """A job by id or by a prefix of a recent job's id."""
    if is_uuid(ref):
        try:
            return client.get_job(ref)
        except JobNotExist:
            raise not_found("job", ref) from None
    return pick(
        "job",
        ref,
        client.list_jobs(limit=500),
        id_of=lambda j: j.id,
        names_of=lambda j: (),
        describe=lambda j: f"{j.id}  {j.kind.value} {j.state.value}",
    )


def names_by_id(items: Sequence[Vm | Host | StorageDomain]) -> dict[str, str]:
    """id → name, for tables."""
    return {i.id: i.name for i in items}
