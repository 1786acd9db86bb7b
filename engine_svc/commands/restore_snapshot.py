"""RestoreSnapshot admission (SPEC §3.5): preview and commit as one job under one lock set."""

from __future__ import annotations

from dataclasses import dataclass

from engine_svc.commands.admission import existing_job, new_job, request_hash
from engine_svc.commands.preview_snapshot import (
    PreviewSnapshot,
    admit_preview,
    validate_preview,
)
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, utcnow


@dataclass(frozen=True)
class RestoreSnapshot:
    """Input of RestoreSnapshot: a preview request plus the commit option."""

    preview: PreviewSnapshot
    delete_detached_disks: bool = False


def restore_snapshot(db: Database, settings: EngineSettings, cmd: RestoreSnapshot) -> Job:
    """Admit a RestoreSnapshot; the job previews, commits and cleans up."""
    validate_preview(cmd.preview)
    env = cmd.preview.envelope
    digest = request_hash(
        JobKind.RESTORE_SNAPSHOT,
        {**cmd.preview.fingerprint(), "delete_detached_disks": cmd.delete_detached_disks},
    )
    with db.transaction() as tx:
        if (job := existing_job(tx, env, JobKind.RESTORE_SNAPSHOT, digest)) is not None:
            return job
        now = utcnow()
        job = new_job(
            JobKind.RESTORE_SNAPSHOT,
            env,
            digest,
            now,
            vm_id=cmd.preview.vm_id,
            targets=[cmd.preview.vm_id],
            params={},
            deadline=settings.prepare_deadline,
        )
        preview, steps = admit_preview(tx, settings, cmd.preview, job, now)
        job.params = {
            "preview_id": preview.id,
            "delete_detached_disks": cmd.delete_detached_disks,
        }
        job.result = {"vm_id": cmd.preview.vm_id}
        tx.jobs.add(job, steps)
        return job
