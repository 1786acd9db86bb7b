"""What a running job needs: the database, the agents, settings and its lease."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from engine_svc.agents.client import AgentClient
from engine_svc.commands.admission import Started
from engine_svc.config import EngineSettings
from engine_svc.db.models import Host, Job, JobStep
from engine_svc.db.repos import Repositories
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import JobState, StepKind, utcnow
from engine_svc.queries import JobView
from engine_svc.saga.events import JobEvents


@dataclass
class JobContext:
    """One claimed job: every write goes through ``tx()``, which checks the lease.

    ``claimed_state`` is the job's state when this worker claimed it (never PENDING: the
    claim starts a pending job), where its flow resumes from. ``started`` is set when the
    job was claimed in its admission transaction: what that transaction wrote. The first
    ``tx()`` of such a job uses those objects instead of reading the job and its steps back.
    """

    db: Database
    agents: AgentClient
    settings: EngineSettings
    job_id: str
    epoch: int
    claimed_state: JobState
    stopping: threading.Event
    events: JobEvents
    started: Started | None = None
    _unread: Started | None = field(default=None, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._unread = self.started

    @contextmanager
    def tx(self) -> Iterator[tuple[Repositories, Job]]:
        """A transaction that first row-locks the job and proves we still hold its lease.

        Runner transactions are not durable one by one (see ``Database.transaction``);
        waiters in this process are told about each commit.
        """
        with self._guard:
            unread, self._unread = self._unread, None
        with self.db.transaction(durable=False) as tx:
            if unread is None:
                job = tx.jobs.fence(self.job_id, self.epoch)
            else:
                job = tx.jobs.fence_known(unread.job, unread.steps, self.epoch)
            yield tx, job
            terminal = JobState(job.state).terminal
            steps = tx.jobs.steps_read(job.id) if terminal else None
        finished = JobView(job, list(steps)) if steps is not None else None
        self.events.changed(self.job_id, terminal=terminal, finished=finished)

    def host_for_step(self, tx: Repositories, step: JobStep) -> Host | None:
        """The UP host to run a step on: its own host for INIT_DOMAIN (the domain is not
        served yet), otherwise any UP host serving the step's domain, preferring its own."""
        if step.kind == StepKind.INIT_DOMAIN:
            host = tx.hosts.get(step.host_id or "")
            if host is not None and host_is_up(host, utcnow(), self.settings.heartbeat_interval):
                return host
            return None
        return self.up_host_for(tx, step.domain_id or "", step.host_id)

    def up_host_for(self, tx: Repositories, domain_id: str, preferred: str | None) -> Host | None:
        """The preferred host if UP and serving the domain, else another UP host serving it."""
        now = utcnow()
        candidates = [
            h
            for _, h in tx.hosts.serving(domain_id)
            if host_is_up(h, now, self.settings.heartbeat_interval)
        ]
        for host in candidates:
            if host.id == preferred:
                return host
        return candidates[0] if candidates else None
