"""Fixtures for the storage agent's black-box contract tests.

Every agent is a real `disksnap-agent` process; tests talk to it only through the generated
gRPC stub and look at its files with qemu-img/qemu-io. When a test fails, the tail of each
agent's log is attached to the report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from support.agent import AgentDriver, expect_done
from support.processes import AgentFactory, AgentProcess, FaultsFile

_AGENTS = pytest.StashKey[list[AgentProcess]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport]]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for agent in item.stash.get(_AGENTS, []):
            report.sections.append((f"agent log ({agent.workdir.name})", agent.log_tail()))


def _factory(base: Path, registry: list[AgentProcess]) -> AgentFactory:
    def start(name: str = "agent", *, start: bool = True, **kwargs: Any) -> AgentProcess:
        agent = AgentProcess(base / name, **kwargs)
        registry.append(agent)
        if start:
            agent.start()
        return agent

    return start


@pytest.fixture
def agent_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AgentFactory]:
    """Start agents under tmp_path; all are stopped at teardown."""
    agents: list[AgentProcess] = []
    request.node.stash[_AGENTS] = agents
    yield _factory(tmp_path, agents)
    for agent in agents:
        agent.close()


@pytest.fixture
def faults(tmp_path: Path) -> FaultsFile:
    return FaultsFile(tmp_path / "faults.json")


@pytest.fixture
def agent(agent_factory: AgentFactory, faults: FaultsFile) -> AgentProcess:
    """An insecure loopback agent with fault injection enabled (empty rule list)."""
    return agent_factory(allow_fault_injection=True, faults=faults)


@pytest.fixture
def driver(agent: AgentProcess) -> AgentDriver:
    """A driver on a freshly initialised domain of `agent`."""
    drv = AgentDriver(agent)
    expect_done(drv.init_domain())
    return drv


@pytest.fixture(scope="module")
def shared_agent(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """One agent for a whole module, for tests that only read or that are refused."""
    agents: list[AgentProcess] = []
    base = tmp_path_factory.mktemp("shared-agent")
    agent = _factory(base, agents)("agent")
    yield agent
    for a in agents:
        a.close()


@pytest.fixture
def shared_driver(request: pytest.FixtureRequest, shared_agent: AgentProcess) -> AgentDriver:
    """A fresh domain on the module's shared agent."""
    request.node.stash[_AGENTS] = [shared_agent]
    drv = AgentDriver(shared_agent)
    expect_done(drv.init_domain())
    return drv
