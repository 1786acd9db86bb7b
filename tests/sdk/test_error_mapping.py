"""The reason → exception table, and transport behaviour against a scriptable fake engine.

The real engine cannot produce most reasons on demand (previews, locks, shutdown); a fake
servicer sends each SPEC §4 status through real gRPC, so the whole path (status details →
``from_rpc_error`` → class) is exercised for every reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

import disksnap
from disksnap import _convert, errors
from disksnap.engine.v1 import common_pb2
from sdk.fake_engine import FakeEngine, hang, job

# SPEC §4: every RPC-level reason with its gRPC code.
SPEC_REASONS = {
    "INVALID_FIELD": "INVALID_ARGUMENT",
    "DESCRIPTION_EMPTY": "INVALID_ARGUMENT",
    "DESCRIPTION_INVALID": "INVALID_ARGUMENT",
    "DESCRIPTION_TOO_LONG": "INVALID_ARGUMENT",
    "CORRUPTED_VM_SNAPSHOT_ID": "INVALID_ARGUMENT",
    "DUPLICATE_DISK_IDS": "INVALID_ARGUMENT",
    "PREVIEW_DISK_SELECTION_INCOMPLETE": "INVALID_ARGUMENT",
    "VM_NOT_EXIST": "NOT_FOUND",
    "VM_SNAPSHOT_DOES_NOT_EXIST": "NOT_FOUND",
    "DISKS_NOT_EXIST": "NOT_FOUND",
    "DISK_SNAPSHOTS_NOT_EXIST": "NOT_FOUND",
    "STORAGE_DOMAIN_NOT_EXIST": "NOT_FOUND",
    "HOST_NOT_EXIST": "NOT_FOUND",
    "JOB_NOT_EXIST": "NOT_FOUND",
    "NAME_ALREADY_USED": "ALREADY_EXISTS",
    "REQUEST_ID_REUSED": "ALREADY_EXISTS",
    "SNAPSHOT_IS_BEING_TAKEN_FOR_VM": "ABORTED",
    "VM_IS_DURING_SNAPSHOT": "ABORTED",
    "VM_IS_LOCKED": "ABORTED",
    "DISKS_LOCKED": "ABORTED",
    "VM_IN_PREVIEW": "FAILED_PRECONDITION",
    "VM_SNAPSHOT_NOT_IN_PREVIEW": "FAILED_PRECONDITION",
    "VM_IS_NOT_DOWN": "FAILED_PRECONDITION",
    "VM_SNAPSHOT_TYPE_NOT_ALLOWED": "FAILED_PRECONDITION",
    "CANNOT_PREVIEW_ACTIVE_SNAPSHOT": "FAILED_PRECONDITION",
    "DISKS_NOT_ATTACHED_TO_VM": "FAILED_PRECONDITION",
    "DISK_SNAPSHOT_NOT_SUPPORTED": "FAILED_PRECONDITION",
    "DISKS_ILLEGAL": "FAILED_PRECONDITION",
    "DISK_SNAPSHOTS_ACTIVE": "FAILED_PRECONDITION",
    "DISKS_SNAPSHOTS_DONT_BELONG_TO_SAME_DISK": "FAILED_PRECONDITION",
    "VM_DISK_SNAPSHOT_NOT_ATTACHED_TO_VM": "FAILED_PRECONDITION",
    "MEMORY_REQUIRES_RUNNING_VM": "FAILED_PRECONDITION",
    "MEMORY_NOT_AVAILABLE": "FAILED_PRECONDITION",
    "HOST_CANNOT_SAVE_MEMORY": "FAILED_PRECONDITION",
    "NO_SUITABLE_DOMAIN_FOUND": "FAILED_PRECONDITION",
    "STORAGE_DOMAIN_STATUS_ILLEGAL": "FAILED_PRECONDITION",
    "DISK_SPACE_LOW_ON_STORAGE_DOMAIN": "FAILED_PRECONDITION",
    "CANNOT_DETACH_DISK_WITH_SNAPSHOT": "FAILED_PRECONDITION",
    "DISK_SNAPSHOTS_BELONG_TO_ANOTHER_VM": "FAILED_PRECONDITION",
    "DISK_ALREADY_ATTACHED": "FAILED_PRECONDITION",
    "DISK_BOOT_IN_USE": "FAILED_PRECONDITION",
    "HOST_NOT_UP": "FAILED_PRECONDITION",
    "ENGINE_SHUTTING_DOWN": "UNAVAILABLE",
    "DATABASE_UNAVAILABLE": "UNAVAILABLE",
    "UNAUTHENTICATED": "UNAUTHENTICATED",
    "PERMISSION_DENIED": "PERMISSION_DENIED",
    "HOST_IDENTITY_MISMATCH": "PERMISSION_DENIED",
    "ENGINE_ERROR": "INTERNAL",
}

CODE_BASES: dict[str, type[errors.ApiError]] = {
    "INVALID_ARGUMENT": errors.InvalidArgument,
    "NOT_FOUND": errors.NotFound,
    "ALREADY_EXISTS": errors.Conflict,
    "ABORTED": errors.Conflict,
    "FAILED_PRECONDITION": errors.PreconditionFailed,
    "UNAVAILABLE": errors.Unavailable,
    "UNAUTHENTICATED": errors.Unauthenticated,
    "PERMISSION_DENIED": errors.PermissionDenied,
    "INTERNAL": errors.InternalError,
}

SPEC_PATHS = [Path("/work/shared/SPEC.md"), Path(__file__).resolve().parents[2] / "SPEC.md"]


def test_reasons_table_covers_spec_section_4() -> None:
    assert set(errors.REASONS) == set(SPEC_REASONS)
    for reason, code in SPEC_REASONS.items():
        assert issubclass(errors.REASONS[reason], CODE_BASES[code]), reason


def test_reasons_table_matches_the_spec_text_when_available() -> None:
    spec = next((p for p in SPEC_PATHS if p.exists()), None)
    if spec is None:
        pytest.skip("SPEC.md not available")
    section = spec.read_text().split("## 4. Error model", 1)[1].split("**Job-level reasons**")[0]
    found: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            found.update(re.findall(r"`([A-Z_]+)`", line.split("|")[1]))
    assert found == set(errors.REASONS)


def test_lock_reasons_are_retryable_lock_conflicts() -> None:
    for reason, code in SPEC_REASONS.items():
        cls = errors.REASONS[reason]
        assert issubclass(cls, errors.LockConflict) == (code == "ABORTED"), reason
        assert cls.retryable == (code in ("ABORTED", "UNAVAILABLE")), reason


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeEngine]:
    with FakeEngine() as engine:
        yield engine


@pytest.mark.parametrize("reason", sorted(SPEC_REASONS))
def test_every_reason_arrives_as_its_class(fake: FakeEngine, reason: str) -> None:
    code = SPEC_REASONS[reason]
    with (
        disksnap.Client(fake.address, timeout=5) as client,
        pytest.raises(errors.ApiError) as caught,
    ):
        client.get_vm(f"{code}/{reason}")
    err = caught.value
    assert type(err) is errors.REASONS[reason]
    assert err.reason == reason
    assert err.code == getattr(grpc.StatusCode, code)
    assert err.domain == "disksnap.engine"
    assert err.metadata == {"vm_id": "x"}
    assert err.message == f"fake {reason}"


def test_unknown_reason_falls_back_to_its_code(fake: FakeEngine) -> None:
    with (
        disksnap.Client(fake.address, timeout=5) as client,
        pytest.raises(errors.PreconditionFailed) as caught,
    ):
        client.get_vm("FAILED_PRECONDITION/SOMETHING_NEW")
    assert type(caught.value) is errors.PreconditionFailed
    assert caught.value.reason == "SOMETHING_NEW"


def test_unavailable_is_retried_by_the_service_config(fake: FakeEngine) -> None:
    fake.inventory.calls.clear()
    fake.inventory.fail_times = 2
    with disksnap.Client(fake.address, timeout=10) as client:
        assert client.list_hosts() == []
    assert fake.inventory.calls["ListHosts"] == 3


def test_other_codes_are_not_retried(fake: FakeEngine) -> None:
    fake.inventory.calls.clear()
    fake.inventory.fail_times = 2
    fake.inventory.fail_code = grpc.StatusCode.ABORTED
    try:
        with (
            disksnap.Client(fake.address, timeout=10) as client,
            pytest.raises(errors.Conflict),
        ):
            client.list_hosts()
        assert fake.inventory.calls["ListHosts"] == 1
    finally:
        fake.inventory.fail_code = grpc.StatusCode.UNAVAILABLE
        fake.inventory.fail_times = 0


def test_a_retried_mutating_call_reuses_its_request_id(fake: FakeEngine) -> None:
    fake.inventory.calls.clear()
    fake.inventory.request_ids.clear()
    fake.inventory.fail_times = 1
    try:
        with disksnap.Client(fake.address, timeout=10) as client:
            done = client.create_vm("retried")
        assert done.state is disksnap.JobState.SUCCEEDED
        first, second = fake.inventory.request_ids
        assert first == second and uuid.UUID(first)
    finally:
        fake.inventory.fail_times = 0


def test_given_request_id_is_sent(fake: FakeEngine) -> None:
    fake.inventory.request_ids.clear()
    rid = str(uuid.uuid4())
    with disksnap.Client(fake.address, timeout=10) as client:
        client.create_vm("given", request_id=rid)
    assert fake.inventory.request_ids == [rid]


def test_unreachable_engine_is_unavailable() -> None:
    with (
        disksnap.Client("127.0.0.1:1", timeout=5) as client,
        pytest.raises(errors.Unavailable) as caught,
    ):
        client.list_vms()
    assert caught.value.retryable
    assert caught.value.reason == "UNAVAILABLE"


def test_wait_resumes_a_broken_watch_and_keeps_progress_monotonic(fake: FakeEngine) -> None:
    job_id = str(uuid.uuid4())

    def first(context: grpc.ServicerContext) -> Iterator[common_pb2.Job]:
        yield job(common_pb2.JOB_STATE_RUNNING, 60, job_id)
        context.abort(grpc.StatusCode.UNAVAILABLE, "engine restarting")

    def second(context: grpc.ServicerContext) -> Iterator[common_pb2.Job]:
        yield job(common_pb2.JOB_STATE_RUNNING, 30, job_id)  # a stale value after the restart
        yield job(common_pb2.JOB_STATE_SUCCEEDED, 100, job_id)

    fake.jobs.scripts = [first, second]
    fake.jobs.streams = 0
    seen: list[int] = []
    with disksnap.Client(fake.address, timeout=10) as client:
        handle = client.job_handle(_pending(job_id))
        final = handle.wait(progress=lambda j: seen.append(j.progress), timeout=20)
    assert final.state is disksnap.JobState.SUCCEEDED
    assert seen == sorted(seen) and seen[-1] == 100 and 60 in seen
    assert fake.jobs.streams == 2


def test_wait_timeout(fake: FakeEngine) -> None:
    job_id = str(uuid.uuid4())

    def running(context: grpc.ServicerContext) -> Iterator[common_pb2.Job]:
        yield job(common_pb2.JOB_STATE_RUNNING, 10, job_id)
        hang(context)

    fake.jobs.scripts = [running]
    fake.jobs.streams = 0
    with (
        disksnap.Client(fake.address, timeout=10) as client,
        pytest.raises(errors.WaitTimeout) as caught,
    ):
        client.job_handle(_pending(job_id)).wait(timeout=0.5)
    assert caught.value.job.progress == 10


def test_wait_raises_job_failed_unless_unchecked(fake: FakeEngine) -> None:
    job_id = str(uuid.uuid4())

    def failed(context: grpc.ServicerContext) -> Iterator[common_pb2.Job]:
        j = job(common_pb2.JOB_STATE_FAILED, 100, job_id)
        j.error.reason = "VOLUME_CREATION_ERROR"
        j.error.message = "no space"
        yield j

    fake.jobs.scripts = [failed]
    fake.jobs.streams = 0
    with disksnap.Client(fake.address, timeout=10) as client:
        with pytest.raises(errors.JobFailed) as caught:
            client.job_handle(_pending(job_id)).wait()
        assert caught.value.reason == "VOLUME_CREATION_ERROR"
        final = client.job_handle(_pending(job_id)).wait(check=False)
    assert final.state is disksnap.JobState.FAILED
    assert final.error is not None and final.error.message == "no space"


def _pending(job_id: str) -> disksnap.Job:
    return _convert.job_from_proto(job(common_pb2.JOB_STATE_PENDING, 0, job_id))


def test_every_operation_maps_unimplemented() -> None:
    """Against a server that offers nothing, every client method raises Unimplemented."""
    some = str(uuid.uuid4())
    with FakeEngine(register=False) as empty, disksnap.Client(empty.address, timeout=5) as c:
        calls: list[Callable[[], object]] = [
            c.list_hosts,
            c.list_storage_domains,
            lambda: c.create_storage_domain("d", some),
            lambda: c.create_vm("v"),
            lambda: c.get_vm(some),
            c.list_vms,
            lambda: c.update_vm(some, cpu_count=2),
            lambda: c.set_vm_run_state(some, disksnap.RunState.DOWN),
            lambda: c.remove_vm(some),
            lambda: c.add_disk("a", 1 << 20, domain_id=some, vm_id=some),
            lambda: c.remove_disk(some),
            lambda: c.attach_disk(some, some),
            lambda: c.detach_disk(some, some),
            lambda: c.get_disk(some),
            c.list_disks,
            lambda: c.create_snapshot(some, "s"),
            lambda: c.list_snapshots(some),
            lambda: c.get_snapshot(some, some),
            lambda: c.preview_snapshot(some, config_snapshot_id=some),
            lambda: c.commit_preview(some),
            lambda: c.undo_preview(some),
            lambda: c.restore_snapshot(some, config_snapshot_id=some),
            lambda: c.remove_snapshot(some, some),
            lambda: c.remove_disk_snapshots([some]),
            lambda: c.get_disk_volume_tree(some),
            lambda: c.get_job(some),
            c.list_jobs,
            lambda: list(c.watch_job(some)),
            c.check_consistency,
        ]
        for call in calls:
            with pytest.raises(errors.Unimplemented) as caught:
                call()
            assert caught.value.reason == "UNIMPLEMENTED"
            assert not caught.value.retryable
