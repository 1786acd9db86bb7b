"""``disksnap job``: list, show and watch jobs."""

from __future__ import annotations

from typing import Annotated, TypeVar

import typer

from disksnap._types import JobKind, JobState
from disksnap.cli import _render as render
from disksnap.cli import _resolve as resolve
from disksnap.cli._errors import invalid
from disksnap.cli._session import OutputOption, session

app = typer.Typer(help="List, show and watch jobs.", no_args_is_help=True)

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="Job id or id prefix.")]


E = TypeVar("E", JobState, JobKind)


def _enum_value(cls: type[E], text: str | None) -> E | None:
    if text is None:
        return None
    try:
        return cls(text.upper())
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise invalid(f"unknown value {text!r} (one of {choices})") from None


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    vm: Annotated[str | None, typer.Option("--vm", help="Only this VM's jobs.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="e.g. RUNNING, FAILED.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="e.g. CREATE_SNAPSHOT.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 20,
    output: OutputOption = None,
) -> None:
    """List recent jobs, newest first. JSON: an array of job objects."""
    s = session(ctx, output)
    jobs = s.client.list_jobs(
        vm_id=resolve.vm(s.client, vm).id if vm else None,
        state=_enum_value(JobState, state),
        kind=_enum_value(JobKind, kind),
        limit=limit,
    )
    if s.json:
        s.emit([render.job_json(j) for j in jobs])
        return
    s.emit(None, render.jobs_table(jobs))


@app.command("show")
def show(ctx: typer.Context, job: JobArg, output: OutputOption = None) -> None:
    """Show a job with its outcomes and steps. JSON: a job object."""
    s = session(ctx, output)
    found = resolve.job(s.client, job)
    s.emit(render.job_json(found), render.job_view(found))


@app.command("watch")
def watch(ctx: typer.Context, job: JobArg, output: OutputOption = None) -> None:
    """Follow a job with a progress bar until it ends. JSON: the final job object."""
    s = session(ctx, output)
    found = resolve.job(s.client, job)
    final = s.follow(s.client.job_handle(found), f"{found.kind.value} {render.short(found.id)}")
    s.emit(render.job_json(final), render.job_view(final))
