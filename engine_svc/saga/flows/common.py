"""Pieces every flow uses: finish, parallel steps, undoing a created volume."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine_svc.db.models import Job, JobStep, Volume
from engine_svc.db.repos import Repositories
from engine_svc.domain import JobState, StepKind, StepState, VolumeStatus, utcnow
from engine_svc.saga.context import JobContext
from engine_svc.saga.steps import StepResult, StepRunner


def finish(
    tx: Repositories,
    job: Job,
    state: JobState,
    epoch: int,
    *,
    error: dict[str, Any] | None = None,
    outcomes: list[dict[str, Any]] | None = None,
) -> None:
    """The terminal transition with the release of every lock row, in the caller's transaction
    (one UPDATE of the job, which also writes ``outcomes`` when given)."""
    values: dict[str, Any] = {
        "ended_at": utcnow(),
        "progress": 100,
        "error": error,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if outcomes is not None:
        values["outcomes"] = outcomes
    tx.jobs.transition(job, state, epoch, **values)
    tx.locks.release_job(job.id)


def with_outcome(
    outcomes: Iterable[dict[str, Any]], disk_id: str, **fields: Any
) -> list[dict[str, Any]]:
    """``outcomes`` (a job's JSON list) with the entry of one disk inserted or updated."""
    updated = [dict(o) for o in outcomes]
    for entry in updated:
        if entry["disk_id"] == disk_id:
            entry.update(fields)
            break
    else:
        base = {"disk_id": disk_id, "disk_alias": "", "volume_ids": [], "reason": "", "message": ""}
        updated.append({**base, **fields})
    return sorted(updated, key=lambda o: str(o["disk_id"]))


def set_outcome(job: Job, disk_id: str, **fields: Any) -> None:
    """Insert or update the outcome entry of one disk on the job."""
    job.outcomes = with_outcome(job.outcomes, disk_id, **fields)


def run_parallel(
    ctx: JobContext, items: Iterable[int], fn: Callable[[int], StepResult]
) -> dict[int, StepResult]:
    """Run ``fn(seq)`` for every seq, at most ``max_parallel_disks`` at a time."""
    seqs = list(items)
    if len(seqs) <= 1:
        return {seq: fn(seq) for seq in seqs}
    with ThreadPoolExecutor(max_workers=ctx.settings.max_parallel_disks) as pool:
        futures = {seq: pool.submit(fn, seq) for seq in seqs}
        return {seq: f.result() for seq, f in futures.items()}


def undo_step_for(tx: Repositories, job: Job, original: JobStep) -> JobStep:
    """The compensation step of ``original`` (created on first use, op_id ``…:undo``)."""
    for step in tx.jobs.steps(job.id):
        if step.compensates == original.seq:
            return step
    seq = max(s.seq for s in tx.jobs.steps(job.id)) + 1
    undo = JobStep(
        job_id=job.id,
        seq=seq,
        kind=StepKind.DELETE_VOLUME,
        disk_id=original.disk_id,
        domain_id=original.domain_id,
        host_id=original.host_id,
        volume_ids=list(original.volume_ids[:1]),
        params={},
        op_id=f"{original.op_id}:undo",
        state=StepState.PLANNED,
        attempts=0,
        progress=0,
        error=None,
        compensates=original.seq,
        result=None,
        started_at=None,
        ended_at=None,
    )
    tx.jobs.add_step(undo)
    return undo


def undo_created_volume(ctx: JobContext, seq: int) -> bool:
    """Delete the volume step ``seq`` created (tolerates "never happened").

    Returns True when storage confirms the volume is gone. The caller then removes the row;
    otherwise it turns the row into garbage for the reaper (SPEC §5.6).
    """
    with ctx.tx() as (tx, job):
        original = tx.jobs.step(job.id, seq)
        if original.state == StepState.COMPENSATED:
            return True
        undo_seq = undo_step_for(tx, job, original).seq
    result = StepRunner(ctx).run(undo_seq, deadline=None, budget=ctx.settings.compensation_budget)
    with ctx.tx() as (tx, job):
        original = tx.jobs.step(job.id, seq)
        if original.state != StepState.COMPENSATED:
            original.state = StepState.COMPENSATED
    return result.ok


def drop_or_garbage(tx: Repositories, volume: Volume | None, *, deleted: bool) -> None:
    """Remove a compensated volume's row, or keep it as garbage if storage may still hold it."""
    if volume is None:
        return
    if deleted:
        tx.volumes.delete(volume)
        return
    volume.pending_delete = True
    volume.status = VolumeStatus.ILLEGAL
    volume.owner_snapshot_id = None
    volume.active = False
