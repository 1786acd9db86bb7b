"""The operation store and runner: idempotency by op_id, replay, long operations, resume."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from storage_agent.errors import AgentError, Reason
from storage_agent.faults import FaultInjector, FaultTarget
from storage_agent.locks import LockPlan, VolumeLocks
from storage_agent.model import MergeDirection, OpKind, OpResult, OpState, utc_now
from storage_agent.operations import (
    OpContext,
    OperationRecord,
    OperationRunner,
    OperationSpec,
    OperationStore,
    params_hash,
)
from unit.agent.storage_helpers import new_id


@pytest.fixture
def store(tmp_path: Path) -> OperationStore:
    return OperationStore(tmp_path)


@pytest.fixture
def runner(tmp_path: Path, store: OperationStore) -> Iterator[OperationRunner]:
    runner = OperationRunner(store, VolumeLocks(tmp_path, timeout=0.2), FaultInjector(None))
    yield runner
    runner.shutdown(grace_s=5)


def spec(op_id: str, volume: str = "v", **params: Any) -> OperationSpec:
    return OperationSpec(
        OpKind.CREATE_VOLUME,
        op_id,
        {"volume": volume, **params},
        frozenset({volume}),
        FaultTarget("CreateVolume"),
    )


class Counter:
    def __init__(self, error: AgentError | None = None) -> None:
        self.calls = 0
        self.error = error

    def __call__(self, ctx: OpContext) -> OpResult:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return OpResult(already_absent=True)


class BlockingJob:
    """A long job that runs until released, recording a phase first."""

    def __init__(self, volume: str) -> None:
        self.volume = volume
        self.started = threading.Event()
        self.release = threading.Event()

    def plan(self) -> LockPlan:
        return LockPlan.of([self.volume])

    def run(self, ctx: OpContext) -> OpResult:
        ctx.save_phase(OpResult(direction=MergeDirection.COMMIT, base_modified=True), step=1)
        ctx.progress(40)
        self.started.set()
        while not self.release.wait(0.01):
            if ctx.cancel.is_set():
                raise RuntimeError("killed")
        return OpResult(direction=MergeDirection.COMMIT, base_modified=True)


def test_a_done_operation_is_replayed_not_re_executed(runner: OperationRunner) -> None:
    op_id, work = new_id(), Counter()
    first = runner.run_short(spec(op_id), work)
    again = runner.run_short(spec(op_id), work)
    assert work.calls == 1
    assert first.state is again.state is OpState.DONE
    assert again.result == OpResult(already_absent=True)
    assert runner.get(op_id).progress == 100


def test_an_op_id_reused_for_another_request_is_refused(runner: OperationRunner) -> None:
    op_id = new_id()
    runner.run_short(spec(op_id), Counter())
    with pytest.raises(AgentError) as caught:
        runner.run_short(spec(op_id, volume="other"), Counter())
    assert caught.value.reason is Reason.OPERATION_ID_REUSED


def test_a_permanent_failure_is_recorded_and_replayed(runner: OperationRunner) -> None:
    op_id = new_id()
    work = Counter(AgentError(Reason.VOLUME_NOT_FOUND, "gone", {"volume_id": "v"}))
    for _ in range(2):
        with pytest.raises(AgentError) as caught:
            runner.run_short(spec(op_id), work)
        assert (caught.value.reason, caught.value.metadata) == (
            Reason.VOLUME_NOT_FOUND,
            {"volume_id": "v"},
        )
    assert work.calls == 1
    record = runner.get(op_id)
    assert record.state is OpState.FAILED and record.error is not None
    assert record.error.code == 5


def test_a_transient_failure_is_not_recorded(runner: OperationRunner) -> None:
    op_id = new_id()
    with pytest.raises(AgentError):
        runner.run_short(spec(op_id), Counter(AgentError(Reason.VOLUME_BUSY, "busy")))
    with pytest.raises(AgentError) as caught:
        runner.get(op_id)
    assert caught.value.reason is Reason.OPERATION_NOT_FOUND
    assert runner.run_short(spec(op_id), Counter()).state is OpState.DONE


def test_unexpected_exceptions_become_internal_errors(runner: OperationRunner) -> None:
    def boom(ctx: OpContext) -> OpResult:
        raise ZeroDivisionError

    with pytest.raises(AgentError) as caught:
        runner.run_short(spec(new_id()), boom)
    assert caught.value.reason is Reason.INTERNAL_ERROR


def test_a_long_operation_runs_in_the_background(runner: OperationRunner) -> None:
    op_id, job = new_id(), BlockingJob(new_id())
    started = runner.start_long(replace(spec(op_id, job.volume), kind=OpKind.MERGE_VOLUMES), job)
    assert started.state in (OpState.PENDING, OpState.RUNNING)
    assert job.started.wait(5)
    running = runner.get(op_id)
    assert (running.state, running.progress, running.phase) == (OpState.RUNNING, 40, {"step": 1})
    job.release.set()
    while not runner.get(op_id).state.terminal:
        job.started.wait(0.01)
    done = runner.get(op_id)
    assert done.state is OpState.DONE and done.progress == 100
    assert done.result == OpResult(direction=MergeDirection.COMMIT, base_modified=True)


def test_a_long_operation_holds_its_locks(runner: OperationRunner) -> None:
    job = BlockingJob(new_id())
    runner.start_long(replace(spec(new_id(), job.volume), kind=OpKind.MERGE_VOLUMES), job)
    with pytest.raises(AgentError) as caught:
        runner.start_long(
            replace(spec(new_id(), job.volume), kind=OpKind.MERGE_VOLUMES), BlockingJob(job.volume)
        )
    assert caught.value.reason is Reason.VOLUME_BUSY
    job.release.set()


def test_abort_stops_a_long_operation(runner: OperationRunner) -> None:
    op_id, job = new_id(), BlockingJob(new_id())
    runner.start_long(replace(spec(op_id, job.volume), kind=OpKind.MERGE_VOLUMES), job)
    assert job.started.wait(5)
    aborted = runner.abort(op_id)
    assert aborted.state is OpState.ABORTED
    assert aborted.error is not None and aborted.error.reason == "OPERATION_ABORTED"
    assert aborted.result is not None and aborted.result.base_modified
    # The locks are free again.
    runner.run_short(spec(new_id(), job.volume), Counter())


def test_unfinished_records_are_resumed(store: OperationStore, runner: OperationRunner) -> None:
    op_id, volume = new_id(), new_id()
    now = utc_now()
    params = {"volume": volume}
    store.save(
        OperationRecord(
            op_id,
            OpKind.MERGE_VOLUMES,
            params,
            params_hash(OpKind.MERGE_VOLUMES, params),
            OpState.RUNNING,
            now,
            now,
            phase={"step": 0},
        )
    )
    job = BlockingJob(volume)
    job.release.set()
    resumed = runner.resume_unfinished(
        lambda record: (
            replace(spec(record.op_id, volume), kind=record.kind, params=record.params),
            job,
        )
    )
    assert resumed == 1
    while not runner.get(op_id).state.terminal:
        job.started.wait(0.01)
    assert runner.get(op_id).state is OpState.DONE


def test_shutdown_leaves_running_operations_to_be_resumed(
    store: OperationStore, runner: OperationRunner
) -> None:
    op_id, job = new_id(), BlockingJob(new_id())
    runner.start_long(replace(spec(op_id, job.volume), kind=OpKind.MERGE_VOLUMES), job)
    assert job.started.wait(5)
    runner.shutdown(grace_s=5)
    record = store.load(op_id)
    assert record is not None and record.state is OpState.RUNNING


def test_prune_drops_old_terminal_records(store: OperationStore, runner: OperationRunner) -> None:
    old, recent = new_id(), new_id()
    runner.run_short(spec(old), Counter())
    runner.run_short(spec(recent), Counter())
    path = store.path(old)
    doc = json.loads(path.read_text())
    doc["updated_at"] = "2000-01-01T00:00:00.000000Z"
    path.write_text(json.dumps(doc))
    assert runner.prune() == 1
    assert store.load(old) is None and store.load(recent) is not None


def test_record_files_use_underscores(store: OperationStore, runner: OperationRunner) -> None:
    op_id = new_id() + ":3:undo"
    runner.run_short(spec(op_id), Counter())
    assert store.path(op_id).name == op_id.replace(":", "_") + ".json"
    assert store.path(op_id).is_file()
    assert runner.get(op_id).op_id == op_id
