"""The ``disksnap`` command: assembles the command groups and handles errors in one place."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from disksnap import __version__
from disksnap._client import DEFAULT_ADDRESS
from disksnap._types import Job
from disksnap.cli import check, demo, disks, domains, hosts, jobs, preview, server, snapshots, vms
from disksnap.cli._errors import CliError, describe, error_document, exit_code_for, reason_of
from disksnap.cli._render import job_view
from disksnap.cli._session import (
    ENV_CORRELATION_ID,
    ENV_ENGINE,
    ENV_OUTPUT,
    ENV_TLS_CA,
    ENV_TOKEN,
    OutputFormat,
    Settings,
)
from disksnap.errors import DisksnapError

EPILOG = (
    "Exit codes: 0 ok, 1 failure (failed job, violations, other errors), 2 invalid arguments "
    "or ambiguous name, 3 not found, 4 conflict (name, lock or state), 5 engine unavailable. "
    "VMs, disks and snapshots are named by name/alias/description, id, or id prefix. "
    "JSON documents are described in docs/cli.md."
)


class _Group(typer.core.TyperGroup):
    """The root group: turns every SDK or CLI error into a message and its exit code."""

    def invoke(self, ctx: Any) -> Any:  # ctx: the (vendored) click Context
        try:
            return super().invoke(ctx)
        except (DisksnapError, CliError) as err:
            _report(ctx.obj, err)
            raise typer.Exit(int(exit_code_for(err))) from None


def _report(obj: object, err: BaseException) -> None:
    settings = obj if isinstance(obj, Settings) else Settings()
    output = settings.session.output if settings.session else settings.output
    if output is OutputFormat.JSON:
        doc = error_document(err, engine=settings.engine)
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False), err=True)
        return
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(
        f"[red bold]Error:[/] {describe(err, engine=settings.engine)} [dim]({reason_of(err)})[/]"
    )
    job = getattr(err, "job", None)
    if isinstance(job, Job):
        console.print(job_view(job))


app = typer.Typer(
    cls=_Group,
    name="disksnap",
    help="Per-disk VM snapshots: drive a disksnap engine, or run one locally ('server', 'demo').",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"disksnap {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    engine: Annotated[
        str,
        typer.Option("--engine", "-e", envvar=ENV_ENGINE, help="Engine address HOST:PORT."),
    ] = DEFAULT_ADDRESS,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output", "-o", envvar=ENV_OUTPUT, case_sensitive=False, help="table or json."
        ),
    ] = OutputFormat.TABLE,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar=ENV_TOKEN, help="Bearer token.", show_default=False),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls", help="Use TLS (system CA roots).")] = False,
    tls_ca: Annotated[
        Path | None,
        typer.Option("--tls-ca", envvar=ENV_TLS_CA, help="Use TLS trusting this CA (PEM)."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-call timeout (s).")] = 30.0,
    correlation_id: Annotated[
        str | None,
        typer.Option(
            "--correlation-id",
            envvar=ENV_CORRELATION_ID,
            metavar="ID",
            help="Tag every job this command creates (up to 64 of A-Z a-z 0-9 . _ -).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Global options (also settable by environment variables)."""
    ctx.obj = Settings(
        engine=engine,
        token=token,
        tls=tls,
        tls_ca=tls_ca,
        timeout=timeout,
        output=output,
        correlation_id=correlation_id,
    )


LOCAL, INVENTORY, SNAPSHOTS, JOBS = "Local engine", "Inventory", "Snapshots", "Jobs and checks"
app.command("server", rich_help_panel=LOCAL)(server.server)
app.command("demo", rich_help_panel=LOCAL)(demo.demo)
app.add_typer(hosts.app, name="host", rich_help_panel=INVENTORY)
app.add_typer(domains.app, name="domain", rich_help_panel=INVENTORY)
app.add_typer(vms.app, name="vm", rich_help_panel=INVENTORY)
app.add_typer(disks.app, name="disk", rich_help_panel=INVENTORY)
app.add_typer(snapshots.app, name="snapshot", rich_help_panel=SNAPSHOTS)
app.command("preview", rich_help_panel=SNAPSHOTS)(preview.preview)
app.command("commit", rich_help_panel=SNAPSHOTS)(preview.commit)
app.command("undo", rich_help_panel=SNAPSHOTS)(preview.undo)
app.command("restore", rich_help_panel=SNAPSHOTS)(preview.restore)
app.add_typer(jobs.app, name="job", rich_help_panel=JOBS)
app.command("check", rich_help_panel=JOBS)(check.check)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="disksnap")
    sys.exit(0)
