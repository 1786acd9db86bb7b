"""``disksnap demo``: the single-disk-snapshot story end to end on a throwaway server.

A VM with three disks gets data written into its disk files (with qemu-io), a full snapshot
S1, more data, a single-disk snapshot S2 and more data. A custom preview then combines S1's
configuration with the ``os`` disk from S2, ``data`` from S1 and ``logs`` as it is now; the
preview is committed and every disk's contents is checked. The exit code is 0 only if every
step verified its data.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule

from disksnap._client import Client
from disksnap._types import DiskFormat, DiskSelection, Vm, VolumeTree
from disksnap.cli import _render as render
from disksnap.cli._errors import ExitCode
from disksnap.cli._session import OutputOption, Session, session
from disksnap.embedded import EmbeddedServer
from disksnap.errors import DisksnapError

MIB = 1 << 20
DiskPlan = tuple[tuple[str, int, DiskFormat], ...]
DISKS: DiskPlan = (
    ("os", 256 * MIB, DiskFormat.COW),
    ("data", 128 * MIB, DiskFormat.COW),
    ("logs", 64 * MIB, DiskFormat.RAW),
)
# The byte each disk holds after each write round: os a1→a2→a3, data b1→b2, logs c1→c2.
PATTERNS = {"os": (0xA1, 0xA2, 0xA3), "data": (0xB1, 0xB2), "logs": (0xC1, 0xC2)}
REGION = "0 1M"


class DemoFailed(Exception):
    """A verification failed."""


@dataclass
class _Report:
    steps: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s["status"] != "failed" for s in self.steps)


class _Demo:
    def __init__(self, s: Session, client: Client, server: EmbeddedServer) -> None:
        self.s = s
        self.client = client
        self.server = server
        self.report = _Report()
        self.vm_id = ""
        self.disk_ids: dict[str, str] = {}
        self.snapshots: dict[str, str] = {}
        self._n = 0

    # -- plumbing ---------------------------------------------------------------------------

    def step(self, title: str, action: Callable[[], str | None]) -> None:
        """Run one step, narrate it and record its result; a failure ends the demo."""
        self._n += 1
        self.say(Rule(f"[bold]{self._n}. {title}", align="left"))
        try:
            detail = action() or ""
        except (DemoFailed, DisksnapError) as err:
            self.say(f"[red]✗ {err}[/]")
            self.report.steps.append({"step": title, "status": "failed", "detail": str(err)})
            raise DemoFailed(str(err)) from err
        self.say(f"[green]✓[/] {detail}" if detail else "[green]✓[/]")
        self.report.steps.append({"step": title, "status": "ok", "detail": detail})

    def say(self, renderable: object) -> None:
        """Print a step's narration or a table (nothing with --output json)."""
        if not self.s.json:
            self.s.out.print(renderable)

    show = say

    def vm(self) -> Vm:
        return self.client.get_vm(self.vm_id)

    def tree(self, alias: str) -> VolumeTree:
        return self.client.get_disk_volume_tree(self.disk_ids[alias])

    def _volume(self, alias: str, volume_id: str | None = None) -> tuple[Path, str]:
        tree = self.tree(alias)
        wanted = volume_id or tree.head_id
        node = next(v for v in tree.volumes if v.id == wanted)
        path = self.server.volume_path(tree.disk.id, node.id, tree.disk.domain_id)
        return path, "raw" if node.format is DiskFormat.RAW else "qcow2"

    @staticmethod
    def _qemu_io(path: Path, fmt: str, command: str, *, read_only: bool) -> None:
        argv = ["qemu-io", *(["-r"] if read_only else []), "-f", fmt, "-c", command, str(path)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or "fail" in done.stdout.lower():
            raise DemoFailed(f"{' '.join(argv)}: {(done.stdout + done.stderr).strip()}")

    def write(self, alias: str, pattern: int) -> None:
        path, fmt = self._volume(alias)
        self._qemu_io(path, fmt, f"write -P {pattern:#x} {REGION}", read_only=False)

    def expect(self, alias: str, pattern: int, volume_id: str | None = None) -> str:
        """Check the disk (its head, or one volume viewed through its backing chain)."""
        path, fmt = self._volume(alias, volume_id)
        try:
            self._qemu_io(path, fmt, f"read -P {pattern:#x} {REGION}", read_only=True)
        except DemoFailed:
            where = f"volume {render.short(volume_id)}" if volume_id else "head"
            raise DemoFailed(f"{alias} ({where}) does not hold {pattern:#x}") from None
        return f"{alias}={pattern:#x}"

    def snapshot_volume(self, snapshot: str, alias: str) -> str:
        snaps = {s.id: s for s in self.client.list_snapshots(self.vm_id)}
        held = next(d for d in snaps[self.snapshots[snapshot]].disks if d.alias == alias)
        return held.volume_id

    def show_trees(self) -> None:
        for alias in self.disk_ids:
            self.show(render.tree_view(self.tree(alias)))

    # -- the story --------------------------------------------------------------------------

    def run(self) -> None:
        self.step("Create a VM with three disks", self.create_vm)
        self.step("Write round 1 into every disk", lambda: self.write_round(0, DISKS))
        self.step("Full snapshot S1", self.snapshot_s1)
        self.step("Write round 2 into every disk", lambda: self.write_round(1, DISKS))
        self.step("Single-disk snapshot S2 (os only)", self.snapshot_s2)
        self.step("Write round 3 into os", lambda: self.write_round(2, DISKS[:1]))
        self.step("Verify every snapshot volume", self.verify_snapshots)
        self.step("Snapshot table", self.show_snapshots)
        self.step("Change the configuration (4 vCPUs)", self.update_vm)
        self.step(
            "Custom preview: config from S1, os from S2, data from S1, logs current",
            self.preview,
        )
        self.step("The VM and its disk trees", self.show_vm)
        self.step("Commit the preview", self.commit)
        self.step("Consistency check", self.check)

    def create_vm(self) -> str:
        job = self.client.create_vm("demo-vm", cpu_count=2, memory_mb=2048, description="demo")
        self.vm_id = job.result.vm_id or ""
        for alias, size, fmt in DISKS:
            handle = self.client.add_disk(
                alias,
                size,
                domain_id=self.server.domain_id,
                vm_id=self.vm_id,
                format=fmt,
                wait=False,
            )
            disk_job = self.s.follow(handle, f"disk {alias}")
            self.disk_ids[alias] = disk_job.result.disk_id or ""
        self.show(render.vms_table([self.vm()]))
        return f"demo-vm {self.vm_id} with disks os (qcow2), data (qcow2), logs (raw)"

    def write_round(self, index: int, disks: DiskPlan) -> str:
        done = []
        for alias, _, _ in disks:
            self.write(alias, PATTERNS[alias][index])
            done.append(self.expect(alias, PATTERNS[alias][index]))
        return "wrote " + ", ".join(done)

    def _snapshot(self, name: str, description: str, disk_ids: list[str] | None) -> str:
        handle = self.client.create_snapshot(self.vm_id, description, disk_ids=disk_ids, wait=False)
        job = self.s.follow(handle, f"snapshot {name}")
        self.snapshots[name] = job.result.snapshot_id or ""
        outcomes = ", ".join(f"{o.disk_alias}: {o.outcome.value}" for o in job.outcomes)
        return f"{name} = {self.snapshots[name]} ({job.state.value}; {outcomes})"

    def snapshot_s1(self) -> str:
        return self._snapshot("S1", "S1: all disks", None)

    def snapshot_s2(self) -> str:
        return self._snapshot("S2", "S2: os only", [self.disk_ids["os"]])

    def verify_snapshots(self) -> str:
        checked = []
        for alias, _, _ in DISKS:
            checked.append(
                self.expect(alias, PATTERNS[alias][0], self.snapshot_volume("S1", alias))
            )
        checked.append(self.expect("os", PATTERNS["os"][1], self.snapshot_volume("S2", "os")))
        checked += [self.expect("os", 0xA3), self.expect("data", 0xB2), self.expect("logs", 0xC2)]
        return "S1: os/data/logs round 1; S2: os round 2; heads: " + ", ".join(checked[-3:])

    def show_snapshots(self) -> str:
        self.show(render.snapshots_table(self.client.list_snapshots(self.vm_id)))
        return ""

    def update_vm(self) -> str:
        self.client.update_vm(self.vm_id, cpu_count=4)
        return "cpu_count 2 → 4 (the preview of S1 brings back 2)"

    def preview(self) -> str:
        vm = self.vm()
        self.client.preview_snapshot(
            self.vm_id,
            config_snapshot_id=self.snapshots["S1"],
            disks=[
                DiskSelection(self.disk_ids["os"], snapshot_id=self.snapshots["S2"]),
                DiskSelection(self.disk_ids["data"], snapshot_id=self.snapshots["S1"]),
                DiskSelection(self.disk_ids["logs"], snapshot_id=vm.active_snapshot_id),
            ],
        )
        self.show(render.snapshots_table(self.client.list_snapshots(self.vm_id)))
        cpus = self.vm().config.cpu_count
        if cpus != 2:
            raise DemoFailed(f"the preview should have S1's 2 vCPUs, the VM has {cpus}")
        return "in preview: 2 vCPUs (from S1), " + ", ".join(self._expected())

    def _expected(self) -> list[str]:
        return [self.expect("os", 0xA2), self.expect("data", 0xB1), self.expect("logs", 0xC2)]

    def show_vm(self) -> str:
        vm = self.vm()
        self.show(render.vm_view(vm, {vm.id: vm.name}, {}))
        self.show_trees()
        return f"{vm.name}: {vm.config.cpu_count} vCPUs, in preview: {vm.in_preview}"

    def commit(self) -> str:
        self.client.commit_preview(self.vm_id)
        vm = self.vm()
        if vm.in_preview:
            raise DemoFailed("the VM is still in preview after commit")
        self.show_trees()
        return "committed: " + ", ".join(self._expected())

    def check(self) -> str:
        found = self.client.check_consistency(vm_id=self.vm_id, verify_images=True, timeout=300)
        if found:
            self.show(render.violations_table(found))
            raise DemoFailed(f"{len(found)} consistency violations")
        return "no violations"


def demo(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Use (and keep) this directory instead of a temp one."),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary data dir.")] = False,
    output: OutputOption = None,
) -> None:
    """Run the single-disk-snapshot story on a throwaway embedded server.

    JSON: {"ok": bool, "data_dir": ..., "steps": [{"step", "status", "detail"}]} where status
    is ok or failed.
    """
    s = session(ctx, output)
    if shutil.which("qemu-io") is None:
        s.info("[red]the demo needs qemu-io (package qemu-utils)[/]")
        raise typer.Exit(ExitCode.FAILURE)
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="disksnap-demo-"))
    runner: _Demo | None = None
    try:
        if not s.json:
            s.out.print(f"Starting a throwaway embedded server in {workdir} …")
        with (
            EmbeddedServer(workdir, listen="127.0.0.1:0") as server,
            Client(server.address, correlation_id=s.settings.correlation_id) as client,
        ):
            runner = _Demo(s, client, server)
            runner.say(f"[green]✓[/] engine at {server.address}, storage in {server.storage_dir}")
            with contextlib.suppress(DemoFailed):
                runner.run()
    finally:
        if data_dir is None and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = runner.report if runner else _Report()
    if s.json:
        s.emit({"ok": report.ok, "data_dir": str(workdir), "steps": report.steps})
    else:
        if report.ok:
            s.out.print("[green bold]Demo finished: every step verified its data.[/]")
        else:
            s.out.print("[red bold]Demo failed.[/]")
        if data_dir is not None or keep:
            s.out.print(f"data kept in {workdir}")
    if not report.ok:
        raise typer.Exit(ExitCode.FAILURE)
