"""Proto ↔ domain conversion for StorageAgentService; the only module (with the servicer)
that imports the generated ``agent_pb2``."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from disksnap.agent.v1 import agent_pb2 as pb
from storage_agent.model import DomainView, OpResult, StrayFile, VolumeFormat, VolumeView
from storage_agent.operations import OperationRecord
from storage_agent.ops.capabilities import AgentCapabilities
from storage_agent.ops.create_volume import BaseSpec, CreateVolumeInput
from storage_agent.ops.delete_volume import DeleteVolumeInput
from storage_agent.ops.init_domain import InitDomainInput
from storage_agent.ops.memory_state import DeleteMemoryStateInput, SaveMemoryStateInput
from storage_agent.ops.merge_volumes import MergeVolumesInput
from storage_agent.ops.rebase_volume import RebaseVolumeInput
from storage_agent.ops.verify_volume import VerifyVolumeInput
from storage_agent.ops.volume_info import GetVolumeInfoInput, ListVolumesInput, VolumeListing

_FORMATS = {pb.VOLUME_FORMAT_RAW: VolumeFormat.RAW, pb.VOLUME_FORMAT_COW: VolumeFormat.COW}

# Requests → inputs.


def init_domain_input(req: pb.InitDomainRequest) -> InitDomainInput:
    """InitDomainRequest → InitDomainInput."""
    return InitDomainInput(op_id=req.op_id, domain_id=req.domain_id, name=req.name)


def create_volume_input(req: pb.CreateVolumeRequest) -> CreateVolumeInput:
    """CreateVolumeRequest → CreateVolumeInput (the oneof becomes parent_id or base)."""
    source = req.WhichOneof("source")
    base = None
    if source == "base":
        base = BaseSpec(virtual_size=req.base.virtual_size, format=_FORMATS.get(req.base.format))
    return CreateVolumeInput(
        op_id=req.op_id,
        domain_id=req.domain_id,
        disk_id=req.disk_id,
        volume_id=req.volume_id,
        parent_id=req.parent_volume_id if source == "parent_volume_id" else None,
        base=base,
    )


def delete_volume_input(req: pb.DeleteVolumeRequest) -> DeleteVolumeInput:
    """DeleteVolumeRequest → DeleteVolumeInput."""
    return DeleteVolumeInput(req.op_id, req.domain_id, req.disk_id, req.volume_id)


def merge_volumes_input(req: pb.MergeVolumesRequest) -> MergeVolumesInput:
    """MergeVolumesRequest → MergeVolumesInput (an empty base_parent_id means none)."""
    return MergeVolumesInput(
        op_id=req.op_id,
        domain_id=req.domain_id,
        disk_id=req.disk_id,
        base_id=req.base_id,
        top_id=req.top_id,
        base_parent_id=req.base_parent_id or None,
        survivor_id=req.survivor_id,
    )


def rebase_volume_input(req: pb.RebaseVolumeRequest) -> RebaseVolumeInput:
    """RebaseVolumeRequest → RebaseVolumeInput (an empty new_parent_id means none)."""
    return RebaseVolumeInput(
        op_id=req.op_id,
        domain_id=req.domain_id,
        disk_id=req.disk_id,
        volume_id=req.volume_id,
        new_parent_id=req.new_parent_id or None,
    )


def get_volume_info_input(req: pb.GetVolumeInfoRequest) -> GetVolumeInfoInput:
    """GetVolumeInfoRequest → GetVolumeInfoInput."""
    return GetVolumeInfoInput(req.domain_id, req.disk_id, req.volume_id)


def list_volumes_input(req: pb.ListVolumesRequest) -> ListVolumesInput:
    """ListVolumesRequest → ListVolumesInput."""
    return ListVolumesInput(req.domain_id, req.disk_id, req.recorded_only)


def verify_volume_input(req: pb.VerifyVolumeRequest) -> VerifyVolumeInput:
    """VerifyVolumeRequest → VerifyVolumeInput."""
    return VerifyVolumeInput(req.op_id, req.domain_id, req.disk_id, req.volume_id)


def save_memory_state_input(req: pb.SaveMemoryStateRequest) -> SaveMemoryStateInput:
    """SaveMemoryStateRequest → SaveMemoryStateInput."""
    return SaveMemoryStateInput(req.op_id, req.domain_id, req.memory_id, req.vm_id)


def delete_memory_state_input(req: pb.DeleteMemoryStateRequest) -> DeleteMemoryStateInput:
    """DeleteMemoryStateRequest → DeleteMemoryStateInput."""
    return DeleteMemoryStateInput(req.op_id, req.domain_id, req.memory_id)


# Domain values → messages.


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp."""
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def volume(view: VolumeView) -> pb.Volume:
    """VolumeView → Volume."""
    return pb.Volume(
        volume_id=view.volume_id,
        disk_id=view.disk_id,
        domain_id=view.domain_id,
        parent_id=view.parent_id or "",
        format=pb.VolumeFormat.Value(f"VOLUME_FORMAT_{view.format.value}"),
        virtual_size=view.virtual_size,
        actual_size=view.actual_size,
        created_at=timestamp(view.created_at),
        op_id=view.op_id,
        leaf=view.leaf,
    )


def operation(record: OperationRecord) -> pb.Operation:
    """OperationRecord → Operation."""
    message = pb.Operation(
        op_id=record.op_id,
        kind=pb.OperationKind.Value(f"OPERATION_KIND_{record.kind.value}"),
        state=pb.OperationState.Value(f"OPERATION_STATE_{record.state.value}"),
        progress=record.progress,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
    )
    if record.result is not None:
        message.result.CopyFrom(_result(record.result))
    if record.error is not None:
        message.error.CopyFrom(
            pb.ErrorDetail(
                code=record.error.code,
                reason=record.error.reason,
                message=record.error.message,
                metadata=record.error.metadata,
            )
        )
    return message


def _result(result: OpResult) -> pb.OperationResult:
    message = pb.OperationResult(
        already_absent=result.already_absent,
        direction=pb.MergeDirection.Value(f"MERGE_DIRECTION_{result.direction.value}"),
        base_modified=result.base_modified,
    )
    if result.volume is not None:
        message.volume.CopyFrom(volume(result.volume))
    if result.verify is not None:
        message.verify.CopyFrom(
            pb.VerifyReport(
                ok=result.verify.ok,
                corruptions=result.verify.corruptions,
                leaks=result.verify.leaks,
                check_errors=result.verify.check_errors,
                image_end_offset=result.verify.image_end_offset,
            )
        )
    if result.domain is not None:
        message.domain.CopyFrom(domain(result.domain))
    return message


def domain(view: DomainView) -> pb.Domain:
    """DomainView → Domain."""
    return pb.Domain(
        domain_id=view.domain_id,
        name=view.name,
        free_bytes=view.free_bytes,
        total_bytes=view.total_bytes,
    )


def stray_file(stray: StrayFile) -> pb.StrayFile:
    """StrayFile → StrayFile message."""
    return pb.StrayFile(name=stray.name, detail=stray.detail)


def list_volumes_response(listing: VolumeListing) -> pb.ListVolumesResponse:
    """VolumeListing → ListVolumesResponse."""
    return pb.ListVolumesResponse(
        volumes=[volume(v) for v in listing.volumes],
        stray_files=[stray_file(s) for s in listing.strays],
    )


def capabilities_response(caps: AgentCapabilities) -> pb.CapabilitiesResponse:
    """AgentCapabilities → CapabilitiesResponse."""
    return pb.CapabilitiesResponse(
        host_name=caps.host_name,
        agent_version=caps.agent_version,
        qemu_img_version=caps.qemu_img_version,
        formats=list(caps.formats),
        operations=list(caps.operations),
        live_ops=caps.live_ops,
        root=caps.root,
        domains=[domain(d) for d in caps.domains],
    )
