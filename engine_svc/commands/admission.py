"""Admission pieces every mutating command shares (SPEC §3.0, §5.3, §5.8).

Validation, lock acquisition and the insertion of the job, its steps and provisional rows
happen in one transaction; any error raised here rolls all of it back.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine_svc.config import EngineSettings
from engine_svc.db.models import Disk, Host, Job, JobStep, Snapshot, Vm
from engine_svc.db.repos import Repositories
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.domain import (
    SNAPSHOT_JOB_KINDS,
    JobKind,
    JobState,
    StepKind,
    StepState,
    is_uuid,
    new_id,
)
from engine_svc.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PreconditionFailed,
    invalid_field,
    join_ids,
)

CORRELATION_RE = re.compile(r"^[A-Za-z0-9._-]{0,64}$")
MAX_WAIT_S = 600
OVERLAY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Envelope:
    """The request envelope of every mutating call (SPEC §3.0)."""

    request_id: str = ""
    correlation_id: str = ""
    wait_timeout_s: int = 0

    def validate(self) -> None:
        """INVALID_FIELD for a malformed request id, correlation id or wait timeout."""
        if self.request_id and not is_uuid(self.request_id):
            raise invalid_field("envelope.request_id", "must be a lowercase UUID")
        if not CORRELATION_RE.match(self.correlation_id):
            raise invalid_field("envelope.correlation_id", "≤64 chars of [A-Za-z0-9._-]")
        if not 0 <= self.wait_timeout_s <= MAX_WAIT_S:
            raise invalid_field("envelope.wait_timeout_s", f"must be 0..{MAX_WAIT_S}")


@dataclass(frozen=True)
class Lease:
    """Offered by an engine with a free worker: admission claims the job it creates for that
    engine (lease epoch 1) in the admission transaction, so the job starts RUNNING and its
    flow needs no claim transaction (SPEC §5.2's PENDING → RUNNING happens before commit)."""

    owner: str
    duration: timedelta


@dataclass(frozen=True)
class Started:
    """A job admission created and claimed under a ``Lease``, with its STARTED steps and
    the address of each step's host: its flow calls the agents without re-reading them."""

    job: Job
    steps: tuple[JobStep, ...]
    addresses: Mapping[str, str]


def request_hash(kind: JobKind, params: Mapping[str, Any]) -> str:
    """Canonical hash of a request, to tell a retry from a different request."""
    doc = json.dumps({"kind": kind, "params": params}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def existing_job(tx: Repositories, env: Envelope, kind: JobKind, digest: str) -> Job | None:
    """The job of a repeated request_id, or None; REQUEST_ID_REUSED if it differs."""
    if not env.request_id:
        return None
    job = tx.jobs.by_request_id(env.request_id)
    if job is None:
        return None
    if job.kind != kind or job.request_hash != digest:
        raise AlreadyExists(
            "REQUEST_ID_REUSED",
            f"request_id {env.request_id} was used for a different request",
            request_id=env.request_id,
            job_id=job.id,
        )
    return job


def take_locks(
    tx: Repositories,
    keys: Iterable[str],
    job: Job,
    *,
    vm: Vm | None,
    disks: Mapping[str, Disk],
    now: datetime,
) -> None:
    """Acquire every key or raise the ABORTED reason naming the holder (SPEC §4)."""
    conflicts = tx.locks.acquire(keys, job.id, job.kind, now)
    if not conflicts:
        return
    holders = tx.locks.holders(conflicts)
    vm_key = f"vm:{vm.id}" if vm is not None else None
    if vm is not None and vm_key in holders:
        holder = holders[vm_key]
        kind = JobKind(holder.job_kind)
        meta = {"vm_id": vm.id, "vm_name": vm.name, "job_id": holder.job_id}
        if kind is JobKind.CREATE_SNAPSHOT:
            raise Conflict(
                "SNAPSHOT_IS_BEING_TAKEN_FOR_VM",
                f"a snapshot is being taken for VM {vm.name}",
                **meta,
            )
        if kind in SNAPSHOT_JOB_KINDS:
            raise Conflict(
                "VM_IS_DURING_SNAPSHOT",
                f"VM {vm.name} is busy with a {kind} job",
                job_kind=kind,
                **meta,
            )
        raise Conflict(
            "VM_IS_LOCKED", f"VM {vm.name} is locked by a {kind} job", job_kind=kind, **meta
        )
    disk_ids = [k.removeprefix("disk:") for k in conflicts if k.startswith("disk:")]
    holder = holders[conflicts[0]]
    raise Conflict(
        "DISKS_LOCKED",
        f"disks are locked by another job: {join_ids(disk_ids)}",
        disk_ids=join_ids(disk_ids),
        disk_aliases=join_ids(disks[d].alias for d in disk_ids if d in disks),
        job_id=holder.job_id,
    )


def locked_vm(tx: Repositories, vm_id: str) -> Vm:
    """The VM row, locked for the rest of the admission (SPEC §5.8), else VM_NOT_EXIST."""
    vm = tx.vms.get(vm_id, for_update=True)
    if vm is None:
        raise NotFound("VM_NOT_EXIST", f"VM {vm_id} does not exist", vm_id=vm_id)
    return vm


def require_not_in_preview(tx: Repositories, vm: Vm) -> Snapshot:
    """VM_IN_PREVIEW when the VM has a PREVIEW snapshot; else its ACTIVE snapshot."""
    active, preview = tx.snapshots.current_of(vm.id)
    if preview is not None:
        raise PreconditionFailed(
            "VM_IN_PREVIEW", f"VM {vm.name} is in preview", vm_id=vm.id, vm_name=vm.name
        )
    return active


def require_down(vm: Vm) -> None:
    """VM_IS_NOT_DOWN unless the VM is DOWN."""
    if vm.run_state != "DOWN":
        raise PreconditionFailed(
            "VM_IS_NOT_DOWN",
            f"VM {vm.name} is {vm.run_state}; stop it first",
            vm_id=vm.id,
            vm_name=vm.name,
            run_state=vm.run_state,
        )


def require_domains(
    tx: Repositories, settings: EngineSettings, needs: Mapping[str, int], now: datetime
) -> dict[str, Host]:
    """Every domain exists, is ACTIVE and keeps the critical reserve after ``needs`` bytes.

    Returns, per domain, the UP host ``pick_host`` would choose for its steps.
    """
    hosts: dict[str, Host] = {}
    found = tx.hosts.domains_served(needs)
    for domain_id in sorted(needs):
        if domain_id not in found:
            raise NotFound(
                "STORAGE_DOMAIN_NOT_EXIST",
                f"storage domain {domain_id} does not exist",
                domain_id=domain_id,
            )
        domain, all_serving = found[domain_id]
        serving = [
            (hd, host)
            for hd, host in all_serving
            if host_is_up(host, now, settings.heartbeat_interval)
        ]
        reports = [hd for hd, _host in serving]
        if not reports:
            raise PreconditionFailed(
                "STORAGE_DOMAIN_STATUS_ILLEGAL",
                f"storage domain {domain.name} is INACTIVE: no UP host serves it",
                domain_id=domain_id,
                domain_name=domain.name,
                status="INACTIVE",
            )
        free = max(r.free_bytes for r in reports)
        required = needs[domain_id]
        if free - required < settings.free_space_critical_bytes:
            raise PreconditionFailed(
                "DISK_SPACE_LOW_ON_STORAGE_DOMAIN",
                f"storage domain {domain.name} has {free} bytes free; {required} needed "
                f"plus a reserve of {settings.free_space_critical_bytes}",
                domain_id=domain_id,
                domain_name=domain.name,
                required_bytes=required,
                free_bytes=free,
            )
        hosts[domain_id] = serving[0][1]
    return hosts


def pick_host(tx: Repositories, settings: EngineSettings, domain_id: str, now: datetime) -> str:
    """An UP host serving the domain (step affinity; a DOWN host is replaced at run time)."""
    for _, host in tx.hosts.serving(domain_id):
        if host_is_up(host, now, settings.heartbeat_interval):
            return host.id
    raise PreconditionFailed(
        "STORAGE_DOMAIN_STATUS_ILLEGAL",
        f"no UP host serves storage domain {domain_id}",
        domain_id=domain_id,
        status="INACTIVE",
    )


def new_job(
    kind: JobKind,
    env: Envelope,
    digest: str,
    now: datetime,
    *,
    vm_id: str | None,
    targets: Iterable[str],
    params: dict[str, Any],
    deadline: timedelta | None = None,
    lease: Lease | None = None,
) -> Job:
    """A PENDING job (DB-only commands finish it with ``finish_db_only``), or with a
    ``lease`` a RUNNING job claimed by its owner."""
    return Job(
        id=new_id(),
        kind=kind,
        state=JobState.RUNNING if lease else JobState.PENDING,
        vm_id=vm_id,
        target_ids=sorted(targets),
        request_id=env.request_id or None,
        request_hash=digest,
        correlation_id=env.correlation_id,
        params=params,
        created_at=now,
        started_at=now if lease else None,
        ended_at=None,
        prepare_deadline=now + deadline if deadline else None,
        progress=0,
        outcomes=[],
        memory_outcome=None,
        result={},
        error=None,
        lease_owner=lease.owner if lease else None,
        lease_epoch=1 if lease else 0,
        lease_expires_at=now + lease.duration if lease else None,
        version=1,
    )


def finish_db_only(job: Job, now: datetime) -> None:
    """Mark a DB-only job SUCCEEDED inside its admission transaction."""
    job.state = JobState.SUCCEEDED
    job.started_at = job.ended_at = now
    job.progress = 100


def plan_step(
    job: Job,
    seq: int,
    kind: StepKind,
    *,
    host_id: str,
    domain_id: str,
    disk_id: str | None,
    volume_ids: list[str],
    params: dict[str, Any] | None = None,
    started: bool = False,
) -> JobStep:
    """A step with its engine-chosen op_id ``<job_id>:<seq>``: PLANNED, or ``started``
    (first attempt) in a job admission claimed, whose flow calls the agent once it commits."""
    return JobStep(
        job_id=job.id,
        seq=seq,
        kind=kind,
        disk_id=disk_id,
        domain_id=domain_id,
        host_id=host_id,
        volume_ids=volume_ids,
        params=params or {},
        op_id=f"{job.id}:{seq}",
        state=StepState.STARTED if started else StepState.PLANNED,
        attempts=1 if started else 0,
        progress=0,
        error=None,
        compensates=None,
        result=None,
        started_at=job.started_at if started else None,
        ended_at=None,
    )


def disk_metadata(disks: Iterable[Disk]) -> dict[str, str]:
    """``disk_ids`` and ``disk_aliases`` metadata for a set of disks."""
    items = list(disks)
    return {
        "disk_ids": join_ids(d.id for d in items),
        "disk_aliases": join_ids(d.alias for d in items),
    }
