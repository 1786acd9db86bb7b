"""JobRunner.run_admitted when the database goes away right after an admission committed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine_svc.agents.client import GrpcAgentClient
from engine_svc.commands.admission import Envelope, new_job
from engine_svc.config import EngineSettings
from engine_svc.db.migrate import upgrade
from engine_svc.db.repos import Repositories
from engine_svc.db.session import make_engine
from engine_svc.db.uow import Database
from engine_svc.domain import JobKind, JobState, utcnow
from engine_svc.errors import Unavailable
from engine_svc.saga.runner import JobRunner


class _BookkeepingDown(Database):
    """A real SQLite database whose runner (non-durable) transactions fail as if the
    server were unreachable."""

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Repositories]:
        if not durable:
            raise Unavailable("DATABASE_UNAVAILABLE", "the database is unreachable")
        with super().transaction() as tx:
            yield tx


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'engine.db'}"
    upgrade(url)
    return url


def test_an_admitted_job_is_left_to_the_claim_loop(db_url: str) -> None:
    healthy = Database(make_engine(db_url))
    job = new_job(
        JobKind.CREATE_SNAPSHOT, Envelope(), "digest", utcnow(), vm_id=None, targets=[], params={}
    )
    with healthy.transaction() as tx:
        tx.jobs.add(job)
    runner = JobRunner(
        _BookkeepingDown(make_engine(db_url)), GrpcAgentClient(), EngineSettings(db_url=db_url)
    )

    runner.run_admitted(job.id)  # no exception: the admission already committed

    assert runner._wake.is_set()  # the claim loop is asked to try again
    with healthy.transaction() as tx:
        stored = tx.jobs.get(job.id)
        assert stored is not None
        assert (stored.state, stored.lease_owner, stored.lease_epoch) == (
            JobState.PENDING,
            None,
            0,
        )
