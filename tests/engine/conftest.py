"""Engine suites run against SQLite and PostgreSQL, with real engine and agent processes.

PostgreSQL is the server named by DISKSNAP_TEST_PG (default: the local one as user
postgres). One migrated template database is created per test session; every test gets a
fresh clone, and all are dropped at the end. The PostgreSQL tests are never skipped: an
unreachable server fails them (``make test`` explains how to get one first).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine_svc.db.migrate import upgrade
from support.engine import Cluster, PgDatabases, pg_admin_url


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    """Throwaway databases on the test server; all dropped after the session."""
    dbs = PgDatabases(pg_admin_url())
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def pg_template(pg_databases: PgDatabases) -> str:
    """Name of a migrated template database to clone per test."""
    url = pg_databases.create()
    upgrade(url)
    return url.rsplit("/", 1)[1]


def _fresh_db(kind: str, tmp: Path, pg_databases: PgDatabases, pg_template: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'engine.db'}"
    return pg_databases.create(template=pg_template)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: PgDatabases, pg_template: str
) -> str:
    """A fresh, migrated database of each kind."""
    return _fresh_db(request.param, tmp_path, pg_databases, pg_template)


@pytest.fixture
def pg_url(pg_databases: PgDatabases, pg_template: str) -> str:
    """A fresh, migrated PostgreSQL database (multi-engine tests)."""
    return pg_databases.create(template=pg_template)


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[Cluster]:
    """One engine and three agents (hosts host0..host2, domains sd0..sd2)."""
    c = Cluster(tmp_path / "cluster", db_url).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_databases: PgDatabases,
    pg_template: str,
) -> Iterator[Cluster]:
    """A cluster shared by a module's tests (for suites that only add their own VMs)."""
    tmp = tmp_path_factory.mktemp(f"cluster-{request.param}")
    c = Cluster(tmp / "cluster", _fresh_db(request.param, tmp, pg_databases, pg_template))
    c.start()
    try:
        yield c
    finally:
        c.stop()
