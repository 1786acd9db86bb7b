"""The engine application: the pieces a request handler needs, wired once."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from engine_svc.agents.client import AgentClient
from engine_svc.commands.admission import Started
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job
from engine_svc.db.uow import Database
from engine_svc.domain import JobState
from engine_svc.queries import JobView, get_job, job_version
from engine_svc.saga.runner import JobRunner

# Jobs run by another replica are seen at this interval; ours as soon as they change.
WAIT_POLL_S = 0.25


@dataclass
class EngineApp:
    """Database, agents, settings and the job runner of one engine process.

    ``shutting_down`` is set when the engine starts draining: new mutations are refused
    with ENGINE_SHUTTING_DOWN and waiting calls return the job as it stands.
    """

    db: Database
    agents: AgentClient
    settings: EngineSettings
    runner: JobRunner
    shutting_down: threading.Event = field(default_factory=threading.Event)

    def admitted(self, job: Job, wait_timeout_s: int, *, started: Started | None = None) -> JobView:
        """After admission: start the job here (``started``: admission claimed it already),
        optionally wait, return the job as it stands."""
        # Once started, ``job`` belongs to the runner (its first transaction takes it over).
        job_id, state = job.id, JobState(job.state)
        waiting = wait_timeout_s > 0 and not state.terminal
        if waiting:
            self.runner.events.want_finished(job_id)
        if started is not None:
            self.runner.run_started(started)
        elif state is JobState.PENDING:
            self.runner.run_admitted(job_id)
        if waiting:
            self.wait(job_id, wait_timeout_s)
            finished = self.runner.events.take_finished(job_id)
            if finished is not None:
                return finished
        return get_job(self.db, job_id)

    def wait(self, job_id: str, timeout_s: float) -> None:
        """Block until the job is terminal or ``timeout_s`` passed."""
        end = time.monotonic() + timeout_s
        events = self.runner.events
        mark, terminal = events.last(job_id)
        while not terminal and (left := end - time.monotonic()) > 0:
            if self.shutting_down.is_set():
                return
            count, terminal = events.wait_change(job_id, mark, min(left, WAIT_POLL_S))
            if count == mark:  # quiet here: another replica may be running it
                terminal = job_version(self.db, job_id)[1]
            mark = count
