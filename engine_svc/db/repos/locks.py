"""Lock rows (SPEC §5.8): acquired all-or-nothing with INSERT … ON CONFLICT DO NOTHING."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.orm import Session

from engine_svc.db.models import Job, Lock
from engine_svc.db.repos.rows import conflict_insert
from engine_svc.domain import ACTIVE_JOB_STATES

# Core statements on the table: taking and releasing locks loads no Lock objects.
LOCKS = cast(Table, Lock.__table__)
_RELEASE_JOB = delete(LOCKS).where(LOCKS.c.job_id == bindparam("job_id"))


class LockRepository:
    """Lock rows."""

    def __init__(self, session: Session, *, postgres: bool) -> None:
        self.session = session
        self.postgres = postgres

    def acquire(self, keys: Iterable[str], job_id: str, job_kind: str, now: datetime) -> list[str]:
        """Insert every key not held; returns the keys another job holds.

        The caller raises on a non-empty result, so its transaction rolls back and no key
        stays taken (all-or-nothing).
        """
        wanted = sorted(set(keys))
        if not wanted:
            return []
        # One cached statement, which insertmanyvalues sends as a single multi-row INSERT.
        stmt = (
            conflict_insert(LOCKS, postgres=self.postgres)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(LOCKS.c.key)
        )
        rows = [
            {"key": k, "job_id": job_id, "job_kind": job_kind, "acquired_at": now} for k in wanted
        ]
        taken = set(self.session.scalars(stmt, rows))
        return [key for key in wanted if key not in taken]

    def holders(self, keys: Iterable[str]) -> dict[str, Lock]:
        """The lock rows among ``keys``, by key."""
        ids = sorted(set(keys))
        if not ids:
            return {}
        return {lk.key: lk for lk in self.session.scalars(select(Lock).where(Lock.key.in_(ids)))}

    def of_job(self, job_id: str) -> Sequence[Lock]:
        """The locks a job holds."""
        return self.session.scalars(select(Lock).where(Lock.job_id == job_id)).all()

    def release_job(self, job_id: str) -> None:
        """Delete every lock of a job (in its terminal transaction)."""
        self.session.execute(_RELEASE_JOB, {"job_id": job_id})

    def orphans(self) -> Sequence[Lock]:
        """Locks whose job is terminal or missing (a defect; removed at startup)."""
        live = select(Job.id).where(Job.state.in_(sorted(ACTIVE_JOB_STATES)))
        return self.session.scalars(select(Lock).where(Lock.job_id.not_in(live))).all()

    def delete(self, lock: Lock) -> None:
        """Delete one lock row."""
        self.session.delete(lock)

    def holders_all(self) -> Sequence[Lock]:
        """Every lock row."""
        return self.session.scalars(select(Lock).order_by(Lock.key)).all()
