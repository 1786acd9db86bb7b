"""Per-volume flocks: modes, timeout, cancel, and children holding inherited locks."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from storage_agent.errors import AgentError, Reason
from storage_agent.locks import LockPlan, VolumeLocks
from unit.agent.storage_helpers import new_id


@pytest.fixture
def locks(tmp_path: Path) -> VolumeLocks:
    return VolumeLocks(tmp_path, timeout=0.2)


def busy(locks: VolumeLocks, plan: LockPlan) -> bool:
    try:
        locks.acquire(plan).release()
    except AgentError as err:
        assert err.reason is Reason.VOLUME_BUSY and err.retryable
        return True
    return False


def test_plan_prefers_exclusive_and_drops_none() -> None:
    a, b = new_id(), new_id()
    plan = LockPlan.of([a, None], [a, b, None])
    assert (plan.exclusive, plan.shared) == (frozenset({a}), frozenset({b}))
    assert plan.covers(LockPlan.of([a], [b]))
    assert plan.covers(LockPlan.of([], [a]))
    assert not plan.covers(LockPlan.of([b]))


def test_modes_conflict_as_expected(locks: VolumeLocks) -> None:
    volume = new_id()
    with locks.acquire(LockPlan.of([], [volume])):
        assert not busy(locks, LockPlan.of([], [volume]))
        assert busy(locks, LockPlan.of([volume]))
    with locks.acquire(LockPlan.of([volume])):
        assert busy(locks, LockPlan.of([], [volume]))
    assert not busy(locks, LockPlan.of([volume]))


def test_a_failed_acquire_releases_what_it_took(locks: VolumeLocks) -> None:
    first, second = sorted([new_id(), new_id()])
    with locks.acquire(LockPlan.of([second])):
        assert busy(locks, LockPlan.of([first, second]))
        assert not busy(locks, LockPlan.of([first]))


def test_waiting_forever_stops_on_cancel(locks: VolumeLocks) -> None:
    volume = new_id()
    cancel = threading.Event()
    with locks.acquire(LockPlan.of([volume])):
        threading.Timer(0.3, cancel.set).start()
        with pytest.raises(AgentError) as caught:
            locks.acquire(LockPlan.of([volume]), forever=True, cancel=cancel)
    assert caught.value.reason is Reason.VOLUME_BUSY


def test_a_child_given_the_fds_keeps_the_lock(locks: VolumeLocks) -> None:
    volume = new_id()
    held = locks.acquire(LockPlan.of([volume]))
    child = subprocess.Popen(["sleep", "30"], pass_fds=held.fds)
    try:
        held.release()
        assert busy(locks, LockPlan.of([volume]))
    finally:
        child.kill()
        child.wait()
    assert not busy(locks, LockPlan.of([volume]))
