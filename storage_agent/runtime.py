"""The services every operation uses, wired once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from storage_agent import qemu_img
from storage_agent.config import AgentSettings
from storage_agent.faults import FaultInjector
from storage_agent.layout import Layout, Trash
from storage_agent.locks import VolumeLocks
from storage_agent.operations import OperationRunner, OperationStore

TOMBSTONE_RETENTION = timedelta(days=7)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Settings, layout, locks and the operation runner of one agent."""

    settings: AgentSettings
    layout: Layout
    trash: Trash
    locks: VolumeLocks
    runner: OperationRunner
    qemu_img_version: str

    def qemu_cache(self, path: Path) -> str:
        """The qemu-img cache mode for an image at ``path``."""
        return qemu_img.cache_mode(self.settings.qemu_cache, str(path))

    def prune(self) -> tuple[int, int, int]:
        """Drop expired operation records and tombstones and empty the trash; return counts."""
        return (
            self.runner.prune(),
            self.layout.prune_tombstones(TOMBSTONE_RETENTION),
            self.trash.empty(),
        )


def build_runtime(settings: AgentSettings) -> Runtime:
    """Create the state directory (and a missing root) and wire the services."""
    if not settings.root.exists():
        _log.warning("creating the missing root %s", settings.root)
        settings.root.mkdir(mode=0o755, parents=True)
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    locks = VolumeLocks(settings.state_dir)
    faults = FaultInjector(settings.faults_file if settings.allow_fault_injection else None)
    runner = OperationRunner(
        OperationStore(settings.state_dir), locks, faults, settings.long_op_workers
    )
    layout = Layout(settings.root, settings.domains)
    return Runtime(
        settings=settings,
        layout=layout,
        trash=Trash(layout),
        locks=locks,
        runner=runner,
        qemu_img_version=qemu_img.version(),
    )
