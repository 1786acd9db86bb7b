"""SnapshotService: create, list, get, volume trees (preview/commit/undo/remove follow)."""

from __future__ import annotations

import grpc

from disksnap.engine.v1 import snapshots_pb2, snapshots_pb2_grpc
from engine_svc import convert, queries
from engine_svc.app import EngineApp
from engine_svc.commands.commit_preview import CommitPreview, commit_preview
from engine_svc.commands.create_snapshot import CreateSnapshot, create_snapshot
from engine_svc.commands.preview_snapshot import preview_snapshot
from engine_svc.commands.remove_disk_snapshots import RemoveDiskSnapshots, remove_disk_snapshots
from engine_svc.commands.remove_snapshot import RemoveSnapshot, remove_snapshot
from engine_svc.commands.restore_snapshot import RestoreSnapshot, restore_snapshot
from engine_svc.commands.undo_preview import UndoPreview, undo_preview
from engine_svc.servicers.edge import rpc


class SnapshotServicer(snapshots_pb2_grpc.SnapshotServiceServicer):
    """Edge of the snapshot RPCs."""

    def __init__(self, app: EngineApp) -> None:
        self.app = app

    @rpc
    def CreateSnapshot(
        self, request: snapshots_pb2.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.CreateSnapshotResponse:
        env = convert.envelope_from_proto(request.envelope)
        disk_ids = tuple(request.disks.disk_ids) if request.HasField("disks") else None
        job, started = create_snapshot(
            self.app.db,
            self.app.settings,
            CreateSnapshot(
                vm_id=request.vm_id,
                description=request.description,
                disk_ids=disk_ids,
                save_memory=request.save_memory,
                atomic=request.atomic,
                envelope=env,
            ),
            self.app.runner.lease_offer(),
        )
        view = self.app.admitted(job, env.wait_timeout_s, started=started)
        return snapshots_pb2.CreateSnapshotResponse(job=convert.job_to_proto(view))

    @rpc
    def ListSnapshots(
        self, request: snapshots_pb2.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.ListSnapshotsResponse:
        snaps = queries.list_snapshots(self.app.db, request.vm_id)
        return snapshots_pb2.ListSnapshotsResponse(
            snapshots=[convert.snapshot_to_proto(s) for s in snaps]
        )

    @rpc
    def GetSnapshot(
        self, request: snapshots_pb2.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.GetSnapshotResponse:
        view, vm = queries.get_snapshot(self.app.db, request.vm_id, request.snapshot_id)
        out = snapshots_pb2.GetSnapshotResponse(snapshot=convert.snapshot_to_proto(view))
        snapshot = view.snapshot
        if vm is not None:
            out.config.CopyFrom(convert.active_config_to_proto(vm))
        elif snapshot.config:
            out.config.CopyFrom(convert.snapshot_config_to_proto(snapshot.config))
        if snapshot.memory:
            out.memory.CopyFrom(snapshots_pb2.MemoryRef(**snapshot.memory))
        if snapshot.preview_plan:
            out.preview_plan.CopyFrom(convert.preview_plan_to_proto(snapshot.preview_plan))
        return out

    @rpc
    def PreviewSnapshot(
        self, request: snapshots_pb2.PreviewSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.PreviewSnapshotResponse:
        cmd = convert.preview_from_proto(
            request.vm_id,
            request.config_snapshot_id,
            request.restore_memory,
            request.disks,
            request.exclude_disk_ids,
            request.envelope,
        )
        job = preview_snapshot(self.app.db, self.app.settings, cmd)
        view = self.app.admitted(job, cmd.envelope.wait_timeout_s)
        return snapshots_pb2.PreviewSnapshotResponse(job=convert.job_to_proto(view))

    @rpc
    def CommitPreview(
        self, request: snapshots_pb2.CommitPreviewRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.CommitPreviewResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = commit_preview(
            self.app.db,
            self.app.settings,
            CommitPreview(request.vm_id, request.delete_detached_disks, env),
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return snapshots_pb2.CommitPreviewResponse(job=convert.job_to_proto(view))

    @rpc
    def UndoPreview(
        self, request: snapshots_pb2.UndoPreviewRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.UndoPreviewResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = undo_preview(self.app.db, self.app.settings, UndoPreview(request.vm_id, env))
        view = self.app.admitted(job, env.wait_timeout_s)
        return snapshots_pb2.UndoPreviewResponse(job=convert.job_to_proto(view))

    @rpc
    def RestoreSnapshot(
        self, request: snapshots_pb2.RestoreSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.RestoreSnapshotResponse:
        cmd = convert.preview_from_proto(
            request.vm_id,
            request.config_snapshot_id,
            request.restore_memory,
            request.disks,
            request.exclude_disk_ids,
            request.envelope,
        )
        job = restore_snapshot(
            self.app.db,
            self.app.settings,
            RestoreSnapshot(cmd, request.delete_detached_disks),
        )
        view = self.app.admitted(job, cmd.envelope.wait_timeout_s)
        return snapshots_pb2.RestoreSnapshotResponse(job=convert.job_to_proto(view))

    @rpc
    def RemoveSnapshot(
        self, request: snapshots_pb2.RemoveSnapshotRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.RemoveSnapshotResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = remove_snapshot(
            self.app.db,
            self.app.settings,
            RemoveSnapshot(vm_id=request.vm_id, snapshot_id=request.snapshot_id, envelope=env),
            self.app.agents,
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return snapshots_pb2.RemoveSnapshotResponse(job=convert.job_to_proto(view))

    @rpc
    def RemoveDiskSnapshots(
        self, request: snapshots_pb2.RemoveDiskSnapshotsRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.RemoveDiskSnapshotsResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = remove_disk_snapshots(
            self.app.db,
            self.app.settings,
            RemoveDiskSnapshots(volume_ids=tuple(request.volume_ids), envelope=env),
            self.app.agents,
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return snapshots_pb2.RemoveDiskSnapshotsResponse(job=convert.job_to_proto(view))

    @rpc
    def GetDiskVolumeTree(
        self, request: snapshots_pb2.GetDiskVolumeTreeRequest, context: grpc.ServicerContext
    ) -> snapshots_pb2.GetDiskVolumeTreeResponse:
        return convert.volume_tree_to_proto(queries.volume_tree(self.app.db, request.disk_id))
