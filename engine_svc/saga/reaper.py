"""The garbage reaper (SPEC §5.9): deletes leaf garbage volumes and then their rows; it
also forgets jobs past their retention (SPEC §5.1).

Garbage appears when a compensation or cleanup could not delete a volume in time. Deleting
is idempotent by volume id on the agent (an absent file is success and is tombstoned), so
several engine replicas reaping at once are harmless; a disk locked by a running job is left
alone until the job ends.
"""

from __future__ import annotations

import logging
import threading

from engine_svc.agents.client import AgentCallError, AgentClient
from engine_svc.config import EngineSettings
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import disk_lock, new_id, utcnow

log = logging.getLogger(__name__)


# Jobs deleted per transaction when pruning, so a large backlog never holds one long lock.
PRUNE_BATCH = 500


def prune_jobs(db: Database, settings: EngineSettings) -> int:
    """Delete terminal jobs that ended more than ``job_retention`` ago; returns the count."""
    cutoff = utcnow() - settings.job_retention
    total = 0
    while True:
        with db.transaction() as tx:
            pruned = tx.jobs.prune(cutoff, PRUNE_BATCH)
        total += pruned
        if pruned < PRUNE_BATCH:
            return total


def reap_once(db: Database, agents: AgentClient, settings: EngineSettings) -> int:
    """Delete every reapable garbage volume; returns how many rows were removed."""
    now = utcnow()
    with db.transaction() as tx:
        candidates = []
        for volume in tx.volumes.garbage():
            if tx.locks.holders([disk_lock(volume.disk_id)]):
                continue
            if tx.volumes.children(volume.id):
                continue
            host = next(
                (
                    h
                    for _, h in tx.hosts.serving(volume.domain_id)
                    if host_is_up(h, now, settings.heartbeat_interval)
                ),
                None,
            )
            if host is not None:
                candidates.append((volume.id, volume.domain_id, volume.disk_id, host.address))
    removed = 0
    for volume_id, domain_id, disk_id, address in candidates:
        try:
            agents.delete_volume(address, new_id(), domain_id, disk_id, volume_id)
        except AgentCallError as exc:
            log.info("reaper could not delete %s yet: %s", volume_id, exc)
            continue
        with db.transaction() as tx:
            row = tx.volumes.get(volume_id)
            if row is not None and row.pending_delete:
                tx.volumes.delete(row)
                removed += 1
    return removed


class Reaper:
    """Runs ``reap_once`` and ``prune_jobs`` every ``reaper_interval`` on a daemon thread."""

    def __init__(self, db: Database, agents: AgentClient, settings: EngineSettings) -> None:
        self.db, self.agents, self.settings = db, agents, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> None:
        """Start reaping in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reaper_interval.total_seconds()):
            try:
                removed = reap_once(self.db, self.agents, self.settings)
                if removed:
                    log.info("reaped %d garbage volumes", removed)
                pruned = prune_jobs(self.db, self.settings)
                if pruned:
                    log.info("forgot %d jobs past their retention", pruned)
            except Exception:
                log.exception("reaper pass failed")
