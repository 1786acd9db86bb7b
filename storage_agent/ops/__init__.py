"""One module per agent operation, each a frozen dataclass input and one handler."""

from __future__ import annotations

from storage_agent.model import OpKind
from storage_agent.operations import LongJob, OperationRecord, OperationSpec
from storage_agent.ops.merge_volumes import merge_input, merge_job
from storage_agent.ops.rebase_volume import rebase_input, rebase_job
from storage_agent.runtime import Runtime


def resumable_job(rt: Runtime, record: OperationRecord) -> tuple[OperationSpec, LongJob] | None:
    """The spec and job that resume an unfinished long operation; None for other kinds."""
    if record.kind is OpKind.MERGE_VOLUMES:
        return merge_job(rt, merge_input(record.op_id, record.params))
    if record.kind is OpKind.REBASE_VOLUME:
        return rebase_job(rt, rebase_input(record.op_id, record.params))
    return None
