"""The unit of work: it owns the transaction; repositories only use its session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from engine_svc.db.repos import Repositories
from engine_svc.errors import Unavailable


class Database:
    """Opens transactions on one SQLAlchemy engine."""

    def __init__(self, engine: Engine, bookkeeping: Engine | None = None) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=True)
        self._bookkeeping = sessionmaker(
            bookkeeping or engine, expire_on_commit=False, autoflush=True
        )

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        bookkeeping = self._bookkeeping.kw["bind"]
        if bookkeeping is not self.engine:
            bookkeeping.dispose()

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL (row locks, SKIP LOCKED); False on SQLite."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Repositories]:
        """One transaction: commits when the block ends, rolls back if it raises.

        A lost database connection surfaces as ``DATABASE_UNAVAILABLE`` (retry with the same
        request_id); nothing of the transaction was committed.

        ``durable=False`` is for the job runner's own bookkeeping, on the ``bookkeeping``
        engine (PostgreSQL: ``synchronous_commit = off``): losing the last such commits in a
        database crash only rewinds a job to an earlier recorded step, which is re-issued
        with the same op_id, and any later durable commit (an admission) flushes them anyway.
        """
        session: Session = (self._sessions if durable else self._bookkeeping)()
        try:
            yield Repositories(session, postgres=self.is_postgres)
            session.commit()
        except DBAPIError as exc:
            session.rollback()
            if exc.connection_invalidated or _is_connection_error(exc):
                raise Unavailable(
                    "DATABASE_UNAVAILABLE", f"the database is unreachable: {exc.orig}"
                ) from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def _is_connection_error(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__
    return name in {"OperationalError", "InterfaceError"} and "lock" not in str(exc.orig).lower()
