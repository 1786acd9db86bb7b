"""The engine's view of a storage agent (SPEC §6.3), in plain types.

``AgentClient`` is the protocol the saga uses; ``GrpcAgentClient`` implements it over the
generated stub with a deadline on every call. Errors become ``AgentCallError`` carrying the
agent's ErrorInfo and whether retrying can help (SPEC §5.5).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from disksnap._certs import CertificateFiles, Stamp
from disksnap.agent.v1 import agent_pb2, agent_pb2_grpc
from engine_svc.errors import Unavailable

TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class OpState(enum.StrEnum):
    """An agent operation's state."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


@dataclass(frozen=True)
class AgentFailure:
    """The agent's ErrorInfo for a failed call or operation."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def transient(self) -> bool:
        """Retrying the same op_id may succeed (SPEC §5.5)."""
        return self.code in TRANSIENT_CODES

    def as_cause(self) -> dict[str, object]:
        """The JSON form stored as a job error's ``cause``."""
        return {
            "reason": self.reason,
            "domain": "disksnap.agent",
            "message": self.message,
            "metadata": dict(self.metadata),
        }


class AgentCallError(Exception):
    """An agent RPC failed."""

    def __init__(self, failure: AgentFailure) -> None:
        super().__init__(f"{failure.reason}: {failure.message}")
        self.failure = failure


@dataclass(frozen=True)
class VolumeInfo:
    """A volume as the agent reports it."""

    volume_id: str
    disk_id: str
    parent_id: str | None
    format: str
    virtual_size: int
    actual_size: int


@dataclass(frozen=True)
class AgentOperation:
    """An agent operation record."""

    op_id: str
    state: OpState
    progress: int
    volume: VolumeInfo | None = None
    already_absent: bool = False
    direction: str = ""
    base_modified: bool = False
    error: AgentFailure | None = None
    domain_free_bytes: int = 0
    domain_total_bytes: int = 0

    @property
    def terminal(self) -> bool:
        """DONE, FAILED or ABORTED."""
        return self.state in (OpState.DONE, OpState.FAILED, OpState.ABORTED)


@dataclass(frozen=True)
class DiskListing:
    """What ListVolumes found for one disk."""

    volumes: list[VolumeInfo]
    stray_files: list[str]


class AgentClient(Protocol):
    """Operations the engine asks of the agent at ``address``."""

    def init_domain(self, address: str, op_id: str, domain_id: str, name: str) -> AgentOperation:
        """Create a storage domain's directories."""
        ...

    def create_volume(
        self,
        address: str,
        op_id: str,
        domain_id: str,
        disk_id: str,
        volume_id: str,
        *,
        parent_id: str | None = None,
        virtual_size: int = 0,
        fmt: str = "COW",
    ) -> AgentOperation:
        """Create an overlay on ``parent_id`` or a base volume of a size and format."""
        ...

    def delete_volume(
        self, address: str, op_id: str, domain_id: str, disk_id: str, volume_id: str
    ) -> AgentOperation:
        """Delete a leaf volume (absent = done)."""
        ...

    def merge_volumes(
        self,
        address: str,
        op_id: str,
        domain_id: str,
        disk_id: str,
        base_id: str,
        top_id: str,
        base_parent_id: str | None,
    ) -> AgentOperation:
        """Start merging base into top; poll with get_operation."""
        ...

    def rebase_volume(
        self,
        address: str,
        op_id: str,
        domain_id: str,
        disk_id: str,
        volume_id: str,
        new_parent_id: str | None,
    ) -> AgentOperation:
        """Start a content-preserving rebase; poll with get_operation."""
        ...

    def get_operation(self, address: str, op_id: str, wait_s: float = 0.0) -> AgentOperation:
        """The operation record; with ``wait_s``, as soon as it ends but at most that late."""
        ...

    def list_volumes(
        self, address: str, domain_id: str, disk_id: str, *, recorded_only: bool = False
    ) -> DiskListing:
        """Every volume of a disk plus stray files (``recorded_only``: from the agent's
        metadata and file allocation, without inspecting images)."""
        ...

    def verify_volume(
        self, address: str, op_id: str, domain_id: str, disk_id: str, volume_id: str
    ) -> str:
        """Run qemu-img check; returns "" when clean, else a description of the damage."""
        ...


_FORMATS = {"RAW": agent_pb2.VOLUME_FORMAT_RAW, "COW": agent_pb2.VOLUME_FORMAT_COW}
_FORMAT_NAMES = {v: k for k, v in _FORMATS.items()}
_DIRECTIONS = {agent_pb2.MERGE_DIRECTION_COMMIT: "COMMIT", agent_pb2.MERGE_DIRECTION_PULL: "PULL"}


class GrpcAgentClient:
    """AgentClient over gRPC; one channel per agent address, every call with a deadline.

    With mTLS, an agent must present a certificate naming the host registered at the
    address dialed (``host_name_at``; SPEC §7), not the address itself: agents advertise pod
    IPs, their certificates name their nodes. Channels are dialed again once the certificate
    files changed on disk (rotation); calls already running finish on their old channel,
    closed with the client.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        tls: CertificateFiles | None = None,
        host_name_at: Callable[[str], str | None] | None = None,
    ) -> None:
        self.timeout = timeout
        self._tls = tls
        self._host_name_at = host_name_at
        self._stamp: Stamp | None = tls.stamp() if tls is not None else None
        self._stubs: dict[str, agent_pb2_grpc.StorageAgentServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        self._guard = threading.Lock()

    def close(self) -> None:
        """Close every channel."""
        with self._guard:
            for channel in self._channels:
                channel.close()
            self._channels.clear()
            self._stubs.clear()

    def _stub(self, address: str) -> agent_pb2_grpc.StorageAgentServiceStub:
        with self._guard:
            self._forget_stale_stubs()
            stub = self._stubs.get(address)
        if stub is not None:
            return stub
        # Outside the lock: a DB lookup must not hold up calls to other agents.
        name = self._expected_name(address) if self._tls is not None else None
        with self._guard:
            stub = self._stubs.get(address)
            if stub is None:
                stub = agent_pb2_grpc.StorageAgentServiceStub(self._dial(address, name))
                self._stubs[address] = stub
            return stub

    def _dial(self, address: str, tls_name: str | None) -> grpc.Channel:
        # Agents restart; reconnect quickly instead of gRPC's default 2-minute backoff.
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 3000),
        ]
        if self._tls is None:
            channel = grpc.insecure_channel(address, options=options)
        else:
            if tls_name is not None:
                options.append(("grpc.ssl_target_name_override", tls_name))
            channel = grpc.secure_channel(address, self._tls.channel_credentials(), options)
        self._channels.append(channel)
        return channel

    def _expected_name(self, address: str) -> str | None:
        """The host name the agent at ``address`` registered with (None: check the address)."""
        if self._host_name_at is None:
            return None
        try:
            return self._host_name_at(address)
        except Unavailable as exc:
            raise AgentCallError(
                AgentFailure(
                    grpc.StatusCode.UNAVAILABLE,
                    "AGENT_UNAVAILABLE",
                    f"cannot look up the host at {address}: {exc}",
                )
            ) from exc

    def _forget_stale_stubs(self) -> None:
        if self._tls is None:
            return
        try:
            stamp = self._tls.stamp()
        except OSError:  # a file being replaced right now: keep the current channels
            return
        if stamp != self._stamp:
            self._stamp = stamp
            self._stubs.clear()

    def _call(self, fn: Any, request: object, *, extra_s: float = 0.0) -> Any:
        try:
            # Wait for a (re)connecting channel within the deadline rather than failing fast.
            return fn(request, timeout=self.timeout + extra_s, wait_for_ready=True)
        except grpc.RpcError as exc:
            raise AgentCallError(_failure_from_rpc(exc)) from exc

    def init_domain(self, address: str, op_id: str, domain_id: str, name: str) -> AgentOperation:
        resp: agent_pb2.InitDomainResponse = self._call(
            self._stub(address).InitDomain,
            agent_pb2.InitDomainRequest(op_id=op_id, domain_id=domain_id, name=name),
        )
        return _operation(resp.operation)

    def create_volume(
        self,
        address: str,
        op_id: str,
        domain_id: str,
        disk_id: str,
        volume_id: str,
        *,
        parent_id: str | None = None,
        virtual_size: int = 0,
        fmt: str = "COW",
    ) -> AgentOperation:
        req = agent_pb2.CreateVolumeRequest(
            op_id=op_id, domain_id=domain_id, disk_id=disk_id, volume_id=volume_id
        )
        if parent_id:
            req.parent_volume_id = parent_id
        else:
            req.base.virtual_size = virtual_size
            req.base.format = _FORMATS[fmt]
        resp: agent_pb2.CreateVolumeResponse = self._call(self._stub(address).CreateVolume, req)
        return _operation(resp.operation)

    def delete_volume(
        self, address: str, op_id: str, domain_id: str, disk_id: str, volume_id: str
    ) -> AgentOperation:
        resp: agent_pb2.DeleteVolumeResponse = self._call(
            self._stub(address).DeleteVolume,
            agent_pb2.DeleteVolumeRequest(
                op_id=op_id, domain_id=domain_id, disk_id=disk_id, volume_id=volume_id
            ),
        )
        return _operation(resp.operation)

    def merge_volumes(
        self,
        address: str,
        op_id: str,
        domain_id: str,
        disk_id: str,
        base_id: str,
        top_id: str,
        base_parent_id: str | None,
    ) -> AgentOperation:
        resp: agent_pb2.MergeVolumesResponse = self._call(
            self._stub(address).MergeVolumes,
            agent_pb2.MergeVolumesRequest(
                op_id=op_id,
                domain_id=domain_id,
                disk_id=disk_id,
                base_id=base_id,
                top_id=top_id,
                base_parent_id=base_parent_id or "",
                survivor_id=top_id,
            ),
        )
        return _operation(resp.operation)

    def rebase_volume(
        self,
        address: str,
        op_id: str,
        domain_id: str,
        disk_id: str,
        volume_id: str,
        new_parent_id: str | None,
    ) -> AgentOperation:
        resp: agent_pb2.RebaseVolumeResponse = self._call(
            self._stub(address).RebaseVolume,
            agent_pb2.RebaseVolumeRequest(
                op_id=op_id,
                domain_id=domain_id,
                disk_id=disk_id,
                volume_id=volume_id,
                new_parent_id=new_parent_id or "",
            ),
        )
        return _operation(resp.operation)

    def get_operation(self, address: str, op_id: str, wait_s: float = 0.0) -> AgentOperation:
        resp: agent_pb2.GetOperationResponse = self._call(
            self._stub(address).GetOperation,
            agent_pb2.GetOperationRequest(op_id=op_id, wait_ms=int(wait_s * 1000)),
            extra_s=wait_s,
        )
        return _operation(resp.operation)

    def list_volumes(
        self, address: str, domain_id: str, disk_id: str, *, recorded_only: bool = False
    ) -> DiskListing:
        resp: agent_pb2.ListVolumesResponse = self._call(
            self._stub(address).ListVolumes,
            agent_pb2.ListVolumesRequest(
                domain_id=domain_id, disk_id=disk_id, recorded_only=recorded_only
            ),
        )
        return DiskListing(
            volumes=[_volume(v) for v in resp.volumes],
            stray_files=[s.name for s in resp.stray_files],
        )

    def verify_volume(
        self, address: str, op_id: str, domain_id: str, disk_id: str, volume_id: str
    ) -> str:
        resp: agent_pb2.VerifyVolumeResponse = self._call(
            self._stub(address).VerifyVolume,
            agent_pb2.VerifyVolumeRequest(
                op_id=op_id, domain_id=domain_id, disk_id=disk_id, volume_id=volume_id
            ),
        )
        report = resp.operation.result.verify
        if report.ok:
            return ""
        return (
            f"{report.corruptions} corruptions, {report.leaks} leaks, "
            f"{report.check_errors} check errors"
        )


def _failure_from_rpc(exc: grpc.RpcError) -> AgentFailure:
    code: grpc.StatusCode = exc.code()
    message: str = exc.details() or ""
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return AgentFailure(code, info.reason, message, dict(info.metadata))
    reason = "AGENT_UNAVAILABLE" if code in TRANSIENT_CODES else "AGENT_ERROR"
    return AgentFailure(code, reason, message)


def _volume(v: agent_pb2.Volume) -> VolumeInfo:
    return VolumeInfo(
        volume_id=v.volume_id,
        disk_id=v.disk_id,
        parent_id=v.parent_id or None,
        format=_FORMAT_NAMES.get(v.format, "COW"),
        virtual_size=v.virtual_size,
        actual_size=v.actual_size,
    )


def _operation(op: agent_pb2.Operation) -> AgentOperation:
    error = None
    if op.HasField("error"):
        error = AgentFailure(
            grpc.StatusCode(_status_code(op.error.code)),
            op.error.reason,
            op.error.message,
            dict(op.error.metadata),
        )
    result = op.result
    return AgentOperation(
        op_id=op.op_id,
        state=OpState(agent_pb2.OperationState.Name(op.state).removeprefix("OPERATION_STATE_")),
        progress=op.progress,
        volume=_volume(result.volume) if result.HasField("volume") else None,
        already_absent=result.already_absent,
        direction=_DIRECTIONS.get(result.direction, ""),
        base_modified=result.base_modified,
        error=error,
        domain_free_bytes=result.domain.free_bytes,
        domain_total_bytes=result.domain.total_bytes,
    )


def _status_code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value  # type: ignore[no-any-return]
    return grpc.StatusCode.UNKNOWN.value  # type: ignore[no-any-return]
