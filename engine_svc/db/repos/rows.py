"""Core writes of model rows for hot paths, without the unit of work's flush.

A flush costs several times what one prebuilt executemany does; admission inserts a job,
its steps, a snapshot and its overlays in every CreateSnapshot.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Insert, Table, Update, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from engine_svc.db.models import Base


def conflict_insert(table: Table, *, postgres: bool) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT into ``table``, which has ``on_conflict_do_nothing`` and
    ``on_conflict_do_update`` (both databases speak ``ON CONFLICT``)."""
    return postgresql.insert(table) if postgres else sqlite.insert(table)


@functools.cache
def _insert_into(table: Table) -> Insert:
    return insert(table)


def insert_new(session: Session, objects: Sequence[Base]) -> None:
    """INSERT new ``objects`` (all of one model) now, as one executemany statement.

    Columns left unset take their scalar default, which is also set on the objects. The
    objects are not added to the session: later changes to them are not saved, so this is
    for rows written whole in the transaction that creates them.
    """
    if not objects:
        return
    table = cast(Table, type(objects[0]).__table__)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {}
        for column in table.columns:
            if column.key in obj.__dict__:
                row[column.key] = obj.__dict__[column.key]
                continue
            default = column.default
            value = default.arg if default is not None and default.is_scalar else None  # type: ignore[attr-defined]
            set_committed_value(obj, column.key, value)
            row[column.key] = value
        rows.append(row)
    session.execute(_insert_into(table), rows)


def sync_loaded(
    session: Session, model: type[Base], keys: Iterable[Any], values: Mapping[str, Any]
) -> None:
    """After a Core UPDATE wrote ``values`` to the rows with primary keys ``keys`` (a tuple
    for a composite key): make the instances of those rows this session has loaded show
    them too."""
    for key in keys:
        obj = session.identity_map.get(identity_key(model, key))
        if obj is not None:
            for column, value in values.items():
                set_committed_value(obj, column, value)


def swap_each(session: Session, stmt: Update, rows: Sequence[Mapping[str, Any]], what: str) -> None:
    """Run a compare-and-swap UPDATE once per row (one executemany); LookupError naming
    ``what`` unless every row matched, which rolls the caller's transaction back."""
    if session.execute(stmt, rows).rowcount != len(rows):  # type: ignore[attr-defined]
        raise LookupError(what)
