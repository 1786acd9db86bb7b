"""``disksnap check``: run the engine's consistency checker (read-only)."""

from __future__ import annotations

from typing import Annotated

import typer

from disksnap.cli import _render as render
from disksnap.cli import _resolve as resolve
from disksnap.cli._errors import ExitCode, invalid
from disksnap.cli._session import OutputOption, session


def check(
    ctx: typer.Context,
    vm: Annotated[str | None, typer.Option("--vm", help="Check only this VM.")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="Check only this domain.")] = None,
    verify_images: Annotated[
        bool, typer.Option("--verify-images", help="Also run qemu-img check on every volume.")
    ] = False,
    output: OutputOption = None,
) -> None:
    """Compare the engine's records with storage and the invariants (exit 1 on violations).

    JSON: {"consistent": bool, "violations": [{"invariant", "entity_id", "detail"}]}.
    """
    if vm and domain:
        raise invalid("give --vm or --domain, not both")
    s = session(ctx, output)
    found = s.client.check_consistency(
        vm_id=resolve.vm(s.client, vm).id if vm else None,
        domain_id=resolve.domain(s.client, domain).id if domain else None,
        verify_images=verify_images,
        timeout=600,
    )
    if s.json:
        s.emit(render.violations_json(found))
    elif found:
        s.emit(None, render.violations_table(found))
    else:
        s.out.print("[green]✓[/] consistent: no violations")
    if found:
        raise typer.Exit(ExitCode.FAILURE)
