"""UndoPreview admission (SPEC §3.4): a DB decision (D13); the job deletes the overlays."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine_svc.commands.admission import Envelope, existing_job, new_job, request_hash
from engine_svc.commands.commit_preview import admit_end_of_preview, enqueue_cleanup
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, is_uuid, utcnow
from engine_svc.errors import invalid_field
from engine_svc.previews import finalize_undo


@dataclass(frozen=True)
class UndoPreview:
    """Input of UndoPreview."""

    vm_id: str
    envelope: Envelope = field(default_factory=Envelope)


def undo_preview(db: Database, settings: EngineSettings, cmd: UndoPreview) -> Job:
    """Admit and finalize UndoPreview; the job deletes the preview overlays."""
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    cmd.envelope.validate()
    digest = request_hash(JobKind.UNDO_PREVIEW, {"vm_id": cmd.vm_id})
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.UNDO_PREVIEW, digest)) is not None:
            return job
        now = utcnow()
        job = new_job(
            JobKind.UNDO_PREVIEW,
            cmd.envelope,
            digest,
            now,
            vm_id=cmd.vm_id,
            targets=[cmd.vm_id],
            params={},
        )
        vm, preview = admit_end_of_preview(tx, cmd.vm_id, job, now)
        outcomes, garbage = finalize_undo(tx, vm, preview)
        job.outcomes = outcomes
        job.result = {"vm_id": vm.id}
        enqueue_cleanup(tx, settings, job, garbage, now)
        return job
