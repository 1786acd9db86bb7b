"""Read models for queries (SPEC §3.8): they never lock and read committed state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine_svc.db.models import (
    Attachment,
    Disk,
    Host,
    Job,
    JobStep,
    Snapshot,
    StorageDomain,
    Vm,
    Volume,
)
from engine_svc.db.repos import Repositories
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import (
    AttachmentState,
    DiskKind,
    JobState,
    SnapshotType,
    VolumeStatus,
    disk_lock,
    is_uuid,
    utcnow,
    vm_lock,
)
from engine_svc.errors import NotFound, invalid_field
from engine_svc.snapshot_config import parse

MAX_PAGE = 500
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class DiskView:
    """A disk with its attachments, head and derived status."""

    disk: Disk
    attachments: list[Attachment]
    head_id: str
    history_vm_id: str
    status: str


@dataclass(frozen=True)
class VmView:
    """A VM with its disks and derived flags."""

    vm: Vm
    active_snapshot_id: str
    in_preview: bool
    locked: bool
    disks: list[DiskView]


@dataclass(frozen=True)
class HostView:
    """A host with its derived status and served domains."""

    host: Host
    up: bool
    domain_ids: list[str]


@dataclass(frozen=True)
class DomainView:
    """A domain with its derived status and space."""

    domain: StorageDomain
    active: bool
    free_bytes: int
    total_bytes: int
    host_ids: list[str]


@dataclass(frozen=True)
class SnapshotDiskView:
    """One disk of a snapshot listing."""

    disk_id: str
    volume_id: str
    alias: str
    status: str


@dataclass(frozen=True)
class SnapshotView:
    """A snapshot summary with its disks."""

    snapshot: Snapshot
    disks: list[SnapshotDiskView]


@dataclass(frozen=True)
class JobView:
    """A job with its steps."""

    job: Job
    steps: list[JobStep] = field(default_factory=list)


@dataclass(frozen=True)
class VolumeTreeView:
    """A disk's volumes, oldest first, with their owners."""

    disk: DiskView
    volumes: list[Volume]
    owners: dict[str, Snapshot]
    root_id: str
    head_id: str


def page_size(requested: int) -> int:
    """The page size to use: default 100, at most 500."""
    if requested < 0 or requested > MAX_PAGE:
        raise invalid_field("page_size", f"must be 0..{MAX_PAGE}")
    return requested or DEFAULT_PAGE


def require_id(field_name: str, value: str) -> None:
    """INVALID_FIELD unless ``value`` is a lowercase UUID."""
    if not is_uuid(value):
        raise invalid_field(field_name, "must be a lowercase UUID")


def disk_view(tx: Repositories, disk: Disk) -> DiskView:
    """Build a DiskView inside a transaction."""
    attachments = list(tx.disks.attachments_of_disk(disk.id))
    volumes = tx.volumes.of_disk(disk.id, include_garbage=False)
    head = next((v for v in volumes if v.active), None)
    history = min(tx.volumes.history_vm_ids(disk.id), default="")
    status = "OK"
    if tx.locks.holders([disk_lock(disk.id)]) or any(
        v.status == VolumeStatus.LOCKED for v in volumes
    ):
        status = "LOCKED"
    elif head is not None and head.status == VolumeStatus.ILLEGAL:
        status = "ILLEGAL"
    return DiskView(disk, attachments, head.id if head else "", history, status)


def vm_view(tx: Repositories, vm: Vm) -> VmView:
    """Build a VmView inside a transaction."""
    disks = []
    for attachment in tx.disks.attachments_of_vm(vm.id):
        disk = tx.disks.get(attachment.disk_id)
        if disk is not None:
            disks.append(disk_view(tx, disk))
    return VmView(
        vm=vm,
        active_snapshot_id=tx.snapshots.active_of(vm.id).id,
        in_preview=tx.snapshots.preview_of(vm.id) is not None,
        locked=bool(tx.locks.holders([vm_lock(vm.id)])),
        disks=disks,
    )


def _vm(tx: Repositories, vm_id: str) -> Vm:
    require_id("vm_id", vm_id)
    vm = tx.vms.get(vm_id)
    if vm is None:
        raise NotFound("VM_NOT_EXIST", f"VM {vm_id} does not exist", vm_id=vm_id)
    return vm


def get_vm(db: Database, vm_id: str) -> VmView:
    """GetVm."""
    with db.transaction() as tx:
        return vm_view(tx, _vm(tx, vm_id))


def list_vms(db: Database, name: str, size: int, token: str) -> tuple[list[VmView], str]:
    """ListVms, paged by name."""
    limit = page_size(size)
    with db.transaction() as tx:
        vms = tx.vms.list(name=name, after=token, limit=limit)
        views = [vm_view(tx, vm) for vm in vms]
    return views, (views[-1].vm.name if len(views) == limit else "")


def get_disk(db: Database, disk_id: str) -> DiskView:
    """GetDisk."""
    require_id("disk_id", disk_id)
    with db.transaction() as tx:
        disk = tx.disks.get(disk_id)
        if disk is None:
            raise NotFound("DISKS_NOT_EXIST", f"disk {disk_id} does not exist", disk_ids=disk_id)
        return disk_view(tx, disk)


def list_disks(
    db: Database, vm_id: str, floating_only: bool, size: int, token: str
) -> tuple[list[DiskView], str]:
    """ListDisks, paged by id."""
    limit = page_size(size)
    if vm_id:
        require_id("vm_id", vm_id)
    with db.transaction() as tx:
        disks = tx.disks.list(vm_id=vm_id, floating_only=floating_only, after=token, limit=limit)
        views = [disk_view(tx, d) for d in disks]
    return views, (views[-1].disk.id if len(views) == limit else "")


def list_hosts(db: Database, heartbeat_interval: timedelta) -> list[HostView]:
    """ListHosts with UP/DOWN derived from heartbeats."""
    now = utcnow()
    with db.transaction() as tx:
        return [
            HostView(
                h,
                host_is_up(h, now, heartbeat_interval),
                sorted(hd.domain_id for hd in tx.hosts.host_domains(h.id)),
            )
            for h in tx.hosts.list()
        ]


def list_domains(db: Database, heartbeat_interval: timedelta) -> list[DomainView]:
    """ListStorageDomains with status and space from UP hosts' reports."""
    now = utcnow()
    views = []
    with db.transaction() as tx:
        for domain in tx.hosts.domains():
            serving = tx.hosts.serving(domain.id)
            up = [hd for hd, h in serving if host_is_up(h, now, heartbeat_interval)]
            views.append(
                DomainView(
                    domain,
                    bool(up),
                    max((hd.free_bytes for hd in up), default=0),
                    max((hd.total_bytes for hd in up), default=0),
                    sorted(hd.host_id for hd, _ in serving),
                )
            )
    return views


def _snapshot_view(tx: Repositories, snapshot: Snapshot) -> SnapshotView:
    if snapshot.type == SnapshotType.ACTIVE:
        disks = []
        for attachment in tx.disks.attachments_of_vm(snapshot.vm_id):
            disk = tx.disks.get(attachment.disk_id)
            if (
                disk is None
                or attachment.state != AttachmentState.ATTACHED
                or disk.kind != DiskKind.IMAGE
                or disk.shareable
            ):
                continue
            head = tx.volumes.heads([disk.id]).get(disk.id)
            disks.append(
                SnapshotDiskView(
                    disk.id, head.id if head else "", disk.alias, head.status if head else "ILLEGAL"
                )
            )
        return SnapshotView(snapshot, disks)
    entries = parse(snapshot.config)["disks"] if snapshot.config else []
    volumes = tx.volumes.get_many(e["volume_id"] for e in entries)
    disks = []
    for e in entries:
        volume = volumes.get(e["volume_id"])
        if (
            volume is None
            or volume.pending_delete
            or (snapshot.type == SnapshotType.REGULAR and volume.owner_snapshot_id != snapshot.id)
        ):
            status = "ILLEGAL"
        else:
            status = volume.status
        disks.append(SnapshotDiskView(e["disk_id"], e["volume_id"], e["alias"], status))
    return SnapshotView(snapshot, disks)


def list_snapshots(db: Database, vm_id: str) -> list[SnapshotView]:
    """ListSnapshots: ACTIVE first, then by (created_at, id)."""
    with db.transaction() as tx:
        _vm(tx, vm_id)
        snaps = list(tx.snapshots.of_vm(vm_id))
        snaps.sort(key=lambda s: (s.type != SnapshotType.ACTIVE, s.created_at, s.id))
        return [_snapshot_view(tx, s) for s in snaps]


def get_snapshot(db: Database, vm_id: str, snapshot_id: str) -> tuple[SnapshotView, VmView | None]:
    """GetSnapshot; for ACTIVE also the VM, whose live configuration is rendered."""
    require_id("snapshot_id", snapshot_id)
    with db.transaction() as tx:
        vm = _vm(tx, vm_id)
        snapshot = tx.snapshots.get(snapshot_id)
        if snapshot is None or snapshot.vm_id != vm_id:
            raise NotFound(
                "VM_SNAPSHOT_DOES_NOT_EXIST",
                f"snapshot {snapshot_id} of VM {vm.name} does not exist",
                vm_id=vm_id,
                snapshot_id=snapshot_id,
            )
        view = _snapshot_view(tx, snapshot)
        return view, (vm_view(tx, vm) if snapshot.type == SnapshotType.ACTIVE else None)


def get_job(db: Database, job_id: str) -> JobView:
    """GetJob."""
    require_id("job_id", job_id)
    with db.transaction() as tx:
        job = tx.jobs.get(job_id)
        if job is None:
            raise NotFound("JOB_NOT_EXIST", f"job {job_id} does not exist", job_id=job_id)
        return JobView(job, list(tx.jobs.steps(job_id)))


def list_jobs(
    db: Database,
    *,
    vm_id: str,
    state: str,
    kind: str,
    correlation_id: str,
    size: int,
    token: str,
) -> tuple[list[JobView], str]:
    """ListJobs newest first; the page token is ``<created_at iso>|<id>``."""
    limit = page_size(size)
    before = None
    if token:
        try:
            at, job_id = token.split("|", 1)
            before = (datetime.fromisoformat(at), job_id)
        except ValueError as exc:
            raise invalid_field("page_token", "not a token this engine issued") from exc
    with db.transaction() as tx:
        jobs = tx.jobs.list(
            vm_id=vm_id,
            state=state,
            kind=kind,
            correlation_id=correlation_id,
            before=before,
            limit=limit,
        )
        views = [JobView(j, list(tx.jobs.steps(j.id))) for j in jobs]
    next_token = ""
    if len(views) == limit:
        last = views[-1].job
        next_token = f"{last.created_at.isoformat()}|{last.id}"
    return views, next_token


def job_version(db: Database, job_id: str) -> tuple[int, bool]:
    """(version, terminal) of a job; every runner transaction bumps the version."""
    with db.transaction() as tx:
        job = tx.jobs.get(job_id)
        if job is None:
            raise NotFound("JOB_NOT_EXIST", f"job {job_id} does not exist", job_id=job_id)
        return job.version, JobState(job.state).terminal


def volume_tree(db: Database, disk_id: str) -> VolumeTreeView:
    """GetDiskVolumeTree: every volume of the disk (garbage included), oldest first."""
    require_id("disk_id", disk_id)
    with db.transaction() as tx:
        disk = tx.disks.get(disk_id)
        if disk is None:
            raise NotFound("DISKS_NOT_EXIST", f"disk {disk_id} does not exist", disk_ids=disk_id)
        volumes = list(tx.volumes.of_disk(disk_id))
        owners = {}
        for v in volumes:
            if v.owner_snapshot_id and v.owner_snapshot_id not in owners:
                owner = tx.snapshots.get(v.owner_snapshot_id)
                if owner is not None:
                    owners[owner.id] = owner
        root = next((v.id for v in volumes if v.parent_id is None and not v.pending_delete), "")
        head = next((v.id for v in volumes if v.active and not v.pending_delete), "")
        return VolumeTreeView(disk_view(tx, disk), volumes, owners, root, head)
