"""Capabilities: versions, formats, operations and served domains of this agent."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from storage_agent.model import DomainView
from storage_agent.ops.init_domain import domain_view
from storage_agent.runtime import Runtime

FORMATS = ("raw", "qcow2")
# SaveMemoryState is left out: it needs live_ops, which v1 agents do not have.
OPERATIONS = (
    "Capabilities",
    "InitDomain",
    "CreateVolume",
    "DeleteVolume",
    "MergeVolumes",
    "RebaseVolume",
    "GetVolumeInfo",
    "ListVolumes",
    "VerifyVolume",
    "DeleteMemoryState",
    "GetOperation",
    "AbortOperation",
)


@dataclass(frozen=True)
class AgentCapabilities:
    """What Capabilities reports."""

    host_name: str
    agent_version: str
    qemu_img_version: str
    formats: tuple[str, ...]
    operations: tuple[str, ...]
    live_ops: bool
    root: str
    domains: list[DomainView]


def agent_version() -> str:
    """The installed package version."""
    try:
        return metadata.version("disksnap")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def capabilities(rt: Runtime) -> AgentCapabilities:
    """Describe this agent and the domains it serves, with their free and total bytes."""
    return AgentCapabilities(
        host_name=rt.settings.host_name,
        agent_version=agent_version(),
        qemu_img_version=rt.qemu_img_version,
        formats=FORMATS,
        operations=OPERATIONS,
        live_ops=False,
        root=str(rt.layout.root),
        domains=[domain_view(rt, d.domain_id, d.name) for d in rt.layout.served_domains()],
    )
