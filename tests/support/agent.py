"""`AgentDriver`: a thin convenience layer over the generated StorageAgentService stub.

It only builds requests, picks fresh ids and polls operations; it never interprets results,
so tests still see exactly what the agent answered. Failures of either kind (a gRPC status
with google.rpc.ErrorInfo, or a FAILED/ABORTED Operation's `error`) are normalised into
`Failure` for assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped,unused-ignore]
from grpc_status import rpc_status

from disksnap.agent.v1 import agent_pb2
from support.content import MiB
from support.ids import new_op_id, new_uuid
from support.processes import AgentProcess

ERROR_DOMAIN = "disksnap.agent"
COW = agent_pb2.VOLUME_FORMAT_COW
RAW = agent_pb2.VOLUME_FORMAT_RAW
FORMAT_NAMES: dict[int, str] = {COW: "qcow2", RAW: "raw"}
DONE = agent_pb2.OPERATION_STATE_DONE
FAILED = agent_pb2.OPERATION_STATE_FAILED
ABORTED = agent_pb2.OPERATION_STATE_ABORTED
RUNNING = agent_pb2.OPERATION_STATE_RUNNING
PENDING = agent_pb2.OPERATION_STATE_PENDING
TERMINAL = frozenset({DONE, FAILED, ABORTED})
COMMIT = agent_pb2.MERGE_DIRECTION_COMMIT
PULL = agent_pb2.MERGE_DIRECTION_PULL
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class Failure:
    """A refused or failed request: gRPC code, ErrorInfo reason/domain/metadata, message."""

    code: grpc.StatusCode
    reason: str
    message: str
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    via: str = "status"

    def __str__(self) -> str:
        return f"{self.code.name}/{self.reason} via {self.via}: {self.message!r} {self.metadata}"


def failure_from_rpc_error(err: grpc.RpcError) -> Failure:
    """Decode a gRPC error: status code, details, and the google.rpc.ErrorInfo if present."""
    assert isinstance(err, grpc.Call), f"not a call error: {err!r}"
    code: grpc.StatusCode = err.code()
    message = err.details() or ""
    reason, domain, metadata = "", "", {}
    status = rpc_status.from_call(err)
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
    return Failure(code, reason, message, domain, metadata, via="status")


def failure_from_operation(op: agent_pb2.Operation) -> Failure:
    """Decode an operation's ErrorDetail (numeric google.rpc.Code)."""
    code = _CODES_BY_NUMBER.get(op.error.code, grpc.StatusCode.UNKNOWN)
    return Failure(
        code, op.error.reason, op.error.message, ERROR_DOMAIN, dict(op.error.metadata), "operation"
    )


def state_name(state: int) -> str:
    return str(agent_pb2.OperationState.Name(state))  # type: ignore[arg-type]


def describe(op: agent_pb2.Operation) -> str:
    err = f" error={failure_from_operation(op)}" if op.HasField("error") else ""
    return f"op {op.op_id} {state_name(op.state)} progress={op.progress}{err}"


class AgentDriver:
    """Calls to one agent on one storage domain; every mutating call gets a fresh op_id."""

    def __init__(self, agent: AgentProcess, domain_id: str | None = None) -> None:
        self.agent = agent
        self.domain_id = domain_id or new_uuid()

    @property
    def stub(self) -> Any:
        return self.agent.stub()

    # -- layout (SPEC §6.1) ------------------------------------------------------------------

    @property
    def domain_dir(self) -> Path:
        return self.agent.root / self.domain_id

    def disk_dir(self, disk_id: str) -> Path:
        return self.domain_dir / "images" / disk_id

    def volume_path(self, disk_id: str, volume_id: str) -> Path:
        return self.disk_dir(disk_id) / volume_id

    def sidecar_path(self, disk_id: str, volume_id: str) -> Path:
        return self.disk_dir(disk_id) / f"{volume_id}.meta.json"

    def tombstone_path(self, volume_id: str) -> Path:
        return self.domain_dir / "tombstones" / volume_id

    # -- calls -------------------------------------------------------------------------------

    def init_domain(
        self, name: str = "test-domain", op_id: str | None = None
    ) -> agent_pb2.Operation:
        req = agent_pb2.InitDomainRequest(
            op_id=op_id or new_op_id(), domain_id=self.domain_id, name=name
        )
        op: agent_pb2.Operation = self.stub.InitDomain(req, timeout=30).operation
        return op

    def create_base(
        self,
        disk_id: str,
        volume_id: str | None = None,
        *,
        size: int = 64 * MiB,
        fmt: int = COW,
        op_id: str | None = None,
    ) -> agent_pb2.Operation:
        req = agent_pb2.CreateVolumeRequest(
            op_id=op_id or new_op_id(),
            domain_id=self.domain_id,
            disk_id=disk_id,
            volume_id=volume_id or new_uuid(),
            base=agent_pb2.BaseVolumeSpec(virtual_size=size, format=fmt),  # type: ignore[arg-type]
        )
        return self.call_create(req)

    def create_overlay(
        self,
        disk_id: str,
        parent_id: str,
        volume_id: str | None = None,
        *,
        op_id: str | None = None,
    ) -> agent_pb2.Operation:
        req = agent_pb2.CreateVolumeRequest(
            op_id=op_id or new_op_id(),
            domain_id=self.domain_id,
            disk_id=disk_id,
            volume_id=volume_id or new_uuid(),
            parent_volume_id=parent_id,
        )
        return self.call_create(req)

    def call_create(self, req: agent_pb2.CreateVolumeRequest) -> agent_pb2.Operation:
        op: agent_pb2.Operation = self.stub.CreateVolume(req, timeout=60).operation
        return op

    def delete_volume(
        self, disk_id: str, volume_id: str, *, op_id: str | None = None
    ) -> agent_pb2.Operation:
        req = agent_pb2.DeleteVolumeRequest(
            op_id=op_id or new_op_id(),
            domain_id=self.domain_id,
            disk_id=disk_id,
            volume_id=volume_id,
        )
        op: agent_pb2.Operation = self.stub.DeleteVolume(req, timeout=60).operation
        return op

    def merge_request(
        self,
        disk_id: str,
        base_id: str,
        top_id: str,
        base_parent_id: str,
        *,
        survivor_id: str | None = None,
        op_id: str | None = None,
    ) -> agent_pb2.MergeVolumesRequest:
        return agent_pb2.MergeVolumesRequest(
            op_id=op_id or new_op_id(),
            domain_id=self.domain_id,
            disk_id=disk_id,
            base_id=base_id,
            top_id=top_id,
            base_parent_id=base_parent_id,
            survivor_id=top_id if survivor_id is None else survivor_id,
        )

    def start_merge(self, req: agent_pb2.MergeVolumesRequest) -> agent_pb2.Operation:
        op: agent_pb2.Operation = self.stub.MergeVolumes(req, timeout=30).operation
        return op

    def merge(
        self,
        disk_id: str,
        base_id: str,
        top_id: str,
        base_parent_id: str,
        *,
        op_id: str | None = None,
        timeout: float = 120.0,
    ) -> agent_pb2.Operation:
        """Start a merge and wait for its terminal state."""
        op = self.start_merge(
            self.merge_request(disk_id, base_id, top_id, base_parent_id, op_id=op_id)
        )
        return self.wait(op.op_id, timeout=timeout)

    def rebase_request(
        self, disk_id: str, volume_id: str, new_parent_id: str, *, op_id: str | None = None
    ) -> agent_pb2.RebaseVolumeRequest:
        return agent_pb2.RebaseVolumeRequest(
            op_id=op_id or new_op_id(),
            domain_id=self.domain_id,
            disk_id=disk_id,
            volume_id=volume_id,
            new_parent_id=new_parent_id,
        )

    def rebase(
        self, disk_id: str, volume_id: str, new_parent_id: str, *, timeout: float = 120.0
    ) -> agent_pb2.Operation:
        """Start a rebase and wait for its terminal state."""
        req = self.rebase_request(disk_id, volume_id, new_parent_id)
        op: agent_pb2.Operation = self.stub.RebaseVolume(req, timeout=30).operation
        return self.wait(op.op_id, timeout=timeout)

    def get_operation(self, op_id: str) -> agent_pb2.Operation:
        req = agent_pb2.GetOperationRequest(op_id=op_id)
        op: agent_pb2.Operation = self.stub.GetOperation(req, timeout=10).operation
        return op

    def wait(
        self,
        op_id: str,
        *,
        timeout: float = 120.0,
        interval: float = 0.02,
        on_poll: Callable[[agent_pb2.Operation], None] | None = None,
    ) -> agent_pb2.Operation:
        """Poll GetOperation until the operation is DONE, FAILED or ABORTED."""
        deadline = time.monotonic() + timeout
        while True:
            op = self.get_operation(op_id)
            if on_poll is not None:
                on_poll(op)
            if op.state in TERMINAL:
                return op
            if time.monotonic() > deadline:
                raise AssertionError(f"{describe(op)} not terminal after {timeout:.0f} s")
            time.sleep(interval)

    def list_volumes(
        self, disk_id: str, *, recorded_only: bool = False
    ) -> agent_pb2.ListVolumesResponse:
        req = agent_pb2.ListVolumesRequest(
            domain_id=self.domain_id, disk_id=disk_id, recorded_only=recorded_only
        )
        resp: agent_pb2.ListVolumesResponse = self.stub.ListVolumes(req, timeout=30)
        return resp

    def volume_info(self, disk_id: str, volume_id: str) -> agent_pb2.Volume:
        req = agent_pb2.GetVolumeInfoRequest(
            domain_id=self.domain_id, disk_id=disk_id, volume_id=volume_id
        )
        vol: agent_pb2.Volume = self.stub.GetVolumeInfo(req, timeout=30).volume
        return vol

    def verify(self, disk_id: str, volume_id: str) -> agent_pb2.Operation:
        req = agent_pb2.VerifyVolumeRequest(
            op_id=new_op_id(), domain_id=self.domain_id, disk_id=disk_id, volume_id=volume_id
        )
        op: agent_pb2.Operation = self.stub.VerifyVolume(req, timeout=60).operation
        return op


def expect_done(op: agent_pb2.Operation) -> agent_pb2.Operation:
    """Assert the operation is DONE (with a readable failure) and return it."""
    assert op.state == DONE, describe(op)
    return op


def outcome(
    call: Callable[[], Any], driver: AgentDriver | None = None, *, timeout: float = 60.0
) -> agent_pb2.Operation | Failure:
    """Run a call returning a response with `.operation`, or an Operation; wait if it runs.

    Returns the terminal Operation if it succeeded, else the Failure (status or operation).
    """
    try:
        resp = call()
    except grpc.RpcError as err:
        return failure_from_rpc_error(err)
    op: agent_pb2.Operation = resp.operation if hasattr(resp, "operation") else resp
    if op.state not in TERMINAL:
        assert driver is not None, f"non-terminal {describe(op)} and no driver to poll it"
        op = driver.wait(op.op_id, timeout=timeout)
    if op.state == DONE:
        return op
    return failure_from_operation(op)


def expect_failure(
    call: Callable[[], Any],
    code: grpc.StatusCode | tuple[grpc.StatusCode, ...],
    reasons: str | tuple[str, ...],
    *,
    driver: AgentDriver | None = None,
    status_only: bool = False,
) -> Failure:
    """Assert the call is refused with `code` and one of `reasons` (domain disksnap.agent).

    Long operations may refuse either with a status or with a FAILED operation; with
    `status_only` only a gRPC status counts (short operations fail inside the call).
    """
    if isinstance(reasons, str):
        reasons = (reasons,)
    codes = code if isinstance(code, tuple) else (code,)
    wanted = f"{'|'.join(c.name for c in codes)}/{'|'.join(reasons)}"
    result = outcome(call, driver)
    assert isinstance(result, Failure), (
        f"expected {wanted} but the request succeeded: {describe(result)}"
    )
    if status_only:
        assert result.via == "status", f"expected a gRPC status, got a FAILED operation: {result}"
    assert result.code in codes and result.reason in reasons, f"expected {wanted}, got {result}"
    assert result.domain == ERROR_DOMAIN, f"ErrorInfo domain {result.domain!r}: {result}"
    assert result.message.strip(), f"refusal without a message: {result}"
    return result
