"""Storage agent benchmark: the agent against raw qemu-img on the same filesystem, same run.

Usage: .venv/bin/python bench/agent_bench.py [--quick] [--dir DIR]

Measures
  (a) create-overlay latency: CreateVolume through the agent vs a bare
      `qemu-img create -f qcow2 -o compat=1.1 -b <parent> -F qcow2 -u <path> <size>`
      (p50/p90; target ratio of the p50s <= 1.5);
  (b) merge throughput: MergeVolumes (polled to DONE) vs `qemu-img commit -p -t none -b base -f
      qcow2 top` on identical freshly built layers (COMMIT, target <= 1.1), and vs a safe
      `qemu-img rebase -t none -T none` for the PULL direction; os.sync() before each run;
  (c) idle agent RSS (VmRSS; target <= 80 MB).
The agent runs insecure on loopback with its default qemu cache mode (`none`). Prints a table
and the ratios; always exits 0 unless the agent fails.
"""

from __future__ import annotations

import argparse
import os
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

from support import qemu  # noqa: E402
from support.agent import COMMIT, PULL, AgentDriver, describe, expect_done  # noqa: E402
from support.content import GiB, MiB  # noqa: E402
from support.ids import new_uuid  # noqa: E402
from support.processes import AgentProcess  # noqa: E402
from support.qemu import Segment  # noqa: E402

OVERLAY_VIRTUAL_SIZE = 10 * GiB
EXTRA = 16 * MiB  # makes one layer strictly bigger, which decides the merge direction


@dataclass(frozen=True)
class Config:
    create_iterations: int
    merge_bytes: int
    merge_iterations: int


FULL = Config(create_iterations=50, merge_bytes=GiB, merge_iterations=2)
QUICK = Config(create_iterations=20, merge_bytes=256 * MiB, merge_iterations=1)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


class Bench:
    def __init__(self, workdir: Path, config: Config) -> None:
        self.workdir = workdir
        self.config = config
        self.agent = AgentProcess(workdir / "agent")
        self.raw_dir = workdir / "raw"
        self.raw_dir.mkdir()
        self.rows: list[tuple[str, str, str, str]] = []
        self.ratios: list[tuple[str, float, float]] = []

    # -- (a) create --------------------------------------------------------------------------

    def bench_create(self, drv: AgentDriver) -> None:
        disk, parent = new_uuid(), new_uuid()
        expect_done(drv.create_base(disk, parent, size=OVERLAY_VIRTUAL_SIZE))
        raw_parent = self.raw_dir / "create-parent"
        qemu.create(raw_parent, "qcow2", OVERLAY_VIRTUAL_SIZE)
        agent_times: list[float] = []
        raw_times: list[float] = []
        for i in range(self.config.create_iterations + 2):  # two warm-up rounds
            a = timed(lambda: expect_done(drv.create_overlay(disk, parent)))
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
            r = timed(lambda argv=argv: subprocess.run(argv, check=True))  # type: ignore[misc]
            if i >= 2:
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
                    f"n={len(times)}",
                )
            )
        self.ratios.append(
            (
                "create p50 agent/raw",
                statistics.median(agent_times) / statistics.median(raw_times),
                1.5,
            )
        )

    # -- (b) merge ---------------------------------------------------------------------------

    def layer_segments(self, direction: int) -> tuple[Segment, Segment]:
        """(base, top) data; the copied amount is merge_bytes in both directions."""
        n = self.config.merge_bytes
        if direction == COMMIT:  # top smaller: its n bytes are committed into base
            return Segment(0, n + EXTRA, 0x11), Segment(n + EXTRA, n, 0x22)
        return Segment(0, n, 0x11), Segment(n, n + EXTRA, 0x22)  # base's n bytes pulled up

    @property
    def disk_size(self) -> int:
        return 2 * self.config.merge_bytes + 2 * EXTRA

    def agent_merge(self, drv: AgentDriver, direction: int) -> float:
        base_seg, top_seg = self.layer_segments(direction)
        disk, base, top = new_uuid(), new_uuid(), new_uuid()
        expect_done(drv.create_base(disk, base, size=self.disk_size))
        qemu.write_patterns(drv.volume_path(disk, base), "qcow2", [base_seg])
        expect_done(drv.create_overlay(disk, base, top))
        qemu.write_patterns(drv.volume_path(disk, top), "qcow2", [top_seg])
        os.sync()
        start = time.perf_counter()
        op = drv.start_merge(drv.merge_request(disk, base, top, ""))
        op = drv.wait(op.op_id, timeout=3600, interval=0.01)
        seconds = time.perf_counter() - start
        expect_done(op)
        if op.result.direction != direction:
            raise SystemExit(f"agent chose another direction than the layers force: {describe(op)}")
        survivor = drv.volume_path(disk, top)
        qemu.assert_segments(
            survivor,
            "qcow2",
            [
                Segment(base_seg.offset, MiB, 0x11),
                Segment(top_seg.offset + top_seg.length - MiB, MiB, 0x22),
            ],
        )
        expect_done(drv.delete_volume(disk, top))
        return seconds

    def raw_merge(self, direction: int) -> tuple[float, float]:
        """Seconds of the bare qemu-img command, and of the unlink of the dropped file."""
        base_seg, top_seg = self.layer_segments(direction)
        run_dir = self.raw_dir / f"merge-{new_uuid()}"
        run_dir.mkdir()
        base, top = run_dir / "base", run_dir / "top"
        qemu.create(base, "qcow2", self.disk_size)
        qemu.write_patterns(base, "qcow2", [base_seg])
        qemu.create(top, "qcow2", self.disk_size, backing="base", backing_fmt="qcow2")
        qemu.write_patterns(top, "qcow2", [top_seg])
        os.sync()
        if direction == COMMIT:
            seconds = timed(lambda: qemu.commit(top, base, cache="none"))
            dropped = top
        else:
            seconds = timed(lambda: qemu.rebase(top, "", cache="none"))
            dropped = base
        unlink = timed(lambda: dropped.unlink())
        shutil.rmtree(run_dir)
        return seconds, unlink

    def bench_merge(self, drv: AgentDriver) -> None:
        n = self.config.merge_bytes
        for direction, label, raw_label in (
            (COMMIT, "COMMIT", "raw qemu-img commit -t none"),
            (PULL, "PULL", "raw qemu-img rebase (safe) -t/-T none"),
        ):
            agent_times: list[float] = []
            raw_times: list[float] = []
            unlink_times: list[float] = []
            for _ in range(self.config.merge_iterations):
                agent_times.append(self.agent_merge(drv, direction))
                raw, unlink = self.raw_merge(direction)
                raw_times.append(raw)
                unlink_times.append(unlink)
            a, r, u = (statistics.median(t) for t in (agent_times, raw_times, unlink_times))
            mib = n / MiB
            self.rows.append(
                (
                    f"agent MergeVolumes {label}",
                    fmt_seconds(a),
                    f"{mib / a:.0f} MiB/s",
                    f"{mib:.0f} MiB",
                )
            )
            self.rows.append((raw_label, fmt_seconds(r), f"{mib / r:.0f} MiB/s", f"{mib:.0f} MiB"))
            self.rows.append(
                (
                    "  raw + unlink of dropped file",
                    fmt_seconds(r + u),
                    f"{mib / (r + u):.0f} MiB/s",
                    "info only",
                )
            )
            self.ratios.append((f"merge {label} time agent/raw", a / r, 1.1))

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
        widths = [max(len(row[i]) for row in self.rows) for i in range(4)]
        header = ("measurement", "p50 / time", "p90 / rate", "notes")
        widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
        for row in (header, tuple("-" * w for w in widths), *self.rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        print()
        for name, value, target in self.ratios:
            verdict = "ok" if value <= target else "ABOVE TARGET"
            print(f"{name:36} {value:7.2f}  (target <= {target:g})  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="256 MiB and fewer iterations")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (a tmp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="disksnap-bench-", dir=args.dir))
    print(
        f"scratch {workdir} ({'quick' if args.quick else 'full'}: "
        f"{config.create_iterations} creates, merges of {config.merge_bytes // MiB} MiB "
        f"x{config.merge_iterations})",
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
