"""In-process change notification for jobs, so waiters neither sleep on a poll interval
nor re-read the DB for changes to other jobs.

Every runner transaction calls ``changed(job_id, terminal=…)`` after it commits.
``wait_change`` returns as soon as that job changed or the timeout passed; callers then
re-read the DB, which stays the source of truth (a job run by another engine replica is
seen at the next timeout).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

# Jobs whose last change is remembered; older ones fall back to the DB poll.
REMEMBERED_JOBS = 10_000


class JobEvents:
    """Per-job change counters and terminal flags under one condition variable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: OrderedDict[str, tuple[int, bool]] = OrderedDict()

    def changed(self, job_id: str, *, terminal: bool) -> None:
        """A change to ``job_id`` was committed; ``terminal`` if it is now finished."""
        with self._cond:
            count, _ = self._jobs.pop(job_id, (0, False))
            self._jobs[job_id] = (count + 1, terminal)
            if len(self._jobs) > REMEMBERED_JOBS:
                self._jobs.popitem(last=False)
            self._cond.notify_all()

    def last(self, job_id: str) -> tuple[int, bool]:
        """The job's (change count, terminal) now; pass the count to ``wait_change``."""
        with self._cond:
            return self._jobs.get(job_id, (0, False))

    def wait_change(self, job_id: str, since: int, timeout: float) -> tuple[int, bool]:
        """Block until the job's count moves past ``since`` or ``timeout`` seconds pass.

        Returns the (count, terminal) seen last; an unchanged count means the timeout.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._jobs.get(job_id, (0, False))[0] != since, timeout)
            return self._jobs.get(job_id, (0, False))
