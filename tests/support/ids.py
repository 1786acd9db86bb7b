"""Ids as the engine chooses them: lowercase canonical UUIDs (SPEC conventions)."""

from __future__ import annotations

import uuid

NIL_UUID = "00000000-0000-0000-0000-000000000000"


def new_uuid() -> str:
    """A fresh lowercase canonical UUID string."""
    return str(uuid.uuid4())


def new_op_id(step: int | None = None, *, undo: bool = False) -> str:
    """A fresh operation id: a UUID, optionally `:<step>` and `:undo` (agent op_id format)."""
    op_id = new_uuid()
    if step is not None:
        op_id += f":{step}"
    if undo:
        op_id += ":undo"
    return op_id
