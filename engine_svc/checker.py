"""The consistency checker (SPEC §2): compares the DB with the invariants and with storage.

Read-only: it reports ``Violation``s and never repairs. Entities locked by a running job are
not quiescent and are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from engine_svc.agents.client import AgentCallError, AgentClient
from engine_svc.config import EngineSettings
from engine_svc.db.models import Disk, Lock, Snapshot, Vm, Volume
from engine_svc.db.repos import Repositories
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import (
    ACTIVE_JOB_STATES,
    AttachmentState,
    DiskKind,
    SnapshotStatus,
    SnapshotType,
    VolumeStatus,
    disk_lock,
    new_id,
    utcnow,
    vm_lock,
)
from engine_svc.snapshot_config import parse


@dataclass(frozen=True)
class Violation:
    """One broken invariant."""

    invariant: str
    entity_id: str
    detail: str


@dataclass(frozen=True)
class Scope:
    """What to check: everything, one VM, or one domain."""

    vm_id: str = ""
    domain_id: str = ""


class _Report:
    def __init__(self) -> None:
        self.items: list[Violation] = []

    def add(self, invariant: str, entity_id: str, detail: str) -> None:
        self.items.append(Violation(invariant, entity_id, detail))


def check_consistency(
    db: Database,
    agents: AgentClient,
    settings: EngineSettings,
    scope: Scope,
    *,
    verify_images: bool = False,
) -> list[Violation]:
    """Every violation of SPEC §2 within ``scope``; empty means consistent."""
    report = _Report()
    with db.transaction() as tx:
        locked = {lk.key for lk in _live_locks(tx, report)}
        vms = [v for v in _all_vms(tx) if not scope.vm_id or v.id == scope.vm_id]
        quiet_vms = [v for v in vms if vm_lock(v.id) not in locked]
        disks = _scoped_disks(tx, scope)
        quiet_disks = [d for d in disks if disk_lock(d.id) not in locked]
        volumes_by_disk: dict[str, list[Volume]] = defaultdict(list)
        for v in tx.volumes.all():
            volumes_by_disk[v.disk_id].append(v)
        snapshots = {s.id: s for vm in vms for s in tx.snapshots.of_vm(vm.id)}
        for vm in quiet_vms:
            _check_vm(tx, report, vm.id)
        for disk in quiet_disks:
            _check_disk(tx, report, disk, volumes_by_disk[disk.id], snapshots)
        storage_plan = [
            (d, list(volumes_by_disk[d.id])) for d in quiet_disks if d.kind == DiskKind.IMAGE
        ]
        addresses = _addresses(tx, settings)
    for disk, volumes in storage_plan:
        _check_storage(agents, report, disk, volumes, addresses, verify_images)
    return report.items


def _live_locks(tx: Repositories, report: _Report) -> list[Lock]:
    live = []
    for lock in tx.locks.holders_all():
        job = tx.jobs.get(lock.job_id)
        if job is None or job.state not in ACTIVE_JOB_STATES:
            report.add("INV-11", lock.key, f"lock held by finished or missing job {lock.job_id}")
        else:
            live.append(lock)
    return live


def _all_vms(tx: Repositories) -> list[Vm]:
    return list(tx.vms.list(limit=1_000_000))


def _scoped_disks(tx: Repositories, scope: Scope) -> list[Disk]:
    disks = list(tx.disks.list(limit=1_000_000))
    if scope.domain_id:
        return [d for d in disks if d.domain_id == scope.domain_id]
    if scope.vm_id:
        attached = {a.disk_id for a in tx.disks.attachments_of_vm(scope.vm_id)}
        history = {
            v.disk_id for s in tx.snapshots.of_vm(scope.vm_id) for v in tx.volumes.owned_by(s.id)
        }
        return [d for d in disks if d.id in attached | history]
    return disks


def _check_vm(tx: Repositories, report: _Report, vm_id: str) -> None:
    snaps = list(tx.snapshots.of_vm(vm_id))
    actives = [s for s in snaps if s.type == SnapshotType.ACTIVE]
    if len(actives) != 1:
        report.add("INV-1", vm_id, f"{len(actives)} ACTIVE snapshots")
        return
    active = actives[0]
    if active.status != SnapshotStatus.OK or active.config is not None:
        report.add("INV-1", active.id, f"ACTIVE has status {active.status} or a config")
    previews = [s for s in snaps if s.type == SnapshotType.PREVIEW]
    in_preview = {s.id for s in snaps if s.status == SnapshotStatus.IN_PREVIEW}
    attachments = list(tx.disks.attachments_of_vm(vm_id))
    if len(previews) > 1:
        report.add("INV-2", vm_id, f"{len(previews)} PREVIEW snapshots")
    elif previews:
        plan = previews[0].preview_plan or {}
        named: set[str] = {plan.get("config_snapshot_id") or ""} | {
            e.get("source_snapshot_id")
            for e in plan.get("entries", [])
            if e.get("category") == "PREVIEWED"
        }
        named = {n for n in named if n and n != active.id}
        if named != in_preview:
            report.add("INV-2", vm_id, f"IN_PREVIEW {sorted(in_preview)} ≠ plan {sorted(named)}")
    else:
        if in_preview:
            report.add(
                "INV-2", vm_id, f"IN_PREVIEW snapshots without a preview: {sorted(in_preview)}"
            )
        if any(a.state == AttachmentState.PREVIEW_DETACHED for a in attachments):
            report.add("INV-2", vm_id, "PREVIEW_DETACHED attachment without a preview")
    attached_ok = set()
    for a in attachments:
        disk = tx.disks.get(a.disk_id)
        if (
            disk
            and disk.kind == DiskKind.IMAGE
            and not disk.shareable
            and a.state == AttachmentState.ATTACHED
        ):
            attached_ok.add(disk.id)
    for v in tx.volumes.owned_by(active.id):
        if not (v.active and not v.pending_delete and v.disk_id in attached_ok):
            report.add("INV-5", v.id, "ACTIVE owns a volume that is not a head of an attached disk")
    for s in snaps:
        owned = list(tx.volumes.owned_by(s.id))
        if s.type == SnapshotType.REGULAR:
            _check_regular(report, s, owned)
        elif s.type == SnapshotType.PREVIEW:
            plan = s.preview_plan or {}
            expected = {
                e["pre_preview_head_id"]
                for e in plan.get("entries", [])
                if e.get("category") in ("PREVIEWED", "DETACHED")
            }
            if {v.id for v in owned} != expected:
                report.add("INV-7", s.id, "PREVIEW does not own exactly the pre-preview heads")
        if s.status == SnapshotStatus.LOCKED:
            report.add("INV-11", s.id, "snapshot LOCKED without a running job")


def _check_regular(report: _Report, s: Snapshot, owned: list[Volume]) -> None:
    per_disk: dict[str, int] = defaultdict(int)
    for v in owned:
        per_disk[v.disk_id] += 1
        if v.active:
            report.add("INV-6", s.id, f"REGULAR owns head {v.id}")
    if any(n > 1 for n in per_disk.values()):
        report.add("INV-6", s.id, "REGULAR owns several volumes of one disk")
    config = (
        {(d["disk_id"], d["volume_id"]) for d in parse(s.config)["disks"]} if s.config else set()
    )
    if config != {(v.disk_id, v.id) for v in owned}:
        report.add("INV-6", s.id, f"config disks {sorted(config)} ≠ owned volumes")
    if s.status not in (SnapshotStatus.OK, SnapshotStatus.IN_PREVIEW):
        report.add("INV-6", s.id, f"REGULAR has status {s.status}")


def _check_disk(
    tx: Repositories,
    report: _Report,
    disk: Disk,
    volumes: list[Volume],
    snapshots: dict[str, Snapshot],
) -> None:
    live = [v for v in volumes if not v.pending_delete]
    if disk.kind == DiskKind.LUN:
        if volumes:
            report.add("INV-3", disk.id, "a LUN disk has volumes")
        return
    heads = [v for v in live if v.active]
    if len(heads) != 1:
        report.add("INV-3", disk.id, f"{len(heads)} heads")
        return
    head = heads[0]
    children = {v.parent_id for v in live}
    if head.id in children:
        report.add("INV-3", head.id, "the head has children")
    newest = max(live, key=lambda v: (v.created_at, v.id))
    if newest.id != head.id:
        report.add("INV-3", head.id, f"the head is not the newest volume ({newest.id} is)")
    attachments = list(tx.disks.attachments_of_disk(disk.id))
    owner = _owner(tx, snapshots, head)
    if not attachments or disk.shareable:
        if head.owner_snapshot_id is not None:
            report.add("INV-4", head.id, "a floating or shareable disk's head has an owner")
    else:
        a = attachments[0]
        want = SnapshotType.ACTIVE if a.state == AttachmentState.ATTACHED else SnapshotType.PREVIEW
        if owner is None or owner.type != want or owner.vm_id != a.vm_id:
            report.add("INV-4", head.id, f"head owner should be the VM's {want}")
    history: set[str] = set()
    for v in live:
        if v.active:
            continue
        o = _owner(tx, snapshots, v)
        if o is None or o.type not in (SnapshotType.REGULAR, SnapshotType.PREVIEW):
            report.add("INV-8", v.id, "a non-head volume is not owned by a REGULAR or PREVIEW")
        else:
            history.add(o.vm_id)
        if v.status == VolumeStatus.LOCKED:
            report.add("INV-11", v.id, "volume LOCKED without a running job")
    if len(history) > 1:
        report.add(
            "INV-8", disk.id, f"volumes owned by snapshots of several VMs: {sorted(history)}"
        )
    _check_tree(report, disk, live)
    for v in volumes:
        if v.pending_delete:
            if v.status != VolumeStatus.ILLEGAL or v.owner_snapshot_id or v.active:
                report.add("INV-12", v.id, "garbage volume is owned, active or not ILLEGAL")
            if v.id in children:
                report.add("INV-12", v.id, "garbage volume has a live child")


def _owner(tx: Repositories, known: dict[str, Snapshot], volume: Volume) -> Snapshot | None:
    """The volume's owner, from the snapshots already read or else from the DB."""
    if not volume.owner_snapshot_id:
        return None
    return known.get(volume.owner_snapshot_id) or tx.snapshots.get(volume.owner_snapshot_id)


def _check_tree(report: _Report, disk: Disk, live: list[Volume]) -> None:
    by_id = {v.id: v for v in live}
    roots = [v for v in live if v.parent_id is None]
    if len(roots) != 1:
        report.add("INV-9", disk.id, f"{len(roots)} roots")
    for v in live:
        if v.virtual_size != disk.virtual_size:
            report.add("INV-9", v.id, f"virtual size {v.virtual_size} ≠ disk's {disk.virtual_size}")
        if v.format == "RAW" and v.parent_id is not None:
            report.add("INV-9", v.id, "a RAW volume has a parent")
        if v.parent_id is None:
            continue
        parent = by_id.get(v.parent_id)
        if parent is None:
            report.add("INV-9", v.id, f"parent {v.parent_id} missing")
        elif parent.created_at > v.created_at:
            report.add("INV-9", v.id, "parent is newer than its child")
        seen = {v.id}
        node = parent
        while node is not None and node.parent_id is not None:
            if node.id in seen:
                report.add("INV-9", v.id, "cycle in the tree")
                break
            seen.add(node.id)
            node = by_id.get(node.parent_id)


def _addresses(tx: Repositories, settings: EngineSettings) -> dict[str, str]:
    now = utcnow()
    out: dict[str, str] = {}
    for domain in tx.hosts.domains():
        for _hd, host in tx.hosts.serving(domain.id):
            if host_is_up(host, now, settings.heartbeat_interval):
                out[domain.id] = host.address
                break
    return out


def _check_storage(
    agents: AgentClient,
    report: _Report,
    disk: Disk,
    volumes: list[Volume],
    addresses: dict[str, str],
    verify_images: bool,
) -> None:
    address = addresses.get(disk.domain_id or "")
    if address is None:
        report.add(
            "INV-10", disk.id, f"no UP host serves domain {disk.domain_id}; storage unchecked"
        )
        return
    try:
        listing = agents.list_volumes(address, disk.domain_id or "", disk.id)
    except AgentCallError as exc:
        report.add("INV-10", disk.id, f"cannot list volumes: {exc}")
        return
    on_storage = {v.volume_id: v for v in listing.volumes}
    for name in listing.stray_files:
        report.add("INV-10", disk.id, f"stray file {name} on storage")
    rows = {v.id: v for v in volumes}
    for vid in on_storage:
        if vid not in rows:
            report.add("INV-10", vid, "volume file without a DB row (orphan)")
    for v in volumes:
        found = on_storage.get(v.id)
        if found is None:
            if not v.pending_delete:
                report.add("INV-10", v.id, "DB volume missing on storage")
            continue
        if v.pending_delete:
            continue
        if found.format != v.format:
            report.add("INV-10", v.id, f"format {found.format} on storage ≠ {v.format}")
        if found.virtual_size != v.virtual_size:
            report.add(
                "INV-10", v.id, f"virtual size {found.virtual_size} on storage ≠ {v.virtual_size}"
            )
        if found.parent_id != v.parent_id:
            report.add(
                "INV-10", v.id, f"backing {found.parent_id} on storage ≠ parent {v.parent_id}"
            )
        if verify_images:
            damage = agents.verify_volume(address, new_id(), disk.domain_id or "", disk.id, v.id)
            if damage:
                report.add("INV-10", v.id, f"qemu-img check: {damage}")
