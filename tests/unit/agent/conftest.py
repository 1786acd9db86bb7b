"""Fixtures for the storage agent's unit tests: a real Runtime on tmp_path, real qemu-img.

Data is written and checked with qemu-io through ``support.qemu``; sizes stay in MiB so the
whole suite runs in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_agent.config import AgentSettings
from storage_agent.ops.init_domain import InitDomainInput, init_domain
from storage_agent.runtime import Runtime, build_runtime
from unit.agent.storage_helpers import Disk, new_id


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    root = tmp_path / "root"
    root.mkdir()
    return AgentSettings(root=root, state_dir=tmp_path / "state", host_name="unit-host")


@pytest.fixture
def rt(settings: AgentSettings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    yield runtime
    runtime.runner.shutdown(grace_s=5)


@pytest.fixture
def domain_id(rt: Runtime) -> str:
    domain = new_id()
    init_domain(rt, InitDomainInput(new_id(), domain, "unit-domain"))
    return domain


@pytest.fixture
def disk(rt: Runtime, domain_id: str) -> Disk:
    return Disk(rt, domain_id, new_id())
