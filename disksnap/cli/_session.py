"""Per-invocation state: global options, the SDK client, output and job following."""

from __future__ import annotations

import enum
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from disksnap._client import DEFAULT_ADDRESS, Client, JobHandle
from disksnap._types import Job, TlsConfig
from disksnap.cli import _render as render

ENV_ENGINE = "DISKSNAP_ENGINE"
ENV_TOKEN = "DISKSNAP_TOKEN"
ENV_TLS_CA = "DISKSNAP_TLS_CA"
ENV_OUTPUT = "DISKSNAP_OUTPUT"
ENV_CORRELATION_ID = "DISKSNAP_CORRELATION_ID"


class OutputFormat(enum.StrEnum):
    """``--output``: rich tables for people, JSON for scripts."""

    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        help="table (default) or json (stable keys, see docs/cli.md).",
        case_sensitive=False,
        show_default=False,
    ),
]
NoWaitOption = Annotated[
    bool,
    typer.Option(
        "--no-wait", help="Return once the job is accepted; follow it with 'disksnap job watch'."
    ),
]


@dataclass
class Settings:
    """The root options."""

    engine: str = DEFAULT_ADDRESS
    token: str | None = None
    tls: bool = False
    tls_ca: Path | None = None
    timeout: float = 30.0
    output: OutputFormat = OutputFormat.TABLE
    correlation_id: str | None = None
    session: Session | None = field(default=None, repr=False)


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = 160
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


class Session:
    """What a command needs: the client, the output format and consoles."""

    def __init__(self, settings: Settings, output: OutputFormat | None) -> None:
        self.settings = settings
        self.output = output or settings.output
        self.out = _console(stderr=False)
        self.err = _console(stderr=True)
        self._client: Client | None = None

    @property
    def json(self) -> bool:
        """True with ``--output json``."""
        return self.output is OutputFormat.JSON

    @property
    def client(self) -> Client:
        """The SDK client (connected on first use)."""
        if self._client is None:
            s = self.settings
            tls: bool | TlsConfig = False
            if s.tls_ca is not None:
                tls = TlsConfig(root_certificates=s.tls_ca.read_bytes())
            elif s.tls:
                tls = True
            self._client = Client(
                s.engine,
                tls=tls,
                token=s.token,
                timeout=s.timeout,
                correlation_id=s.correlation_id,
            )
        return self._client

    def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- output -----------------------------------------------------------------------------

    def emit(self, doc: object, *renderables: RenderableType) -> None:
        """Print ``doc`` as JSON, or the renderables."""
        if self.json:
            typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
            return
        for r in renderables:
            self.out.print(r)

    def info(self, message: RenderableType) -> None:
        """A progress or status line for people (stderr; silent with JSON)."""
        if not self.json:
            self.err.print(message)

    # -- jobs -------------------------------------------------------------------------------

    def follow(self, handle: JobHandle, label: str, *, wait: bool = True) -> Job:
        """Wait for a job (unless ``wait`` is false), with a progress bar fed by WatchJob."""
        if not wait:
            return handle.job
        if self.json or handle.done or not self.err.is_terminal:
            return handle.wait()
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("[dim]{task.fields[state]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.err, transient=True) as progress:
            task = progress.add_task(label, total=100, state=handle.job.state.value)

            def update(job: Job) -> None:
                progress.update(task, completed=job.progress, state=job.state.value)

            return handle.wait(progress=update)

    def emit_job(
        self, job: Job, what: str, *, extra: dict[str, object] | None = None, waited: bool = True
    ) -> None:
        """Print a mutating command's result: ``{"job": ..., **extra}`` or a summary line."""
        doc: dict[str, object] = {"job": render.job_json(job), **(extra or {})}
        if self.json:
            self.emit(doc)
            return
        if not waited and not job.done:
            self.out.print(
                f"{what}: job {job.id} {job.state.value}; "
                f"follow it with 'disksnap job watch {job.id}'"
            )
            return
        self.out.print(render.job_line(job, what))
        if job.state.value == "SUCCEEDED_PARTIAL":
            self.out.print(render.job_view(job))


def session(ctx: typer.Context, output: OutputFormat | None = None) -> Session:
    """The session of this invocation (created once, closed with the root context)."""
    root = ctx.find_root()
    settings = root.obj if isinstance(root.obj, Settings) else Settings()
    root.obj = settings
    if settings.session is None:
        settings.session = Session(settings, output)
        root.call_on_close(settings.session.close)
    elif output is not None:
        settings.session.output = output
    return settings.session
