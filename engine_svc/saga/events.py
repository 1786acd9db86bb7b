"""In-process change notification for jobs, so waiters do not sleep on a poll interval.

Every runner transaction calls ``changed()`` after it commits. ``wait_change`` returns as
soon as something changed or the timeout passed; callers then re-read the DB, which stays
the source of truth (a job run by another engine replica is seen at the next timeout).
"""

from __future__ import annotations

import threading


class JobEvents:
    """A change counter with a condition variable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def changed(self) -> None:
        """Something about some job changed (committed)."""
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def mark(self) -> int:
        """The current change count, to pass to ``wait_change``."""
        with self._cond:
            return self._count

    def wait_change(self, since: int, timeout: float) -> int:
        """Block until the count moves past ``since`` or ``timeout`` seconds pass."""
        with self._cond:
            self._cond.wait_for(lambda: self._count != since, timeout)
            return self._count
