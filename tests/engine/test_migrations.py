"""Alembic: an upgrade from empty equals the models (``alembic check``), on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine_svc.db.migrate import at_head, check, upgrade
from support.engine import PgDatabases


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_from_empty_matches_models(
    kind: str, tmp_path: Path, pg_databases: PgDatabases
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}" if kind == "sqlite" else pg_databases.create()
    assert not at_head(url)
    upgrade(url)
    assert at_head(url)
    check(url)  # raises if autogenerate would emit any operation
