"""Fixtures of the CLI suite: the shared embedded server and a runner for ``disksnap``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sdk.embedded_fixture import shared_server, stop_shared, unique
from typer.testing import CliRunner

from disksnap.cli.app import app
from disksnap.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    yield shared_server(tmp_path_factory)
    stop_shared()


@dataclass
class Run:
    """The outcome of one ``disksnap`` invocation."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stderr)["error"]
        return doc


Cli = Callable[..., Run]


@pytest.fixture(scope="session")
def cli(server: EmbeddedServer) -> Cli:
    """``cli("vm", "list", json=True)`` runs ``disksnap --engine <server> [-o json] vm list``.

    ``env`` adds environment variables for that one invocation.
    """
    runner = CliRunner()

    def run(
        *args: str, json: bool = False, engine: str | None = None, env: dict[str, str] | None = None
    ) -> Run:
        argv = ["--engine", engine or server.address]
        if json:
            argv += ["--output", "json"]
        result = runner.invoke(app, [*argv, *args], env={"COLUMNS": "200", **(env or {})})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def vm_name(cli: Cli) -> str:
    """A fresh VM with disks os (qcow2, 16M) and data (raw, 8M) on domain local."""
    name = unique("cli")
    r = cli("vm", "create", name, "--disk", "os:16M", "--disk", "data:8M:raw", "--domain", "local")
    assert r.exit_code == 0, r.stderr
    return name
