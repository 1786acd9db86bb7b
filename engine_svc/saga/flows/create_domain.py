"""CreateStorageDomain flow (SPEC §3.9): INIT_DOMAIN on the chosen host."""

from __future__ import annotations

from engine_svc.domain import JobState, utcnow
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows.common import finish
from engine_svc.saga.steps import StepRunner

SEQ = 1


def run(ctx: JobContext) -> None:
    """Drive a CreateStorageDomain job to a terminal state."""
    if ctx.claimed_state is not JobState.RUNNING:
        return
    with ctx.tx() as (tx, job):
        deadline = job.prepare_deadline
    result = StepRunner(ctx).run(SEQ, deadline=deadline)
    with ctx.tx() as (tx, job):
        step = tx.jobs.step(job.id, SEQ)
        domain_id = job.params["domain_id"]
        if result.ok and step.host_id:
            # The step's record, not ``result``: a resumed job's step is DONE already and its
            # result comes from the record. A heartbeat may have reported the domain first:
            # that report is newer and stays.
            recorded = step.result or {}
            tx.hosts.report_domain(
                step.host_id,
                domain_id,
                int(recorded.get("domain_free_bytes", 0)),
                int(recorded.get("domain_total_bytes", 0)),
                utcnow(),
                replace=False,
            )
            finish(tx, job, JobState.SUCCEEDED, ctx.epoch)
            return
        domain = tx.hosts.domain(domain_id)
        if domain is not None:
            tx.session.delete(domain)
        finish(tx, job, JobState.FAILED, ctx.epoch, error=step.error)
