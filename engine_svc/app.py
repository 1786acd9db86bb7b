"""The engine application: the pieces a request handler needs, wired once."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine_svc.agents.client import AgentClient
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job
from engine_svc.db.uow import Database
from engine_svc.queries import JobView, get_job, job_version
from engine_svc.saga.runner import JobRunner

# Jobs run by another replica are seen at this interval; ours as soon as they change.
WAIT_POLL_S = 0.25


@dataclass
class EngineApp:
    """Database, agents, settings and the job runner of one engine process."""

    db: Database
    agents: AgentClient
    settings: EngineSettings
    runner: JobRunner

    def admitted(self, job: Job, wait_timeout_s: int) -> JobView:
        """After admission: wake the runner, optionally wait, return the job as it stands."""
        self.runner.wake()
        if wait_timeout_s > 0:
            self.wait(job.id, wait_timeout_s)
        return get_job(self.db, job.id)

    def wait(self, job_id: str, timeout_s: float) -> None:
        """Block until the job is terminal or ``timeout_s`` passed."""
        end = time.monotonic() + timeout_s
        events = self.runner.events
        while (left := end - time.monotonic()) > 0:
            mark = events.mark()
            _version, terminal = job_version(self.db, job_id)
            if terminal:
                return
            events.wait_change(mark, min(left, WAIT_POLL_S))
