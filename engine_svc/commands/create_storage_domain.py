"""CreateStorageDomain (SPEC §3.9): a domain row plus an INIT_DOMAIN step on one host."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import (
    Envelope,
    existing_job,
    new_job,
    plan_step,
    request_hash,
)
from engine_svc.commands.validation import validate_name
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job, StorageDomain
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, StepKind, is_uuid, new_id, utcnow
from engine_svc.errors import AlreadyExists, NotFound, PreconditionFailed, invalid_field


@dataclass(frozen=True)
class CreateStorageDomain:
    """Input of CreateStorageDomain."""

    name: str
    host_id: str
    envelope: Envelope = field(default_factory=Envelope)


def create_storage_domain(db: Database, settings: EngineSettings, cmd: CreateStorageDomain) -> Job:
    """Admit the creation of a storage domain on a host."""
    validate_name("name", cmd.name)
    if not is_uuid(cmd.host_id):
        raise invalid_field("host_id", "must be a lowercase UUID")
    cmd.envelope.validate()
    digest = request_hash(JobKind.CREATE_STORAGE_DOMAIN, {"name": cmd.name, "host_id": cmd.host_id})
    with db.transaction() as tx:
        if job := existing_job(tx, cmd.envelope, JobKind.CREATE_STORAGE_DOMAIN, digest):
            return job
        now = utcnow()
        if tx.hosts.domain_by_name(cmd.name) is not None:
            raise AlreadyExists(
                "NAME_ALREADY_USED",
                f"a storage domain is already named {cmd.name}",
                name=cmd.name,
                entity="storage_domain",
            )
        host = tx.hosts.get(cmd.host_id)
        if host is None:
            raise NotFound(
                "HOST_NOT_EXIST", f"host {cmd.host_id} does not exist", host_id=cmd.host_id
            )
        if not host_is_up(host, now, settings.heartbeat_interval):
            raise PreconditionFailed(
                "HOST_NOT_UP", f"host {host.name} is DOWN", host_id=host.id, host_name=host.name
            )
        domain = StorageDomain(id=new_id(), name=cmd.name, created_at=now)
        tx.hosts.add_domain(domain)
        job = new_job(
            JobKind.CREATE_STORAGE_DOMAIN,
            cmd.envelope,
            digest,
            now,
            vm_id=None,
            targets=[domain.id],
            params={"domain_id": domain.id},
            deadline=settings.prepare_deadline,
        )
        job.result = {"domain_id": domain.id}
        step = plan_step(
            job,
            1,
            StepKind.INIT_DOMAIN,
            host_id=host.id,
            domain_id=domain.id,
            disk_id=None,
            volume_ids=[],
            params={"name": cmd.name},
        )
        tx.jobs.add(job, [step])
        return job
