"""StorageAgentService: the proto edge. Converts, calls the operation, converts back.

Every method goes through :func:`_rpc`, which turns any error into its gRPC status.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from disksnap.agent.v1 import agent_pb2 as pb
from disksnap.agent.v1 import agent_pb2_grpc
from storage_agent import convert
from storage_agent.errors import Code, as_agent_error, invalid_field, to_status
from storage_agent.ops.capabilities import capabilities
from storage_agent.ops.create_volume import create_volume
from storage_agent.ops.delete_volume import delete_volume
from storage_agent.ops.init_domain import init_domain
from storage_agent.ops.memory_state import delete_memory_state, save_memory_state
from storage_agent.ops.merge_volumes import merge_volumes
from storage_agent.ops.rebase_volume import rebase_volume
from storage_agent.ops.verify_volume import verify_volume
from storage_agent.ops.volume_info import get_volume_info, list_volumes
from storage_agent.runtime import Runtime

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StorageAgentService"].full_name
_log = logging.getLogger(__name__)
# Longest GetOperation long poll; the caller's deadline must allow for it.
MAX_WAIT_MS = 60_000

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Self = TypeVar("_Self")


def _rpc(
    method: Callable[[_Self, _Req, Any], _Resp],
) -> Callable[[_Self, _Req, Any], _Resp]:
    @functools.wraps(method)
    def wrapper(self: _Self, request: _Req, context: Any) -> _Resp:
        try:
            return method(self, request, context)
        except Exception as exc:
            err = as_agent_error(exc)
            log = _log.info if err.code != Code.INTERNAL else _log.warning
            log("%s failed: %s %s", method.__name__, err.reason, err.message)
            context.abort_with_status(to_status(err))
            raise AssertionError("abort_with_status returned") from exc

    return wrapper


class StorageAgentServicer(agent_pb2_grpc.StorageAgentServiceServicer):
    """Serves one agent's :class:`Runtime`; each method is the RPC of the same name in
    agent.proto, documented there."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    @_rpc
    def Capabilities(
        self, request: pb.CapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.CapabilitiesResponse:
        return convert.capabilities_response(capabilities(self._rt))

    @_rpc
    def InitDomain(
        self, request: pb.InitDomainRequest, context: grpc.ServicerContext
    ) -> pb.InitDomainResponse:
        record = init_domain(self._rt, convert.init_domain_input(request))
        return pb.InitDomainResponse(operation=convert.operation(record))

    @_rpc
    def CreateVolume(
        self, request: pb.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> pb.CreateVolumeResponse:
        record = create_volume(self._rt, convert.create_volume_input(request))
        return pb.CreateVolumeResponse(operation=convert.operation(record))

    @_rpc
    def DeleteVolume(
        self, request: pb.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVolumeResponse:
        record = delete_volume(self._rt, convert.delete_volume_input(request))
        return pb.DeleteVolumeResponse(operation=convert.operation(record))

    @_rpc
    def MergeVolumes(
        self, request: pb.MergeVolumesRequest, context: grpc.ServicerContext
    ) -> pb.MergeVolumesResponse:
        record = merge_volumes(self._rt, convert.merge_volumes_input(request))
        return pb.MergeVolumesResponse(operation=convert.operation(record))

    @_rpc
    def RebaseVolume(
        self, request: pb.RebaseVolumeRequest, context: grpc.ServicerContext
    ) -> pb.RebaseVolumeResponse:
        record = rebase_volume(self._rt, convert.rebase_volume_input(request))
        return pb.RebaseVolumeResponse(operation=convert.operation(record))

    @_rpc
    def GetVolumeInfo(
        self, request: pb.GetVolumeInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetVolumeInfoResponse:
        view = get_volume_info(self._rt, convert.get_volume_info_input(request))
        return pb.GetVolumeInfoResponse(volume=convert.volume(view))

    @_rpc
    def ListVolumes(
        self, request: pb.ListVolumesRequest, context: grpc.ServicerContext
    ) -> pb.ListVolumesResponse:
        listing = list_volumes(self._rt, convert.list_volumes_input(request))
        return convert.list_volumes_response(listing)

    @_rpc
    def VerifyVolume(
        self, request: pb.VerifyVolumeRequest, context: grpc.ServicerContext
    ) -> pb.VerifyVolumeResponse:
        record = verify_volume(self._rt, convert.verify_volume_input(request))
        return pb.VerifyVolumeResponse(operation=convert.operation(record))

    @_rpc
    def SaveMemoryState(
        self, request: pb.SaveMemoryStateRequest, context: grpc.ServicerContext
    ) -> pb.SaveMemoryStateResponse:
        record = save_memory_state(self._rt, convert.save_memory_state_input(request))
        return pb.SaveMemoryStateResponse(operation=convert.operation(record))

    @_rpc
    def DeleteMemoryState(
        self, request: pb.DeleteMemoryStateRequest, context: grpc.ServicerContext
    ) -> pb.DeleteMemoryStateResponse:
        record = delete_memory_state(self._rt, convert.delete_memory_state_input(request))
        return pb.DeleteMemoryStateResponse(operation=convert.operation(record))

    @_rpc
    def GetOperation(
        self, request: pb.GetOperationRequest, context: grpc.ServicerContext
    ) -> pb.GetOperationResponse:
        if request.wait_ms > MAX_WAIT_MS:
            raise invalid_field("wait_ms", f"at most {MAX_WAIT_MS}")
        record = self._rt.runner.get(request.op_id, wait_s=request.wait_ms / 1000)
        return pb.GetOperationResponse(operation=convert.operation(record))

    @_rpc
    def AbortOperation(
        self, request: pb.AbortOperationRequest, context: grpc.ServicerContext
    ) -> pb.AbortOperationResponse:
        record = self._rt.runner.abort(request.op_id)
        return pb.AbortOperationResponse(operation=convert.operation(record))
