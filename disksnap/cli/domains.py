"""``disksnap domain``: storage domains."""

from __future__ import annotations

from typing import Annotated

import typer

from disksnap.cli import _render as render
from disksnap.cli import _resolve as resolve
from disksnap.cli._resolve import names_by_id
from disksnap.cli._session import NoWaitOption, OutputOption, session

app = typer.Typer(help="Storage domains.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Name of the new domain.")],
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Host (name or id) to create it on; default: the only UP host."
        ),
    ] = None,
    no_wait: NoWaitOption = False,
    output: OutputOption = None,
) -> None:
    """Create a storage domain on a host. JSON: {"job": ..., "domain": ...}."""
    s = session(ctx, output)
    target = resolve.host(s.client, host)
    handle = s.client.create_storage_domain(name, target.id, wait=False)
    job = s.follow(handle, f"Creating domain {name}", wait=not no_wait)
    extra: dict[str, object] = {"domain": None}
    if job.succeeded and job.result.domain_id:
        domain = next(
            (d for d in s.client.list_storage_domains() if d.id == job.result.domain_id), None
        )
        extra["domain"] = render.domain_json(domain) if domain else None
    s.emit_job(
        job, f"Storage domain {name} created on {target.name}", extra=extra, waited=not no_wait
    )


@app.command("list")
def list_domains(ctx: typer.Context, output: OutputOption = None) -> None:
    """List storage domains with status and space. JSON: an array of domain objects."""
    s = session(ctx, output)
    domains = s.client.list_storage_domains()
    if s.json:
        s.emit([render.domain_json(d) for d in domains])
        return
    s.emit(None, render.domains_table(domains, names_by_id(s.client.list_hosts())))
