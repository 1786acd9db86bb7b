"""Alembic environment: online migrations against the configured URL."""

from __future__ import annotations

from alembic import context

from engine_svc.db.models import Base
from engine_svc.db.session import make_engine

config = context.config


def run() -> None:
    """Run migrations in one transaction per upgrade."""
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
