"""Per-volume locks (SPEC §6.2): ``fcntl.flock`` on ``<state_dir>/locks/<volume_id>.lock``.

Exclusive for volumes written or deleted, shared for volumes only read. Locks are taken in
sorted id order, so two operations never wait on each other in a cycle. A lock not granted
within the timeout (5 s) is VOLUME_BUSY. flock locks belong to the open file, so two
operations in this process exclude each other exactly like two processes do, and a child given
the fds (``pass_fds``) keeps the locks while it lives.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from storage_agent.errors import AgentError, Reason

DEFAULT_TIMEOUT_S = 5.0
_POLL_MIN_S = 0.01
_POLL_MAX_S = 0.1


@dataclass(frozen=True)
class LockPlan:
    """The ids an operation locks; an id in both sets is locked exclusively."""

    exclusive: frozenset[str]
    shared: frozenset[str] = frozenset()

    @classmethod
    def of(cls, exclusive: Iterable[str | None], shared: Iterable[str | None] = ()) -> LockPlan:
        """A plan from ids, ignoring None entries."""
        ex = frozenset(i for i in exclusive if i)
        return cls(ex, frozenset(i for i in shared if i) - ex)

    def covers(self, other: LockPlan) -> bool:
        """True when holding this plan also grants everything ``other`` asks for."""
        return other.exclusive <= self.exclusive and other.shared <= (self.shared | self.exclusive)


class HeldLocks:
    """Locks granted by :meth:`VolumeLocks.acquire`; release them once (or use ``with``)."""

    def __init__(self, plan: LockPlan, fds: dict[str, int]) -> None:
        self.plan = plan
        self._fds = fds

    @property
    def fds(self) -> tuple[int, ...]:
        """The lock fds, to pass to child processes."""
        return tuple(self._fds.values())

    def release(self) -> None:
        """Close every lock fd (closing releases the flock once no child shares it)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> HeldLocks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class VolumeLocks:
    """The lock directory of one agent."""

    def __init__(self, state_dir: Path, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._dir = state_dir / "locks"
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.timeout = timeout

    def acquire(
        self,
        plan: LockPlan,
        *,
        forever: bool = False,
        cancel: threading.Event | None = None,
    ) -> HeldLocks:
        """Take every lock of ``plan`` in sorted id order.

        Waits up to the timeout, or with ``forever`` until granted or ``cancel`` is set. On
        failure the locks taken so far are released and VOLUME_BUSY is raised.
        """
        deadline = None if forever else time.monotonic() + self.timeout
        held = HeldLocks(plan, {})
        try:
            for volume_id in sorted(plan.exclusive | plan.shared):
                mode = fcntl.LOCK_EX if volume_id in plan.exclusive else fcntl.LOCK_SH
                held._fds[volume_id] = self._lock(volume_id, mode, deadline, cancel)
        except BaseException:
            held.release()
            raise
        return held

    def _lock(
        self, volume_id: str, mode: int, deadline: float | None, cancel: threading.Event | None
    ) -> int:
        path = self._dir / f"{volume_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        delay = _POLL_MIN_S
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                pass
            except BaseException:
                os.close(fd)
                raise
            expired = deadline is not None and time.monotonic() >= deadline
            if expired or (cancel is not None and cancel.is_set()):
                os.close(fd)
                raise AgentError(
                    Reason.VOLUME_BUSY,
                    f"volume {volume_id} is locked by another operation",
                    {"volume_id": volume_id},
                )
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)
