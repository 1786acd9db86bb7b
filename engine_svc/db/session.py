"""Database engines for SQLite (embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, synchronous_commit: bool = True) -> Engine:
    """Create an Engine tuned for the dialect.

    SQLite: WAL with synchronous=NORMAL (a commit survives the engine being killed; an OS
    crash may lose the newest commits, which the runner re-derives from its idempotent
    steps), a busy timeout, foreign keys on, and every transaction begins IMMEDIATE so that
    concurrent writers queue on the database lock instead of failing on upgrade.

    PostgreSQL: ``synchronous_commit=False`` gives an engine for bookkeeping commits that
    need not wait for the WAL flush (see ``Database.transaction``).
    """
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {} if synchronous_commit else {"options": "-c synchronous_commit=off"}
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
    )
