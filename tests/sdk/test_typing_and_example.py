"""mypy --strict over the SDK, CLI and example, and the example run against the engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from disksnap.embedded import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
SDK_FILES = [
    "disksnap/__init__.py",
    "disksnap/_client.py",
    "disksnap/_convert.py",
    "disksnap/_types.py",
    "disksnap/errors.py",
    "disksnap/embedded.py",
    "disksnap/cli",
    "examples/sdk_example.py",
]


def test_mypy_strict_on_the_sdk_cli_and_example() -> None:
    mypy = Path(sys.executable).parent / "mypy"
    done = subprocess.run(
        [str(mypy), "--strict", *SDK_FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_runs(server: EmbeddedServer) -> None:
    env = dict(os.environ, DISKSNAP_ENGINE=server.address)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sdk_example.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "full snapshot" in done.stdout and "NAME_ALREADY_USED" in done.stdout
