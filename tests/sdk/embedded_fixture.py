"""One EmbeddedServer (engine + local agent) shared by the SDK and CLI suites of a session."""

from __future__ import annotations

import shutil
import uuid

import pytest

from disksnap.embedded import EmbeddedServer

_shared: EmbeddedServer | None = None


def shared_server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedServer:
    """Start the session's embedded server on first use (port 0, a temp data dir)."""
    global _shared
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    if _shared is None or not _shared.running():
        data_dir = tmp_path_factory.mktemp("embedded")
        _shared = EmbeddedServer(data_dir, listen="127.0.0.1:0").start()
    return _shared


def stop_shared() -> None:
    """Stop the shared server (idempotent; called by each suite's session teardown)."""
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
