"""A scriptable in-process engine for SDK tests of transport behaviour (retries, streams).

The real engine cannot be made to fail on demand; these servicers can. They run on
``127.0.0.1:0`` in this process and speak the same generated contract.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from disksnap.engine.v1 import (
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)

CODES = {
    "INVALID_ARGUMENT": code_pb2.INVALID_ARGUMENT,
    "NOT_FOUND": code_pb2.NOT_FOUND,
    "ALREADY_EXISTS": code_pb2.ALREADY_EXISTS,
    "ABORTED": code_pb2.ABORTED,
    "FAILED_PRECONDITION": code_pb2.FAILED_PRECONDITION,
    "UNAVAILABLE": code_pb2.UNAVAILABLE,
    "UNAUTHENTICATED": code_pb2.UNAUTHENTICATED,
    "PERMISSION_DENIED": code_pb2.PERMISSION_DENIED,
    "INTERNAL": code_pb2.INTERNAL,
}


def error_status(code: str, reason: str, **metadata: str) -> grpc.Status:
    """A google.rpc.Status with one ErrorInfo, as the engine sends it."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain="disksnap.engine", metadata=metadata)
    )
    status = status_pb2.Status(code=CODES[code], message=f"fake {reason}", details=[info])
    return rpc_status.to_status(status)


def job(state: common_pb2.JobState.ValueType, progress: int, job_id: str = "") -> common_pb2.Job:
    """A minimal job message."""
    created = timestamp_pb2.Timestamp()
    created.GetCurrentTime()
    return common_pb2.Job(
        id=job_id or str(uuid.uuid4()),
        kind=common_pb2.JOB_KIND_CREATE_SNAPSHOT,
        state=state,
        progress=progress,
        created_at=created,
    )


class FakeInventory(inventory_pb2_grpc.InventoryServiceServicer):
    """ListHosts fails with UNAVAILABLE ``fail_times`` times; GetVm raises the reason it is
    given as ``vm_id`` ("CODE/REASON"); CreateVm records request ids and fails first."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail_times = 0
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.request_ids: list[str] = []
        self._lock = threading.Lock()

    def _count(self, name: str) -> int:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def ListHosts(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self._count("ListHosts") <= self.fail_times:
            context.abort(self.fail_code, "fake failure")
        return inventory_pb2.ListHostsResponse()

    def GetVm(self, request: Any, context: grpc.ServicerContext) -> Any:
        code, _, reason = request.vm_id.partition("/")
        context.abort_with_status(error_status(code, reason, vm_id="x"))

    def CreateVm(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.request_ids.append(request.envelope.request_id)
        if self._count("CreateVm") <= self.fail_times:
            context.abort(grpc.StatusCode.UNAVAILABLE, "fake failure")
        done = job(common_pb2.JOB_STATE_SUCCEEDED, 100)
        done.result.vm_id = str(uuid.uuid4())
        return inventory_pb2.CreateVmResponse(job=done)


class FakeJobs(jobs_pb2_grpc.JobServiceServicer):
    """WatchJob plays ``scripts`` in order: one script (a callable) per stream."""

    def __init__(self) -> None:
        self.scripts: list[Callable[[grpc.ServicerContext], Iterator[common_pb2.Job]]] = []
        self.streams = 0

    def WatchJob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        script = self.scripts[min(self.streams, len(self.scripts) - 1)]
        self.streams += 1
        for j in script(context):
            yield jobs_pb2.WatchJobResponse(job=j)


class FakeEngine:
    """The fake servicers on a loopback port."""

    def __init__(self, *, register: bool = True) -> None:
        # The stubs declare every RPC abstract; unimplemented ones answer UNIMPLEMENTED.
        self.inventory = FakeInventory()  # type: ignore[abstract]
        self.jobs = FakeJobs()  # type: ignore[abstract]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        if register:
            inventory_pb2_grpc.add_InventoryServiceServicer_to_server(self.inventory, self.server)
            jobs_pb2_grpc.add_JobServiceServicer_to_server(self.jobs, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"

    def __enter__(self) -> FakeEngine:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0)


def hang(context: grpc.ServicerContext) -> None:
    """Block until the client goes away."""
    while context.is_active():
        time.sleep(0.05)
