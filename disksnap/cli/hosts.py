"""``disksnap host``: hypervisor hosts (registered by their storage agents)."""

from __future__ import annotations

import typer

from disksnap.cli import _render as render
from disksnap.cli._resolve import names_by_id
from disksnap.cli._session import OutputOption, session

app = typer.Typer(
    help="Hypervisor hosts (registered by their storage agents).", no_args_is_help=True
)


@app.command("list")
def list_hosts(ctx: typer.Context, output: OutputOption = None) -> None:
    """List hosts with their status. JSON: an array of host objects."""
    s = session(ctx, output)
    hosts = s.client.list_hosts()
    if s.json:
        s.emit([render.host_json(h) for h in hosts])
        return
    domains = names_by_id(s.client.list_storage_domains())
    s.emit(None, render.hosts_table(hosts, domains))
