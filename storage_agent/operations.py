"""Operation records keyed by ``op_id`` (SPEC §6.4) and the runner that executes them.

Records are JSON files in ``<state_dir>/ops/`` (``:`` becomes ``_`` in file names), written
atomically. The same ``op_id`` with identical parameters returns the existing record and never
re-executes a terminal one; different parameters are OPERATION_ID_REUSED.

Short operations run inside the call: the caller gets the DONE record or the AgentError (a
replay of a recorded failure raises the same error again). Only terminal outcomes are
persisted, and transient failures (VOLUME_BUSY, UNAVAILABLE) not even those, so a retry
re-executes. Every short operation is idempotent by volume id, so a crash mid-way needs no
record either, and its terminal record is written without fsync: the effect itself is durable
on storage, and a record lost with the machine's power only makes a replay re-derive it.

Long operations take their locks inside the call (VOLUME_BUSY is an RPC error and nothing is
recorded), persist the record as PENDING, and run on a small thread pool; their failures are
recorded in the record's ``error``. A record still PENDING or RUNNING when the agent starts is
resumed by re-executing it (every long operation is written to be resumable). A shutdown
interrupts running operations without recording an outcome, for the same reason.

A terminal outcome becomes visible (reply, GetOperation) only once its record is saved. Work
handed to :meth:`OpContext.defer` (the background unlink of a big dropped file) starts after
that save, so the record's fsyncs never queue behind it.

Fault injection points (:mod:`storage_agent.faults`): "before" fires before anything is
recorded or touched, except a long operation's crash, which fires right after the record is
persisted as RUNNING; "after" fires for short operations once the outcome is recorded DONE
(a lost reply), and for long operations where the operation calls
:meth:`OpContext.fault_after` (after the data copy, before the finalize).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from storage_agent.errors import AgentError, Code, Reason, as_agent_error
from storage_agent.faults import FaultInjector, FaultRule, FaultTarget
from storage_agent.layout import atomic_write_json, read_json, validate_op_id
from storage_agent.locks import HeldLocks, LockPlan, VolumeLocks
from storage_agent.model import OpKind, OpResult, OpState, format_time, parse_time, utc_now

RECORD_RETENTION = timedelta(hours=24)
ABORT_WAIT_S = 10.0
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorDetail:
    """A recorded failure: google.rpc code, reason, message and metadata."""

    code: int
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, err: AgentError) -> ErrorDetail:
        """The detail of ``err``."""
        return cls(int(err.code), err.reason.value, err.message, dict(err.metadata))

    def to_error(self) -> AgentError:
        """The AgentError to raise again when the failure is replayed."""
        try:
            reason = Reason(self.reason)
        except ValueError:
            reason = Reason.INTERNAL_ERROR
        return AgentError(reason, self.message, self.metadata, code=Code(self.code))


@dataclass(frozen=True)
class OperationRecord:
    """What the agent remembers about one ``op_id``."""

    op_id: str
    kind: OpKind
    params: dict[str, Any]
    params_hash: str
    state: OpState
    created_at: datetime
    updated_at: datetime
    progress: int = 0
    result: OpResult | None = None
    error: ErrorDetail | None = None
    phase: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record file's document."""
        return {
            "op_id": self.op_id,
            "kind": self.kind.value,
            "params": self.params,
            "params_hash": self.params_hash,
            "state": self.state.value,
            "progress": self.progress,
            "result": self.result.to_json() if self.result else None,
            "error": (
                {
                    "code": self.error.code,
                    "reason": self.error.reason,
                    "message": self.error.message,
                    "metadata": self.error.metadata,
                }
                if self.error
                else None
            ),
            "phase": self.phase,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperationRecord:
        """Parse a record file's document."""
        error = data.get("error")
        return cls(
            op_id=str(data["op_id"]),
            kind=OpKind(data["kind"]),
            params=dict(data["params"]),
            params_hash=str(data["params_hash"]),
            state=OpState(data["state"]),
            progress=int(data.get("progress", 0)),
            result=OpResult.from_json(data["result"]) if data.get("result") else None,
            error=(
                ErrorDetail(
                    int(error["code"]),
                    str(error["reason"]),
                    str(error["message"]),
                    {str(k): str(v) for k, v in error.get("metadata", {}).items()},
                )
                if error
                else None
            ),
            phase=dict(data.get("phase") or {}),
            created_at=parse_time(str(data["created_at"])),
            updated_at=parse_time(str(data["updated_at"])),
        )


def params_hash(kind: OpKind, params: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the kind and parameters."""
    canonical = json.dumps({"kind": kind.value, "params": params}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class OperationStore:
    """Operation record files in ``<state_dir>/ops``."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "ops"
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, op_id: str) -> Path:
        """The record file of ``op_id``."""
        return self._dir / (op_id.replace(":", "_") + ".json")

    def load(self, op_id: str) -> OperationRecord | None:
        """The record of ``op_id``, or None."""
        data = read_json(self.path(op_id))
        return OperationRecord.from_json(data) if data is not None else None

    def save(self, record: OperationRecord, *, durable: bool = True) -> None:
        """Write the record atomically (``durable``: and fsync it, see atomic_write_json)."""
        atomic_write_json(self.path(record.op_id), record.to_json(), durable=durable)

    def delete(self, op_id: str) -> None:
        """Forget ``op_id``."""
        self.path(op_id).unlink(missing_ok=True)

    def all(self) -> list[OperationRecord]:
        """Every readable record (unreadable files are logged and skipped)."""
        records = []
        for entry in os.scandir(self._dir):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                data = read_json(Path(entry.path))
                if data is not None:
                    records.append(OperationRecord.from_json(data))
            except (OSError, ValueError, KeyError) as exc:
                _log.warning("skipping unreadable operation record %s: %s", entry.path, exc)
        return records

    def prune(self, max_age: timedelta = RECORD_RETENTION) -> int:
        """Delete terminal records last updated before ``max_age`` ago; return the count."""
        cutoff = utc_now() - max_age
        stale = [r for r in self.all() if r.state.terminal and r.updated_at < cutoff]
        for record in stale:
            self.delete(record.op_id)
        return len(stale)


@dataclass(frozen=True)
class OperationSpec:
    """One request for an operation: its identity, parameters and what it touches."""

    kind: OpKind
    op_id: str
    params: dict[str, Any]
    volume_ids: frozenset[str]
    fault: FaultTarget

    @property
    def params_hash(self) -> str:
        """See :func:`params_hash`."""
        return params_hash(self.kind, self.params)


class LongJob(Protocol):
    """A long operation: the locks it needs, and the work done while holding them."""

    def plan(self) -> LockPlan:
        """The locks to hold for the whole operation (may read storage; must not fail)."""
        ...

    def run(self, ctx: OpContext) -> OpResult:
        """Do the work; raise AgentError on failure."""
        ...


ShortWork = Callable[["OpContext"], OpResult]


@dataclass
class _Live:
    """An operation executing in this process."""

    spec: OperationSpec
    record: OperationRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False
    held: HeldLocks | None = None
    future: Future[None] | None = None
    partial: OpResult | None = None
    deferred: list[Callable[[], object]] = field(default_factory=list)


class OpContext:
    """What an executing operation may use: its id, phase, progress, cancel event and locks."""

    def __init__(self, runner: OperationRunner, live: _Live, held: HeldLocks | None) -> None:
        self._runner = runner
        self._live = live
        self.op_id = live.spec.op_id
        self.phase: dict[str, Any] = dict(live.record.phase)
        self.cancel = live.cancel
        self._held = held

    @property
    def lock_fds(self) -> tuple[int, ...]:
        """The fds of the locks held for this operation, to pass to qemu-img."""
        return self._held.fds if self._held else ()

    def holds(self, plan: LockPlan) -> bool:
        """True when the locks held for this operation cover ``plan``."""
        return self._held is not None and self._held.plan.covers(plan)

    def progress(self, percent: float) -> None:
        """Report progress (0..100); kept in memory, visible to GetOperation."""
        self._runner._set_progress(self._live, int(max(0.0, min(percent, 99.0))))

    def save_phase(self, partial: OpResult, **phase: Any) -> None:
        """Persist phase markers and the partial result before a step that must be resumed."""
        self.phase.update(phase)
        self._live.partial = partial
        self._runner._update(self._live, phase=dict(self.phase), result=partial)

    def defer(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the operation's outcome is recorded (or it ends unrecorded).

        For handing a big dropped file to the trash's unlink thread: on a filesystem mounted
        with ``discard`` that unlink keeps the disk busy for a while (~0.4 s per GiB), and the
        fsyncs of the rest of the finalize and of the record would queue behind it.
        """
        self._live.deferred.append(action)

    def fault_after(self) -> None:
        """The "after" fault injection point of a long operation."""
        self._runner._faults.inject(self._live.spec.fault, "after")


class OperationRunner:
    """Executes operations once per ``op_id`` and keeps their records."""

    def __init__(
        self,
        store: OperationStore,
        locks: VolumeLocks,
        faults: FaultInjector,
        max_workers: int = 4,
    ) -> None:
        self._store = store
        self._locks = locks
        self._faults = faults
        self._mutex = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="op")

    # Entry points.

    def run_short(self, spec: OperationSpec, work: ShortWork) -> OperationRecord:
        """Execute a short operation inside the call, or replay its recorded outcome."""
        rule = self._faults.take(spec.fault, "before")
        if rule is not None:
            rule.fire()
        claimed = self._claim(spec, long=False)
        if isinstance(claimed, OperationRecord):
            if claimed.state is not OpState.DONE and claimed.error is not None:
                raise claimed.error.to_error()
            return claimed
        live = claimed
        try:
            result = work(OpContext(self, live, None))
        except Exception as exc:
            err = as_agent_error(exc)
            self._finish(
                live, None if err.retryable else (OpState.FAILED, None, err), durable=False
            )
            raise err from exc
        record = self._finish(live, (OpState.DONE, result, None), durable=False)
        self._faults.inject(spec.fault, "after")
        return record

    def start_long(self, spec: OperationSpec, job: LongJob) -> OperationRecord:
        """Take the locks, record the operation and start it; return its current record."""
        rule = self._faults.take(spec.fault, "before")
        crash_rule = None
        if rule is not None and rule.action == "crash":
            crash_rule = rule
        elif rule is not None:
            rule.fire()
        claimed = self._claim(spec, long=True)
        if isinstance(claimed, OperationRecord):
            return claimed
        live = claimed
        try:
            live.held = self._locks.acquire(job.plan())
            self._update(live)
        except Exception as exc:
            self._finish(live, None)
            raise as_agent_error(exc) from exc
        with self._mutex:
            live.future = self._pool.submit(self._run_long, live, job, crash_rule)
        return live.record

    def resume_unfinished(
        self, make_job: Callable[[OperationRecord], tuple[OperationSpec, LongJob] | None]
    ) -> int:
        """Re-execute every record left PENDING/RUNNING by a previous agent; return the count."""
        count = 0
        for record in self._store.all():
            if record.state.terminal:
                continue
            try:
                made = make_job(record)
            except Exception as exc:
                err = as_agent_error(exc)
                _log.error("cannot resume operation %s: %s", record.op_id, err.message)
                self._store.save(replace(record, state=OpState.FAILED, error=ErrorDetail.of(err)))
                continue
            if made is None:
                # Short operations never record their intent, so this record is not ours.
                _log.warning("dropping unfinished record %s of kind %s", record.op_id, record.kind)
                self._store.delete(record.op_id)
                continue
            spec, job = made
            live = _Live(spec, record)
            with self._mutex:
                self._live[record.op_id] = live
                live.future = self._pool.submit(self._run_long, live, job, None)
            _log.info("resuming operation %s (%s)", record.op_id, record.kind.value)
            count += 1
        return count

    def get(self, op_id: str, wait_s: float = 0.0) -> OperationRecord:
        """The current record of ``op_id``, else OPERATION_NOT_FOUND.

        With ``wait_s``, an executing operation is waited for up to that long, so a caller
        polling a long operation hears of its end at once instead of at its next poll.
        """
        validate_op_id(op_id)
        with self._mutex:
            live = self._live.get(op_id)
        if live is not None and wait_s > 0:
            live.done.wait(wait_s)
        with self._mutex:
            live = self._live.get(op_id)
            if live is not None:
                return live.record
        record = self._store.load(op_id)
        if record is None:
            raise AgentError(
                Reason.OPERATION_NOT_FOUND, f"unknown operation {op_id}", {"op_id": op_id}
            )
        return record

    def abort(self, op_id: str) -> OperationRecord:
        """Abort ``op_id`` if it is executing (best effort) and return its record."""
        validate_op_id(op_id)
        with self._mutex:
            live = self._live.get(op_id)
        if live is not None:
            self._abort_live(live)
        return self.get(op_id)

    def abort_volume(self, volume_id: str, except_op_id: str = "") -> None:
        """Abort every executing operation (but ``except_op_id``) that touches ``volume_id``."""
        with self._mutex:
            targets = [
                live
                for live in self._live.values()
                if volume_id in live.spec.volume_ids and live.spec.op_id != except_op_id
            ]
        for live in targets:
            self._abort_live(live)

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Interrupt executing operations without recording an outcome; they resume later."""
        with self._mutex:
            lives = list(self._live.values())
            for live in lives:
                live.interrupted = True
                live.cancel.set()
        for live in lives:
            live.done.wait(grace_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def prune(self) -> int:
        """Delete records past their retention; return the count."""
        return self._store.prune()

    # Internals.

    def _claim(self, spec: OperationSpec, *, long: bool) -> OperationRecord | _Live:
        """The record to return as-is, or a new live entry the caller now owns.

        A short operation executing under the same op_id is waited for; a long one is
        returned as it stands.
        """
        validate_op_id(spec.op_id)
        while True:
            with self._mutex:
                live = self._live.get(spec.op_id)
                if live is None:
                    record = self._store.load(spec.op_id)
                    if record is not None:
                        _check_same(record, spec)
                        if record.state.terminal:
                            return record
                    now = utc_now()
                    state = OpState.PENDING if long else OpState.RUNNING
                    record = replace(
                        record
                        or OperationRecord(
                            spec.op_id, spec.kind, spec.params, spec.params_hash, state, now, now
                        ),
                        state=state,
                        updated_at=now,
                    )
                    live = _Live(spec, record)
                    self._live[spec.op_id] = live
                    return live
            _check_same(live.record, spec)
            if long:
                return live.record
            live.done.wait()

    def _run_long(self, live: _Live, job: LongJob, crash_rule: FaultRule | None) -> None:
        outcome: tuple[OpState, OpResult | None, AgentError | None] | None
        try:
            if live.held is None:
                live.held = self._locks.acquire(job.plan(), forever=True, cancel=live.cancel)
            if live.cancel.is_set():
                raise _cancelled()
            self._update(live, state=OpState.RUNNING)
            if crash_rule is not None:
                crash_rule.fire()
            started = time.monotonic()
            result = job.run(OpContext(self, live, live.held))
            outcome = (OpState.DONE, result, None)
            _log.info(
                "operation %s (%s) done in %.2f s",
                live.spec.op_id,
                live.spec.kind.value,
                time.monotonic() - started,
            )
        except Exception as exc:
            if live.interrupted:
                outcome = None
            elif live.cancel.is_set():
                outcome = (OpState.ABORTED, live.partial, _cancelled())
            else:
                outcome = (OpState.FAILED, live.partial, as_agent_error(exc))
                _log.warning("operation %s failed: %s", live.spec.op_id, outcome[2])
        self._finish(live, outcome)

    def _abort_live(self, live: _Live) -> None:
        live.cancel.set()
        with self._mutex:
            future = live.future
            never_started = future is not None and not future.cancelled() and future.cancel()
        if never_started:
            self._finish(live, (OpState.ABORTED, None, _cancelled()))
        live.done.wait(ABORT_WAIT_S)

    def _set_progress(self, live: _Live, percent: int) -> None:
        with self._mutex:
            if percent > live.record.progress:
                live.record = replace(live.record, progress=percent)

    def _update(self, live: _Live, **changes: Any) -> None:
        with self._mutex:
            live.record = replace(live.record, updated_at=utc_now(), **changes)
            record = live.record
        self._store.save(record)

    def _finish(
        self,
        live: _Live,
        outcome: tuple[OpState, OpResult | None, AgentError | None] | None,
        *,
        durable: bool = True,
    ) -> OperationRecord:
        """Record a terminal outcome (None: record nothing) and drop the live entry.

        Short operations pass ``durable=False``: their effect is itself durable on storage
        (a volume and its sidecar, a tombstone, a domain's metadata), so a record lost with
        the machine's power only makes a replay re-derive the same outcome from storage.

        A terminal state becomes visible (GetOperation, the reply) once its record is saved
        and the deferred actions have run.
        """
        try:
            record = None
            try:
                if outcome is not None:
                    state, result, err = outcome
                    record = replace(
                        live.record,
                        state=state,
                        result=result,
                        error=ErrorDetail.of(err) if err else None,
                        progress=100 if state is OpState.DONE else live.record.progress,
                        updated_at=utc_now(),
                    )
                    self._store.save(record, durable=durable)
            finally:
                deferred, live.deferred = live.deferred, []
                for action in deferred:
                    try:
                        action()
                    except Exception:
                        _log.exception("deferred action of operation %s failed", live.spec.op_id)
            if record is not None:
                with self._mutex:
                    live.record = record
            return live.record
        finally:
            if live.held is not None:
                live.held.release()
            with self._mutex:
                self._live.pop(live.spec.op_id, None)
            live.done.set()


def _check_same(record: OperationRecord, spec: OperationSpec) -> None:
    if record.kind is not spec.kind or record.params_hash != spec.params_hash:
        raise AgentError(
            Reason.OPERATION_ID_REUSED,
            f"op_id {spec.op_id} was already used for a different request",
            {"op_id": spec.op_id, "kind": record.kind.value},
        )


def _cancelled() -> AgentError:
    return AgentError(Reason.OPERATION_ABORTED, "the operation was aborted")


def params_of(inp: Any) -> dict[str, Any]:
    """The parameters of a frozen-dataclass operation input: every field but ``op_id``."""
    return {k: v for k, v in asdict(inp).items() if k != "op_id"}
