"""JobService: get, list and watch jobs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from disksnap.engine.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from engine_svc import convert, queries
from engine_svc.app import EngineApp
from engine_svc.domain import JobState
from engine_svc.servicers.edge import rpc, stream_rpc

WATCH_POLL_S = 0.25


def _name(enum_type: object, prefix: str, value: int) -> str:
    if value == 0:
        return ""
    return str(enum_type.Name(value)).removeprefix(prefix)  # type: ignore[attr-defined]


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """Edge of the job RPCs."""

    def __init__(self, app: EngineApp) -> None:
        self.app = app

    @rpc
    def GetJob(
        self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.GetJobResponse:
        return jobs_pb2.GetJobResponse(
            job=convert.job_to_proto(queries.get_job(self.app.db, request.job_id))
        )

    @rpc
    def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> jobs_pb2.ListJobsResponse:
        jobs, token = queries.list_jobs(
            self.app.db,
            vm_id=request.vm_id,
            state=_name(common_pb2.JobState, "JOB_STATE_", request.state),
            kind=_name(common_pb2.JobKind, "JOB_KIND_", request.kind),
            correlation_id=request.correlation_id,
            size=request.page_size,
            token=request.page_token,
        )
        return jobs_pb2.ListJobsResponse(
            jobs=[convert.job_to_proto(j) for j in jobs], next_page_token=token
        )

    @stream_rpc
    def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[jobs_pb2.WatchJobResponse]:
        seen = -1
        events = self.app.runner.events
        while context.is_active():
            mark, _ = events.last(request.job_id)
            version, _terminal = queries.job_version(self.app.db, request.job_id)
            if version != seen:
                view = queries.get_job(self.app.db, request.job_id)
                seen = view.job.version
                yield jobs_pb2.WatchJobResponse(job=convert.job_to_proto(view))
                if JobState(view.job.state).terminal:
                    return
            events.wait_change(request.job_id, mark, WATCH_POLL_S)
