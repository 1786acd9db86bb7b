"""Executing one step against an agent: record intent, call, retry, record the result.

A step is committed as STARTED before the agent is called (SPEC §5.4), so after a crash it
is re-issued with the same op_id and the agent returns the first outcome. Transient failures
are retried with exponential backoff and full jitter until the transient budget or the job's
prepare deadline runs out (SPEC §5.5); permanent failures fail the step at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc

from engine_svc.agents.client import AgentCallError, AgentFailure, AgentOperation, OpState
from engine_svc.commands.admission import Started
from engine_svc.db.models import Host, Job, JobStep
from engine_svc.db.repos import Repositories
from engine_svc.domain import StepKind, StepState, check_step_transition, utcnow
from engine_svc.saga.context import JobContext

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
# Long operations are long-polled (SPEC §5.5): the agent answers when the operation ends or
# after the wait, which starts at 1 s and grows by half up to 5 s.
LONG_POLL_START = 1.0
LONG_POLL_BACKOFF = 1.5
LONG_POLL_CAP = 5.0

JOB_REASON_BY_KIND = {
    StepKind.CREATE_VOLUME: "VOLUME_CREATION_ERROR",
    StepKind.DELETE_VOLUME: "VOLUME_DELETION_ERROR",
    StepKind.MERGE_VOLUMES: "MERGE_ERROR",
    StepKind.REBASE_VOLUME: "MERGE_ERROR",
    StepKind.SAVE_MEMORY: "MEMORY_SAVE_ERROR",
    StepKind.DELETE_MEMORY: "VOLUME_DELETION_ERROR",
    StepKind.INIT_DOMAIN: "DOMAIN_CREATION_ERROR",
}


@dataclass(frozen=True)
class StepResult:
    """How a step ended."""

    ok: bool
    operation: AgentOperation | None = None
    error: dict[str, object] | None = None

    @property
    def base_modified(self) -> bool:
        """For merges: the agent reported that base's data changed."""
        return self.operation is not None and self.operation.base_modified


def step_error(reason: str, message: str, cause: AgentFailure | None = None) -> dict[str, object]:
    """A job-level error document (SPEC §4 job-level reasons)."""
    error: dict[str, object] = {"reason": reason, "message": message, "metadata": {}}
    if cause is not None:
        error["cause"] = cause.as_cause()
    return error


class StepRunner:
    """Drives single steps of a job to DONE or FAILED."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def run(
        self, seq: int, *, deadline: datetime | None, budget: timedelta | None = None
    ) -> StepResult:
        """Run step ``seq`` (PLANNED or STARTED) until it is DONE or FAILED.

        ``budget`` bounds consecutive transient failures (default: the transient budget;
        compensations pass the compensation budget).
        """
        with self.ctx.tx() as (tx, _job):
            begun = self.begin(tx, [tx.jobs.step(self.ctx.job_id, seq)])[seq]
        return self.drive(begun, deadline=deadline, budget=budget)

    def begin(self, tx: Repositories, steps: Iterable[JobStep]) -> dict[int, Begun]:
        """Mark steps STARTED (one more attempt) in the caller's transaction, which must
        commit before ``drive``: a flow starting several steps pays one transaction."""
        hosts: dict[tuple[str, str, str | None], Host | None] = {}
        begun = {}
        for step in steps:
            state = StepState(step.state)
            if state is StepState.DONE:
                begun[step.seq] = Begun(step.seq, StepResult(True))
                continue
            if state is StepState.FAILED:
                begun[step.seq] = Begun(step.seq, StepResult(False, error=step.error))
                continue
            if state is StepState.PLANNED:
                check_step_transition(state, StepState.STARTED)
                step.state = StepState.STARTED
                step.started_at = utcnow()
            step.attempts += 1
            key = (step.kind, step.domain_id or "", step.host_id)
            if key not in hosts:
                hosts[key] = self.ctx.host_for_step(tx, step)
            begun[step.seq] = Begun(step.seq, None, _point(step, hosts[key]))
        return begun

    def started(self, started: Started) -> dict[int, Begun]:
        """The steps admission committed as STARTED, with where to call each."""
        return {
            step.seq: Begun(
                step.seq, None, (started.addresses[step.host_id or ""], _StepCall.of(step))
            )
            for step in started.steps
        }

    def drive(
        self,
        begun: Begun,
        *,
        deadline: datetime | None,
        budget: timedelta | None = None,
        record_success: bool = True,
    ) -> StepResult:
        """Call the agent for a begun step until it is DONE or FAILED (see ``run``).

        A failure is recorded at once. ``record_success=False`` leaves a success for the
        caller to record with ``JobRepository.record_done`` in its next transaction (a flow
        that finalizes right after saves one transaction per step; until then the step stays
        STARTED and a resumed job re-issues its op_id, which returns the same outcome).
        """
        if begun.ended is not None:
            return begun.ended
        assert begun.target is not None
        budget_td = budget or self.ctx.settings.transient_budget
        return self._drive(begun.seq, deadline, budget_td, begun.target, record_success)

    def _drive(
        self,
        seq: int,
        deadline: datetime | None,
        budget_td: timedelta,
        target: tuple[str | None, _StepCall],
        record_success: bool = True,
    ) -> StepResult:
        ctx = self.ctx
        budget = budget_td.total_seconds()
        first_failure: float | None = None
        delay = BACKOFF_START
        last: AgentFailure | None = None
        while True:
            if ctx.stopping.is_set():
                raise EngineStopping()
            if deadline is not None and utcnow() >= deadline:
                return self._fail(seq, "STEP_DEADLINE_EXCEEDED", "the job's deadline passed", last)
            if first_failure is not None:
                with ctx.tx() as (tx, _job):
                    step = tx.jobs.step(ctx.job_id, seq)
                    target = _point(step, ctx.host_for_step(tx, step))
            address, snapshot = target
            try:
                if address is None:
                    raise AgentCallError(
                        AgentFailure(
                            grpc.StatusCode.UNAVAILABLE,
                            "AGENT_UNAVAILABLE",
                            f"no UP host serves domain {snapshot.domain_id}",
                        )
                    )
                op = self._call(address, snapshot, seq)
            except AgentCallError as exc:
                failure = exc.failure
                if (
                    snapshot.kind is StepKind.DELETE_VOLUME
                    and failure.code is grpc.StatusCode.NOT_FOUND
                ):
                    return self._done(seq, None, record=record_success)
                if not failure.transient:
                    return self._fail(
                        seq, JOB_REASON_BY_KIND[snapshot.kind], failure.message, failure
                    )
                last = failure
                now = time.monotonic()
                first_failure = first_failure or now
                if now - first_failure >= budget:
                    return self._fail(seq, "AGENT_UNAVAILABLE", failure.message, failure)
                log.info(
                    "step %s:%s transient failure (%s); retrying", ctx.job_id, seq, failure.reason
                )
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            if op.state is OpState.DONE:
                return self._done(seq, op, record=record_success)
            assert op.error is not None or op.state is OpState.ABORTED
            failure = op.error or AgentFailure(
                grpc.StatusCode.ABORTED, "ABORTED", "operation aborted"
            )
            if failure.transient and op.state is OpState.FAILED:
                last = failure
                first_failure = first_failure or time.monotonic()
                if time.monotonic() - first_failure < budget:
                    time.sleep(random.uniform(0, delay))
                    delay = min(delay * 2, BACKOFF_CAP)
                    continue
            return self._fail(seq, JOB_REASON_BY_KIND[snapshot.kind], failure.message, failure, op)

    def _call(self, address: str, call: _StepCall, seq: int) -> AgentOperation:
        agents = self.ctx.agents
        kind = call.kind
        if kind is StepKind.CREATE_VOLUME:
            return agents.create_volume(
                address,
                call.op_id,
                call.domain_id,
                call.disk_id,
                call.volume_ids[0],
                parent_id=call.params.get("parent_id"),
                virtual_size=int(call.params.get("virtual_size", 0)),
                fmt=str(call.params.get("format", "COW")),
            )
        if kind is StepKind.DELETE_VOLUME:
            return agents.delete_volume(
                address, call.op_id, call.domain_id, call.disk_id, call.volume_ids[0]
            )
        if kind is StepKind.INIT_DOMAIN:
            return agents.init_domain(address, call.op_id, call.domain_id, call.params["name"])
        if kind is StepKind.MERGE_VOLUMES:
            op = agents.merge_volumes(
                address,
                call.op_id,
                call.domain_id,
                call.disk_id,
                call.volume_ids[0],
                call.volume_ids[1],
                call.params.get("base_parent_id"),
            )
            return self._poll(address, op, seq)
        if kind is StepKind.REBASE_VOLUME:
            op = agents.rebase_volume(
                address,
                call.op_id,
                call.domain_id,
                call.disk_id,
                call.volume_ids[0],
                call.params.get("new_parent_id"),
            )
            return self._poll(address, op, seq)
        raise NotImplementedError(f"step kind {kind} is not executable in v1")

    def _poll(self, address: str, op: AgentOperation, seq: int) -> AgentOperation:
        """Long-poll the agent (SPEC §5.5 cadence, 1 s backing off to 5 s): each call returns
        as soon as the operation ends, so its end is seen without waiting for a poll tick."""
        wait = LONG_POLL_START
        last_progress = -1
        while not op.terminal:
            if self.ctx.stopping.is_set():
                raise EngineStopping()
            op = self.ctx.agents.get_operation(address, op.op_id, wait_s=wait)
            if op.progress != last_progress:
                last_progress = op.progress
                self._record_progress(seq, op.progress)
            wait = min(wait * LONG_POLL_BACKOFF, LONG_POLL_CAP)
        return op

    def _record_progress(self, seq: int, progress: int) -> None:
        with self.ctx.tx() as (tx, _job):
            tx.jobs.step(self.ctx.job_id, seq).progress = progress

    def _done(self, seq: int, op: AgentOperation | None, *, record: bool) -> StepResult:
        if not record:
            return StepResult(True, op)
        with self.ctx.tx() as (tx, job):
            tx.jobs.record_done(self.ctx.job_id, {seq: done_result(op)})
            _recompute_progress(tx, job)
        return StepResult(True, op)

    def _fail(
        self,
        seq: int,
        reason: str,
        message: str,
        cause: AgentFailure | None,
        op: AgentOperation | None = None,
    ) -> StepResult:
        with self.ctx.tx() as (tx, job):
            step = tx.jobs.step(self.ctx.job_id, seq)
            error = step_error(reason, message, cause)
            check_step_transition(StepState(step.state), StepState.FAILED)
            step.state = StepState.FAILED
            step.error = error
            step.ended_at = utcnow()
            if op is not None:
                step.result = {"base_modified": op.base_modified, "direction": op.direction}
            _recompute_progress(tx, job)
        log.warning("step %s:%s failed: %s %s", self.ctx.job_id, seq, reason, message)
        return StepResult(False, op, error)


def done_result(op: AgentOperation | None) -> dict[str, Any] | None:
    """What a DONE step records of the agent's answer (None: nothing to record)."""
    if op is None:
        return None
    return {
        "already_absent": op.already_absent,
        "direction": op.direction,
        "base_modified": op.base_modified,
        "domain_free_bytes": op.domain_free_bytes,
        "domain_total_bytes": op.domain_total_bytes,
        "volume": None
        if op.volume is None
        else {
            "parent_id": op.volume.parent_id,
            "format": op.volume.format,
            "virtual_size": op.volume.virtual_size,
            "actual_size": op.volume.actual_size,
        },
    }


def _point(step: JobStep, host: Host | None) -> tuple[str | None, _StepCall]:
    """Record ``host`` as the step's host; the address to call (None: no UP host) and what
    to call it with."""
    if host is not None and host.id != step.host_id:
        step.host_id = host.id
    return (host.address if host is not None else None), _StepCall.of(step)


def _recompute_progress(tx: Repositories, job: Job) -> None:
    """Job progress = share of steps that reached a terminal state (kept below 100)."""
    steps = tx.jobs.steps(job.id)
    done = sum(1 for s in steps if s.state not in (StepState.PLANNED, StepState.STARTED))
    job.progress = min(99, int(100 * done / len(steps))) if steps else 0


@dataclass(frozen=True)
class Begun:
    """A step after ``StepRunner.begin``: already ended, or where and what to call."""

    seq: int
    ended: StepResult | None = None
    target: tuple[str | None, _StepCall] | None = None


class EngineStopping(Exception):
    """The engine is shutting down; the job stays claimed until its lease expires."""


@dataclass(frozen=True)
class _StepCall:
    kind: StepKind
    op_id: str
    domain_id: str
    disk_id: str
    volume_ids: list[str]
    params: dict[str, str]

    @classmethod
    def of(cls, step: JobStep) -> _StepCall:
        return cls(
            kind=StepKind(step.kind),
            op_id=step.op_id,
            domain_id=step.domain_id or "",
            disk_id=step.disk_id or "",
            volume_ids=list(step.volume_ids),
            params=dict(step.params),
        )
