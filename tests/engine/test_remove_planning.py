"""Planning of the merge procedure M(B) on a disk's tree model (SPEC §3.6), without storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from engine_svc.commands.admission import Envelope, new_job
from engine_svc.db.models import Job, Volume
from engine_svc.domain import JobKind
from engine_svc.saga.flows.merge import TreeModel, plan_unit

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DISK = "d0000000-0000-4000-8000-000000000000"
DOMAIN = "e0000000-0000-4000-8000-000000000000"


def _volume(name: str, parent: str | None, minute: int, *, garbage: bool = False) -> Volume:
    return Volume(
        id=name,
        disk_id=DISK,
        domain_id=DOMAIN,
        parent_id=parent,
        owner_snapshot_id=None,
        active=False,
        status="ILLEGAL" if garbage else "OK",
        pending_delete=garbage,
        format="COW",
        virtual_size=1 << 20,
        actual_size=0,
        created_at=T0 + timedelta(minutes=minute),
    )


def _job() -> Job:
    return new_job(JobKind.REMOVE_SNAPSHOT, Envelope(), "x", T0, vm_id=None, targets=[], params={})


def _plan(
    model: TreeModel, volumes: dict[str, Volume], base: str, job: Job, first: int = 1
) -> tuple[Any, list[tuple[str, list[str], dict[str, Any]]]]:
    unit, steps = plan_unit(
        job, model, volumes[base], owner_id="S", disk_alias="d", first_seq=first, host_id="h"
    )
    assert [s.seq for s in steps] == list(range(first, first + len(steps)))
    assert all(s.op_id == f"{job.id}:{s.seq}" for s in steps)
    return unit, [(s.kind, list(s.volume_ids), dict(s.params)) for s in steps]


def test_several_children_and_garbage() -> None:
    vols = {
        v.id: v
        for v in [
            _volume("r", None, 0),
            _volume("b", "r", 1),
            _volume("c2", "b", 3),
            _volume("c1", "b", 2),
            _volume("g", "b", 4, garbage=True),
            _volume("g2", "g", 5, garbage=True),
            _volume("x", "c1", 6),
        ]
    }
    model = TreeModel(vols.values())
    unit, steps = _plan(model, vols, "b", _job())
    assert steps == [
        ("DELETE_VOLUME", ["g2"], {}),
        ("DELETE_VOLUME", ["g"], {}),
        ("REBASE_VOLUME", ["c2"], {"new_parent_id": "c1"}),
        ("MERGE_VOLUMES", ["b", "c1"], {"base_parent_id": "r"}),
    ]
    assert unit.survivor_id == "c1" and unit.locked == ("b", "c1", "c2")
    assert {n.id: n.parent_id for n in model.nodes.values()} == {
        "r": None,
        "c1": "r",
        "c2": "c1",
        "x": "c1",
    }


def test_childless_volume_is_deleted() -> None:
    vols = {v.id: v for v in [_volume("r", None, 0), _volume("b", "r", 1), _volume("h", "r", 2)]}
    model = TreeModel(vols.values())
    unit, steps = _plan(model, vols, "b", _job(), first=7)
    assert steps == [("DELETE_VOLUME", ["b"], {})]
    assert unit.survivor_id is None and unit.locked == ("b",)


def test_root_base_and_sequential_planning() -> None:
    vols = {
        v.id: v
        for v in [
            _volume("r", None, 0),
            _volume("a", "r", 1),
            _volume("b", "a", 2),
            _volume("h", "b", 3),
        ]
    }
    model = TreeModel(vols.values())
    assert [model.depth(v) for v in ("r", "a", "b", "h")] == [0, 1, 2, 3]
    job = _job()
    _u1, first = _plan(model, vols, "b", job)
    _u2, second = _plan(model, vols, "a", job, first=2)
    _u3, third = _plan(model, vols, "r", job, first=3)
    assert first == [("MERGE_VOLUMES", ["b", "h"], {"base_parent_id": "a"})]
    assert second == [("MERGE_VOLUMES", ["a", "h"], {"base_parent_id": "r"})]
    assert third == [("MERGE_VOLUMES", ["r", "h"], {"base_parent_id": None})]
    assert {n.id: n.parent_id for n in model.nodes.values()} == {"h": None}
