"""``disksnap server`` and ``disksnap demo``: the embedded default, end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.conftest import Cli
from disksnap.embedded import EmbeddedServer

DISKSNAP = Path(sys.executable).parent / "disksnap"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_server(data: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``disksnap server`` on ``data`` and the JSON it prints once it serves."""
    proc = subprocess.Popen(
        [str(DISKSNAP), "-o", "json", "server", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        lines.append(line)
        if line.strip() == "}":
            break
    return proc, json.loads("".join(lines))


def _child_pids(data: Path) -> list[int]:
    pids = [
        json.loads((data / f"{name}.ready.json").read_text()).get("pid")
        for name in ("agent", "engine")
    ]
    assert all(isinstance(pid, int) for pid in pids), pids
    return pids


def _assert_exit(pids: list[int]) -> None:
    for pid in pids:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"child {pid} still running"


def test_server_command_starts_stops_and_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, info = _start_server(data)
    try:
        assert info["data_dir"] == str(data.resolve())
        assert (data / "engine.db").exists() and (data / "storage" / info["domain_id"]).is_dir()
        env = dict(os.environ, DISKSNAP_ENGINE=info["address"])
        listed = subprocess.run(
            [str(DISKSNAP), "-o", "json", "domain", "list"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert [d["name"] for d in json.loads(listed.stdout)] == ["local"]
        pids = _child_pids(data)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        _assert_exit(pids)
        # A restart on the same data dir finds the existing domain instead of creating one.
        with EmbeddedServer(data, listen="127.0.0.1:0") as again:
            assert again.domain_id == info["domain_id"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_server_children_die_with_a_killed_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, _info = _start_server(data)
    try:
        pids = _child_pids(data)
        assert all(_alive(pid) for pid in pids)
    finally:
        proc.kill()
        proc.wait(10)
    _assert_exit(pids)


@pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io is not installed")
def test_demo(cli: Cli) -> None:
    r = cli("demo", json=True)
    assert r.exit_code == 0, r.stdout + r.stderr
    report = r.json()
    assert report["ok"] is True
    statuses = {s["step"]: s["status"] for s in report["steps"]}
    assert statuses["Full snapshot S1"] == "ok"
    assert statuses["Verify every snapshot volume"] == "ok"
    assert statuses["Commit the preview"] == "ok"
    assert set(statuses.values()) == {"ok"}
    assert not Path(report["data_dir"]).exists()  # throwaway
