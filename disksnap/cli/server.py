"""``disksnap server``: run the embedded engine + local agent in the foreground."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from disksnap._client import DEFAULT_ADDRESS
from disksnap.cli._errors import CliError, ExitCode
from disksnap.cli._session import OutputOption, session
from disksnap.embedded import DOMAIN_NAME, EmbeddedServer, default_data_dir


class _Terminate(Exception):
    """SIGTERM received."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminate()


def server(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where the database, storage and logs live "
            "[default: $XDG_DATA_HOME/disksnap or ~/.local/share/disksnap].",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option("--listen", help="Engine address (port 0 picks a free port).")
    ] = DEFAULT_ADDRESS,
    output: OutputOption = None,
) -> None:
    """Run an engine (SQLite) and a local storage agent until Ctrl-C or SIGTERM.

    No configuration needed: the agent registers as host 'local' and the storage domain
    'local' is created on first start. JSON: one line {"address", "data_dir", "host_id",
    "domain_id", "engine_log", "agent_log"} once ready.
    """
    s = session(ctx, output)
    embedded = EmbeddedServer(data_dir or default_data_dir(), listen=listen)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        s.info(f"starting the embedded server in {embedded.data_dir} …")
        embedded.start()
        doc = {
            "address": embedded.address,
            "data_dir": str(embedded.data_dir),
            "host_id": embedded.host_id,
            "domain_id": embedded.domain_id,
            "engine_log": str(embedded.engine_log),
            "agent_log": str(embedded.agent_log),
        }
        if s.json:
            s.emit(doc)
        else:
            engine = "" if embedded.address == DEFAULT_ADDRESS else f" --engine {embedded.address}"
            s.out.print(
                f"[green]✓[/] disksnap engine listening on [bold]{embedded.address}[/] "
                f"(storage domain '{DOMAIN_NAME}' on host 'local')\n"
                f"  data: {embedded.data_dir}\n"
                f"  logs: {embedded.engine_log}, {embedded.agent_log}\n"
                f"  try:  disksnap{engine} vm create web1 --disk os:1G\n"
                "Press Ctrl-C to stop."
            )
        while embedded.running():
            time.sleep(0.5)
        raise CliError(
            "CHILD_EXITED",
            f"a server process exited unexpectedly; see {embedded.log_dir}",
            ExitCode.FAILURE,
        )
    except (KeyboardInterrupt, _Terminate):
        s.info("stopping …")
    finally:
        embedded.stop()
        signal.signal(signal.SIGTERM, previous)
    s.info("stopped")
