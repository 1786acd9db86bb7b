"""One flow per job kind: how a claimed job is driven from any state to a terminal one."""

from __future__ import annotations

from collections.abc import Callable

from engine_svc.domain import JobKind
from engine_svc.saga.context import JobContext
from engine_svc.saga.flows import (
    add_disk,
    cleanup,
    create_domain,
    create_snapshot,
    preview,
    remove_disk_snapshots,
    remove_snapshot,
)

Flow = Callable[[JobContext], None]

FLOWS: dict[JobKind, Flow] = {
    JobKind.CREATE_SNAPSHOT: create_snapshot.run,
    JobKind.ADD_DISK: add_disk.run,
    JobKind.CREATE_STORAGE_DOMAIN: create_domain.run,
    JobKind.REMOVE_DISK: cleanup.run,
    JobKind.REMOVE_VM: cleanup.run,
    JobKind.COMMIT_PREVIEW: cleanup.run,
    JobKind.UNDO_PREVIEW: cleanup.run,
    JobKind.PREVIEW_SNAPSHOT: preview.run,
    JobKind.RESTORE_SNAPSHOT: preview.run,
    JobKind.REMOVE_SNAPSHOT: remove_snapshot.run,
    JobKind.REMOVE_DISK_SNAPSHOTS: remove_disk_snapshots.run,
}
