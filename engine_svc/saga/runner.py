"""The job runner: claims jobs by lease and drives them with their flow (SPEC §5.7).

Every engine process runs one. It claims non-terminal jobs whose lease is free or expired
(``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL), renews the leases it holds, and runs
each job's flow on a worker thread. A job whose process died is claimed again by whichever
engine sees its lease expire first and resumed from what the DB records.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import update

from engine_svc.agents.client import AgentClient
from engine_svc.commands.admission import Lease, Started
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job
from engine_svc.db.repos.jobs import Claim, LeaseLost
from engine_svc.db.uow import Database
from engine_svc.domain import ACTIVE_JOB_STATES, JobKind, JobState, new_id, utcnow
from engine_svc.errors import Unavailable
from engine_svc.saga.context import JobContext
from engine_svc.saga.events import JobEvents
from engine_svc.saga.flows import FLOWS
from engine_svc.saga.steps import EngineStopping

log = logging.getLogger(__name__)


class JobRunner:
    """Claims, runs and renews jobs on a pool of worker threads."""

    def __init__(self, db: Database, agents: AgentClient, settings: EngineSettings) -> None:
        self.db = db
        self.agents = agents
        self.settings = settings
        self.owner = settings.engine_id or f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="job")
        self._held: dict[str, int] = {}
        self._guard = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.events = JobEvents()

    def start(self) -> None:
        """Clean up after a crash, then start claiming and renewing."""
        self._recover_locks()
        if not self.db.is_postgres:
            self._expire_all_leases()
        for target in (self._claim_loop, self._renew_loop):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """A job was admitted: claim now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; running flows stop at their next step boundary."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _recover_locks(self) -> None:
        with self.db.transaction() as tx:
            for lock in tx.locks.orphans():
                log.error("removing lock %s of finished job %s (a defect)", lock.key, lock.job_id)
                tx.locks.delete(lock)

    def _expire_all_leases(self) -> None:
        # Embedded SQLite allows one engine process, so leases of a previous run are stale.
        with self.db.transaction() as tx:
            tx.session.execute(
                update(Job)
                .where(Job.state.in_(sorted(ACTIVE_JOB_STATES)))
                .values(lease_expires_at=None)
            )

    def _claim_loop(self) -> None:
        interval = self.settings.poll_interval.total_seconds()
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._claim_some()
            except Unavailable as exc:
                log.warning("cannot claim jobs: %s", exc)
            except Exception:
                log.exception("claiming jobs failed")
            self._wake.wait(interval)

    def run_admitted(self, job_id: str) -> None:
        """Claim a job this process just admitted and run it now, without waiting for the
        claim loop; if every worker is busy, the claim loop takes it when one frees up."""
        if self._free_workers() <= 0:
            self._wake.set()
            return
        now = utcnow()
        try:
            with self.db.transaction(durable=False) as tx:
                claim = tx.jobs.claim(job_id, self.owner, now, now + self.settings.lease)
        except Unavailable as exc:
            # The job is admitted (committed); the claim loop starts it once the DB is back.
            log.warning("cannot start job %s now: %s", job_id, exc)
            self._wake.set()
            return
        if claim is not None:
            self._submit(claim)

    def lease_offer(self) -> Lease | None:
        """A lease for admission to claim its job with, while a worker is free."""
        if self._free_workers() <= 0:
            return None
        return Lease(self.owner, self.settings.lease)

    def run_started(self, started: Started) -> None:
        """Run a job its admission claimed for this engine (``lease_offer``)."""
        job = started.job
        claim = Claim(job.id, job.lease_epoch, JobState(job.state), JobKind(job.kind))
        self._submit(claim, started)

    def _free_workers(self) -> int:
        with self._guard:
            return self.settings.worker_threads - len(self._held)

    def _claim_some(self) -> None:
        free = self._free_workers()
        if free <= 0:
            return
        now = utcnow()
        claimed: list[Claim] = []
        with self.db.transaction(durable=False) as tx:
            for job_id in tx.jobs.claimable(now, free):
                claim = tx.jobs.claim(job_id, self.owner, now, now + self.settings.lease)
                if claim is not None:
                    claimed.append(claim)
        for claim in claimed:
            self._submit(claim)

    def _submit(self, claim: Claim, started: Started | None = None) -> None:
        with self._guard:
            self._held[claim.job_id] = claim.epoch
        self._pool.submit(self._execute, claim, started)

    def _execute(self, claim: Claim, started: Started | None) -> None:
        job_id = claim.job_id
        ctx = JobContext(
            self.db,
            self.agents,
            self.settings,
            job_id,
            claim.epoch,
            claim.state,
            self._stopping,
            self.events,
            started,
        )
        try:
            FLOWS[claim.kind](ctx)
        except LeaseLost:
            log.warning("lost the lease of job %s; another engine continues it", job_id)
        except EngineStopping:
            log.info("job %s left for recovery: the engine is stopping", job_id)
        except Exception:
            # The lease lapses and the job is resumed from its recorded steps.
            log.exception("job %s failed unexpectedly; it will be resumed", job_id)
        finally:
            with self._guard:
                self._held.pop(job_id, None)

    def _renew_loop(self) -> None:
        period = self.settings.lease.total_seconds() / 3
        while not self._stopping.wait(period):
            with self._guard:
                held = dict(self._held)
            for job_id, epoch in held.items():
                try:
                    with self.db.transaction() as tx:
                        ok = tx.jobs.renew(job_id, epoch, utcnow() + self.settings.lease)
                except Exception:
                    log.exception("renewing the lease of job %s failed", job_id)
                    continue
                if not ok:
                    with self._guard:
                        self._held.pop(job_id, None)
