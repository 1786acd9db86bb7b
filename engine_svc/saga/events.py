"""In-process change notification for jobs, so waiters neither sleep on a poll interval
nor re-read the DB for changes to other jobs.

Every runner transaction calls ``changed(job_id, terminal=…)`` after it commits; the one
that finishes a job also hands over the finished job when it read all of its steps, so the
request that waits for it answers without reading it back.
``wait_change`` returns as soon as that job changed or the timeout passed; callers then
re-read the DB, which stays the source of truth (a job run by another engine replica is
seen at the next timeout).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from engine_svc.queries import JobView

# Jobs whose last change is remembered; older ones fall back to the DB poll.
REMEMBERED_JOBS = 10_000


class JobEvents:
    """Per-job change counters and terminal flags under one condition variable, and for the
    jobs a waiter asked for, the finished job as its last transaction committed it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: OrderedDict[str, tuple[int, bool]] = OrderedDict()
        self._finished: dict[str, JobView | None] = {}

    def changed(self, job_id: str, *, terminal: bool, finished: JobView | None = None) -> None:
        """A change to ``job_id`` was committed; ``terminal`` if it is now finished, and
        ``finished``: the job and all its steps as committed, when the transaction had them."""
        with self._cond:
            count, _ = self._jobs.pop(job_id, (0, False))
            self._jobs[job_id] = (count + 1, terminal)
            if len(self._jobs) > REMEMBERED_JOBS:
                self._jobs.popitem(last=False)
            if finished is not None and job_id in self._finished:
                self._finished[job_id] = finished
            self._cond.notify_all()

    def want_finished(self, job_id: str) -> None:
        """Keep the finished job for ``take_finished`` (call before waiting)."""
        with self._cond:
            self._finished[job_id] = None

    def take_finished(self, job_id: str) -> JobView | None:
        """The finished job ``changed`` was given since ``want_finished``, once (None: read it
        from the DB); it also ends the wish."""
        with self._cond:
            return self._finished.pop(job_id, None)

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
