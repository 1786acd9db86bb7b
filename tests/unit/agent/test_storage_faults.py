"""Fault rules: matching, consumption and actions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from storage_agent.errors import AgentError, Code, Reason
from storage_agent.faults import FaultInjector, FaultTarget
from unit.agent.storage_helpers import new_id

DISK, VOLUME = new_id(), new_id()
TARGET = FaultTarget("DeleteVolume", DISK, frozenset({VOLUME}))


def injector(tmp_path: Path, rules: list[dict[str, object]]) -> FaultInjector:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(rules))
    return FaultInjector(path)


def test_disabled_or_missing_file_never_fires(tmp_path: Path) -> None:
    assert FaultInjector(None).take(TARGET, "before") is None
    assert FaultInjector(tmp_path / "absent.json").take(TARGET, "before") is None


@pytest.mark.parametrize(
    ("rule", "fires"),
    [
        ({"op": "DeleteVolume"}, True),
        ({"op": "DeleteVolume", "disk_id": DISK, "volume_id": VOLUME}, True),
        ({"op": "CreateVolume"}, False),
        ({"op": "DeleteVolume", "disk_id": new_id()}, False),
        ({"op": "DeleteVolume", "volume_id": new_id()}, False),
        ({"op": "DeleteVolume", "when": "after"}, False),
        ({"op": "DeleteVolume", "times": 0}, False),
    ],
)
def test_matching(tmp_path: Path, rule: dict[str, object], fires: bool) -> None:
    assert (injector(tmp_path, [rule]).take(TARGET, "before") is not None) is fires


def test_times_is_consumed_in_the_file(tmp_path: Path) -> None:
    faults = injector(tmp_path, [{"op": "DeleteVolume", "times": 2, "code": "UNAVAILABLE"}])
    for _ in range(2):
        with pytest.raises(AgentError) as caught:
            faults.inject(TARGET, "before")
        assert caught.value.reason is Reason.INJECTED_FAULT
        assert caught.value.code is Code.UNAVAILABLE and caught.value.retryable
    faults.inject(TARGET, "before")
    assert json.loads((tmp_path / "faults.json").read_text())[0]["times"] == 0


def test_delay(tmp_path: Path) -> None:
    faults = injector(tmp_path, [{"op": "DeleteVolume", "action": "delay", "seconds": 0.2}])
    start = time.monotonic()
    faults.inject(TARGET, "before")
    assert time.monotonic() - start >= 0.2


def test_a_broken_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text("{not json")
    assert FaultInjector(path).take(TARGET, "before") is None
