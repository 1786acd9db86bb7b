"""Fault injection for tests; off unless the agent runs with ``--allow-fault-injection``.

When on, every request that carries an ``op_id`` reads the JSON file named by
``DISKSNAP_AGENT_FAULTS`` (missing file: no faults). It holds a list of rules::

    {"op": "MergeVolumes", "disk_id": "<uuid>" | "*", "volume_id": "<uuid>" (optional),
     "action": "error" | "delay" | "crash", "code": "INTERNAL" | "UNAVAILABLE",
     "seconds": 1.5, "times": 1, "when": "before" | "after"}

The first rule that matches and is not spent fires. ``times`` is decremented in the file
(atomically, under a flock) *before* the rule acts, so a crash rule with ``times: 1`` does not
fire again after the restart; absent ``times`` means unlimited. Where "before" and "after" are
for each kind of operation is documented in :mod:`storage_agent.operations`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage_agent.errors import AgentError, Code, Reason
from storage_agent.layout import atomic_write_json

CRASH_EXIT_CODE = 137
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultTarget:
    """What a request touches, for rule matching."""

    op: str
    disk_id: str | None = None
    volume_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FaultRule:
    """One parsed rule."""

    action: str
    when: str
    code: Code
    seconds: float

    def fire(self) -> None:
        """Act: raise INJECTED_FAULT, sleep, or kill the process as a crash would."""
        if self.action == "delay":
            time.sleep(self.seconds)
        elif self.action == "crash":
            _log.warning("fault injection: crashing (%s)", self.when)
            os._exit(CRASH_EXIT_CODE)
        else:
            raise AgentError(
                Reason.INJECTED_FAULT,
                f"injected fault ({self.when})",
                {"when": self.when},
                code=self.code,
            )


class FaultInjector:
    """Reads and consumes fault rules; a disabled injector never fires."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def take(self, target: FaultTarget, when: str) -> FaultRule | None:
        """Consume and return the first live rule matching ``target`` at ``when``."""
        if self._path is None or not self._path.exists():
            return None
        lock_fd = os.open(
            self._path.with_name(self._path.name + ".lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                rules = json.loads(self._path.read_text())
            except FileNotFoundError:
                return None
            except ValueError as exc:
                _log.warning("fault file %s is not valid JSON: %s", self._path, exc)
                return None
            if not isinstance(rules, list):
                _log.warning("fault file %s must hold a JSON list", self._path)
                return None
            for rule in rules:
                if isinstance(rule, dict) and _matches(rule, target, when):
                    if "times" in rule:
                        rule["times"] = int(rule["times"]) - 1
                        atomic_write_json(self._path, rules)
                    return _parse(rule, when)
            return None
        finally:
            os.close(lock_fd)

    def inject(self, target: FaultTarget, when: str) -> None:
        """Fire the matching rule at ``when``, if any."""
        rule = self.take(target, when)
        if rule is not None:
            rule.fire()


def _matches(rule: dict[str, Any], target: FaultTarget, when: str) -> bool:
    if rule.get("op") != target.op or rule.get("when", "before") != when:
        return False
    if "times" in rule and int(rule["times"]) <= 0:
        return False
    disk = rule.get("disk_id", "*")
    if disk != "*" and disk != target.disk_id:
        return False
    volume = rule.get("volume_id")
    return volume is None or volume == "*" or volume in target.volume_ids


def _parse(rule: dict[str, Any], when: str) -> FaultRule:
    code = Code.UNAVAILABLE if rule.get("code") == "UNAVAILABLE" else Code.INTERNAL
    action = rule.get("action", "error")
    if action not in ("error", "delay", "crash"):
        _log.warning("unknown fault action %r; treated as error", action)
        action = "error"
    return FaultRule(action, when, code, float(rule.get("seconds", 0)))
