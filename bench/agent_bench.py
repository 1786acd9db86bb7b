"""Storage agent benchmark: the agent against raw qemu-img on the same filesystem, same run.

Usage: .venv/bin/python bench/agent_bench.py [--quick] [--dir DIR] [--keep]
                                             [--creates N] [--merge-reps N]

What is measured, and what the agent is compared with
  (a) create-overlay latency: CreateVolume through gRPC vs a bare
      `qemu-img create -f qcow2 -o compat=1.1 -b <parent> -F qcow2 -u <path> <size>` spawned by
      this process (median and p90; target: ratio of the medians <= 1.5). The bare command is
      the floor: the agent also takes the volume locks, claims `<id>.tmp` with O_EXCL, fsyncs
      the image, renames it, writes the sidecar (fsynced, with its directory) and the
      operation record (atomically, not fsynced: the volume itself is the durable outcome),
      and answers over gRPC. The stub is built once, as a real client
      keeps it; the request and argv are built before the clock starts.
  (b) COMMIT merge: MergeVolumes vs `qemu-img commit -p -t none -b base -f qcow2 top` plus the
      file moves the agent does synchronously to reach the same end state (one file named
      `top` holding the merged data): hard-link top into a trash directory, rename base over
      top, fsync the directory (target <= 1.1).
  (c) PULL merge: MergeVolumes vs a safe `qemu-img rebase -p -t none -T none -f qcow2 -b ""
      top` plus the removal the agent does synchronously: rename base into the trash
      directory, fsync the directory (target <= 1.1). A PULL necessarily drops base's file,
      so a baseline without that step would not produce the same result.
      In both directions the agent unlinks the dropped file in a background thread, after its
      work and before recording the outcome: on this ext4 mounted with `discard` an unlink
      costs ~0.4 s per GiB, which no caller waits for. The raw runs unlink it untimed too and
      show that unlink as an info row ("+ unlink"). Before every timed run the bench waits
      for the agent's trash to be empty, so neither side's unlink lands in the other's timing.
      The ratios against the bare command alone are printed as info.
  (d) idle agent RSS (VmRSS; target <= 80 MB).

Fairness of the merge runs: identical layers (base: data 0x11, top: data 0x22, the copied
amount is merge_bytes in both directions; a 16 MiB extra makes the direction unambiguous) are
built fresh for every repetition, on the same filesystem; the same cache mode (`-t none`, the
agent's default); os.sync() right before each timed run; agent and raw runs alternate which
goes first, to cancel drift; median, min and max over the repetitions. The agent's time runs
from the MergeVolumes call until the GetOperation poll (every 10 ms, ~5 ms of the figure on
average) that sees DONE, so everything the agent adds is counted against it: the RPCs, two
`qemu-img info`, the chain checks, and the record, sidecar and tombstone writes with fsyncs.
Both survivors are read back to check they hold the merged data. The targets use the ratio of
the medians; the median of the per-repetition ratios (pairs run back to back) is info.

The machine is shared and noisy (2 vCPUs, a virtual disk): compare medians over several runs.
The agent runs insecure on loopback with its defaults. Prints a table and the ratios; always
exits 0 unless the agent fails.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from disksnap.agent.v1 import agent_pb2  # noqa: E402
from support import qemu  # noqa: E402
from support.agent import COMMIT, PULL, AgentDriver, describe, expect_done  # noqa: E402
from support.content import GiB, MiB  # noqa: E402
from support.ids import new_op_id, new_uuid  # noqa: E402
from support.processes import AgentProcess  # noqa: E402
from support.qemu import Segment  # noqa: E402

OVERLAY_VIRTUAL_SIZE = 10 * GiB
EXTRA = 16 * MiB  # makes one layer strictly bigger, which decides the merge direction
WARMUP = 3
POLL_S = 0.01
TRASH_WAIT_S = 120.0


@dataclass(frozen=True)
class Config:
    create_iterations: int
    merge_bytes: int
    merge_reps: int


FULL = Config(create_iterations=100, merge_bytes=GiB, merge_reps=5)
QUICK = Config(create_iterations=40, merge_bytes=256 * MiB, merge_reps=3)


@dataclass(frozen=True)
class MergeRun:
    """One timed run: the merge (for raw: command + synchronous moves) and its parts."""

    seconds: float
    command: float = 0.0  # raw only: the bare qemu-img command
    unlink: float = 0.0  # raw only: the (untimed) unlink of the dropped file


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def paired(agent: list[float], raw: list[float]) -> float:
    """The median of the per-repetition ratios (each pair ran back to back: less drift)."""
    return statistics.median(a / r for a, r in zip(agent, raw, strict=True))


def fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def spread(values: list[float]) -> str:
    return f"{fmt_seconds(min(values))} .. {fmt_seconds(max(values))}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Bench:
    def __init__(self, workdir: Path, config: Config) -> None:
        self.workdir = workdir
        self.config = config
        self.agent = AgentProcess(workdir / "agent")
        self.raw_dir = workdir / "raw"
        self.raw_dir.mkdir()
        self.raw_trash = self.raw_dir / "trash"
        self.raw_trash.mkdir()
        self.rows: list[tuple[str, str, str, str]] = []
        self.ratios: list[tuple[str, float, float | None]] = []

    # -- (a) create --------------------------------------------------------------------------

    def bench_create(self, drv: AgentDriver) -> None:
        stub = self.agent.stub()
        disk, parent = new_uuid(), new_uuid()
        expect_done(drv.create_base(disk, parent, size=OVERLAY_VIRTUAL_SIZE))
        raw_parent = self.raw_dir / "create-parent"
        qemu.create(raw_parent, "qcow2", OVERLAY_VIRTUAL_SIZE)
        agent_times: list[float] = []
        raw_times: list[float] = []
        for i in range(self.config.create_iterations + WARMUP):
            request = agent_pb2.CreateVolumeRequest(
                op_id=new_op_id(),
                domain_id=drv.domain_id,
                disk_id=disk,
                volume_id=new_uuid(),
                parent_volume_id=parent,
            )
            argv = [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "compat=1.1",
                "-b",
                raw_parent.name,
                "-F",
                "qcow2",
                "-u",
                str(self.raw_dir / f"overlay-{i}"),
                str(OVERLAY_VIRTUAL_SIZE),
            ]

            def agent_run(request: agent_pb2.CreateVolumeRequest = request) -> None:
                expect_done(stub.CreateVolume(request, timeout=60).operation)

            def raw_run(argv: list[str] = argv) -> None:
                subprocess.run(argv, check=True)

            if i % 2:
                r, a = timed(raw_run), timed(agent_run)
            else:
                a, r = timed(agent_run), timed(raw_run)
            if i >= WARMUP:
                agent_times.append(a)
                raw_times.append(r)
        for name, times in (
            ("agent CreateVolume (overlay)", agent_times),
            ("raw qemu-img create -u", raw_times),
        ):
            self.rows.append(
                (
                    name,
                    fmt_seconds(statistics.median(times)),
                    fmt_seconds(percentile(times, 0.9)),
                    f"n={len(times)}, p25 {fmt_seconds(percentile(times, 0.25))}",
                )
            )
        self.ratios.append(
            (
                "create p50 agent/raw",
                statistics.median(agent_times) / statistics.median(raw_times),
                1.5,
            )
        )
        self.ratios.append(("create median of paired ratios", paired(agent_times, raw_times), None))

    # -- (b), (c) merge ----------------------------------------------------------------------

    def layer_segments(self, direction: int) -> tuple[Segment, Segment]:
        """(base, top) data; the copied amount is merge_bytes in both directions."""
        n = self.config.merge_bytes
        if direction == COMMIT:  # top smaller: its n bytes are committed into base
            return Segment(0, n + EXTRA, 0x11), Segment(n + EXTRA, n, 0x22)
        return Segment(0, n, 0x11), Segment(n, n + EXTRA, 0x22)  # base's n bytes pulled up

    @property
    def disk_size(self) -> int:
        return 2 * self.config.merge_bytes + 2 * EXTRA

    def check_survivor(self, path: Path, direction: int) -> None:
        base_seg, top_seg = self.layer_segments(direction)
        qemu.assert_segments(
            path,
            "qcow2",
            [
                Segment(base_seg.offset, MiB, 0x11),
                Segment(top_seg.offset + top_seg.length - MiB, MiB, 0x22),
            ],
        )

    def wait_agent_trash(self, drv: AgentDriver) -> None:
        """Until the agent's background unlinks are over (they must not overlap a timed run)."""
        trash = drv.domain_dir / "trash"
        deadline = time.monotonic() + TRASH_WAIT_S
        while any(trash.iterdir()):
            if time.monotonic() > deadline:
                raise SystemExit(f"the agent's trash {trash} is still not empty")
            time.sleep(0.05)

    def agent_merge(self, drv: AgentDriver, direction: int) -> MergeRun:
        base_seg, top_seg = self.layer_segments(direction)
        disk, base, top = new_uuid(), new_uuid(), new_uuid()
        expect_done(drv.create_base(disk, base, size=self.disk_size))
        qemu.write_patterns(drv.volume_path(disk, base), "qcow2", [base_seg])
        expect_done(drv.create_overlay(disk, base, top))
        qemu.write_patterns(drv.volume_path(disk, top), "qcow2", [top_seg])
        request = drv.merge_request(disk, base, top, "")
        self.wait_agent_trash(drv)
        os.sync()
        start = time.perf_counter()
        op = drv.start_merge(request)
        op = drv.wait(op.op_id, timeout=3600, interval=POLL_S)
        seconds = time.perf_counter() - start
        expect_done(op)
        if op.result.direction != direction:
            raise SystemExit(f"agent chose another direction than the layers force: {describe(op)}")
        self.check_survivor(drv.volume_path(disk, top), direction)
        expect_done(drv.delete_volume(disk, top))
        self.wait_agent_trash(drv)
        return MergeRun(seconds)

    def raw_merge(self, direction: int) -> MergeRun:
        base_seg, top_seg = self.layer_segments(direction)
        run_dir = self.raw_dir / f"merge-{new_uuid()}"
        run_dir.mkdir()
        base, top = run_dir / "base", run_dir / "top"
        qemu.create(base, "qcow2", self.disk_size)
        qemu.write_patterns(base, "qcow2", [base_seg])
        qemu.create(top, "qcow2", self.disk_size, backing="base", backing_fmt="qcow2")
        qemu.write_patterns(top, "qcow2", [top_seg])
        slot = self.raw_trash / secrets.token_hex(8)
        os.sync()
        start = time.perf_counter()
        if direction == COMMIT:
            qemu.commit(top, base, cache="none")
            command = time.perf_counter() - start
            os.link(top, slot)  # top's old data is freed later, as the agent does
            os.rename(base, top)
        else:
            qemu.rebase(top, "", cache="none")
            command = time.perf_counter() - start
            os.rename(base, slot)
        fsync_dir(run_dir)
        seconds = time.perf_counter() - start
        unlink = timed(slot.unlink)
        self.check_survivor(top, direction)
        shutil.rmtree(run_dir)
        return MergeRun(seconds, command, unlink)

    def bench_merge(self, drv: AgentDriver) -> None:
        mib = self.config.merge_bytes / MiB
        reps = self.config.merge_reps
        for direction, label, raw_label in (
            (COMMIT, "COMMIT", "raw commit -t none + link/rename/fsync"),
            (PULL, "PULL", "raw safe rebase -t/-T none + rename/fsync"),
        ):
            agent_runs: list[MergeRun] = []
            raw_runs: list[MergeRun] = []
            for rep in range(reps):
                if rep % 2:
                    raw_runs.append(self.raw_merge(direction))
                    agent_runs.append(self.agent_merge(drv, direction))
                else:
                    agent_runs.append(self.agent_merge(drv, direction))
                    raw_runs.append(self.raw_merge(direction))
                print(
                    f"  {label} {rep + 1}/{reps}: agent {fmt_seconds(agent_runs[-1].seconds)}, "
                    f"raw {fmt_seconds(raw_runs[-1].seconds)} "
                    f"(command {fmt_seconds(raw_runs[-1].command)})",
                    flush=True,
                )
            agent = [run.seconds for run in agent_runs]
            raw = [run.seconds for run in raw_runs]
            command = [run.command for run in raw_runs]
            unlink = [run.unlink for run in raw_runs]
            a, r, c = (statistics.median(t) for t in (agent, raw, command))
            for name, times, median in (
                (f"agent MergeVolumes {label}", agent, a),
                (raw_label, raw, r),
                ("  of which the bare qemu-img", command, c),
            ):
                self.rows.append(
                    (name, fmt_seconds(median), f"{mib / median:.0f} MiB/s", spread(times))
                )
            self.rows.append(
                (
                    "  + unlink of the dropped file",
                    fmt_seconds(statistics.median(unlink)),
                    "",
                    f"{spread(unlink)} (background in the agent; info)",
                )
            )
            self.ratios.append((f"merge {label} agent/raw", a / r, 1.1))
            self.ratios.append((f"merge {label} median of paired ratios", paired(agent, raw), None))
            self.ratios.append((f"merge {label} agent/bare command", a / c, None))

    # -- run ---------------------------------------------------------------------------------

    def run(self) -> None:
        self.agent.start()
        try:
            drv = AgentDriver(self.agent)
            expect_done(drv.init_domain("bench"))
            time.sleep(1.0)
            idle_rss = self.agent.rss_bytes()
            self.bench_create(drv)
            self.bench_merge(drv)
            time.sleep(1.0)
            after_rss = self.agent.rss_bytes()
        finally:
            self.agent.close()
        self.rows.append(("agent idle RSS (after start)", f"{idle_rss / 1e6:.1f} MB", "", ""))
        self.rows.append(("agent idle RSS (after the runs)", f"{after_rss / 1e6:.1f} MB", "", ""))
        self.ratios.append(("idle RSS MB (absolute)", idle_rss / 1e6, 80.0))

    def report(self) -> None:
        header = ("measurement", "median", "p90 / rate", "spread / notes")
        widths = [max(len(row[i]) for row in (header, *self.rows)) for i in range(4)]
        for row in (header, tuple("-" * w for w in widths), *self.rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        print()
        for name, value, target in self.ratios:
            if target is None:
                print(f"{name:36} {value:7.2f}  (info)")
                continue
            verdict = "ok" if value <= target else "ABOVE TARGET"
            print(f"{name:36} {value:7.2f}  (target <= {target:g})  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="256 MiB and fewer iterations")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (a tmp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--creates", type=int, default=None, help="timed create iterations")
    parser.add_argument("--merge-reps", type=int, default=None, help="merge repetitions")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.creates is not None:
        config = Config(args.creates, config.merge_bytes, config.merge_reps)
    if args.merge_reps is not None:
        config = Config(config.create_iterations, config.merge_bytes, args.merge_reps)
    workdir = Path(tempfile.mkdtemp(prefix="disksnap-bench-", dir=args.dir))
    print(
        f"scratch {workdir} ({'quick' if args.quick else 'full'}: "
        f"{config.create_iterations} creates, merges of {config.merge_bytes // MiB} MiB "
        f"x{config.merge_reps})",
        flush=True,
    )
    bench = Bench(workdir, config)
    try:
        bench.run()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    bench.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
