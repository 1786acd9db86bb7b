"""Snapshot removal benchmark: RemoveSnapshot through the engine vs raw qemu-img, same run.

Usage: .venv/bin/python bench/merge_bench.py [--quick] [--reps N] [--dir DIR]

One engine (SQLite) and one agent on this filesystem, started like the tests start them.
Each case builds a VM with one disk whose base volume (owned by snapshot S1) and head hold
the sizes below, then times RemoveSnapshot(S1) from the RPC to the terminal job. The raw
baseline is `qemu-img commit -p -t none -b base -f qcow2 top` on identical layers built the
same way (os.sync() before every timed run; runs alternate between engine and raw).

  big     base N + 16 MiB, head N          the agent COMMITs N: compared with the raw commit
                                           of the same layers (target ratio <= 1.1)
  child   base N, head 16 MiB              COMMIT of the small child: the cost follows the
                                           smaller side (compare with "big")
  parent  base 16 MiB, head N              PULL of the small parent: the raw commit of these
                                           layers must still move N

N is 1 GiB (256 MiB with --quick). Reported per case: the engine's wall time, the agent
operation's own duration (its record's created_at..updated_at) and the raw command. The gap
between the two engine figures is the engine's own work (admission, planning, bookkeeping):
it long-polls GetOperation, so the merge's end is seen at once. Always exits 0 unless
something fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from disksnap.agent.v1 import agent_pb2  # noqa: E402
from disksnap.engine.v1 import common_pb2, inventory_pb2, jobs_pb2, snapshots_pb2  # noqa: E402
from support import qemu  # noqa: E402
from support.content import GiB, MiB  # noqa: E402
from support.engine import Cluster, EngineApi  # noqa: E402
from support.qemu import Segment  # noqa: E402

SMALL = 16 * MiB
TRASH_WAIT_S = 120.0


@dataclass(frozen=True)
class Case:
    name: str
    base_bytes: int
    top_bytes: int
    direction: str
    target: float | None

    def segments(self) -> tuple[Segment, Segment]:
        """(base, top) writes: disjoint ranges, so the merge must keep both."""
        return Segment(0, self.base_bytes, 0x11), Segment(self.base_bytes, self.top_bytes, 0x22)

    @property
    def disk_size(self) -> int:
        return self.base_bytes + self.top_bytes + SMALL

    @property
    def moved(self) -> int:
        return min(self.base_bytes, self.top_bytes)


@dataclass(frozen=True)
class Timing:
    engine: float
    agent_op: float


def cases(n: int) -> list[Case]:
    return [
        Case("big", n + SMALL, n, "COMMIT", 1.1),
        Case("child", n, SMALL, "COMMIT", None),
        Case("parent", SMALL, n, "PULL", None),
    ]


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


class Bench:
    def __init__(self, workdir: Path, n: int, reps: int) -> None:
        self.workdir = workdir
        self.n = n
        self.reps = reps
        self.raw_dir = workdir / "raw"
        self.raw_dir.mkdir(parents=True)
        self.cluster = Cluster(workdir / "cluster", f"sqlite:///{workdir / 'engine.db'}", 1)
        self.rows: list[tuple[str, str, str, str]] = []
        self.ratios: list[tuple[str, float, float | None]] = []
        self.by_case: dict[str, tuple[float, float, float]] = {}

    @property
    def api(self) -> EngineApi:
        return self.cluster.api()

    def wait_trash(self) -> None:
        """Until the agent's background unlinks are over (they must not overlap a timed run)."""
        trash = self.cluster.agents[0].root / self.cluster.domain_ids[0] / "trash"
        deadline = time.monotonic() + TRASH_WAIT_S
        while trash.exists() and any(trash.iterdir()):
            if time.monotonic() > deadline:
                raise SystemExit(f"the agent's trash {trash} is still not empty")
            time.sleep(0.05)

    def engine_run(self, case: Case, rep: int) -> Timing:
        api = self.api
        domain = self.cluster.domain_ids[0]
        vm_id = api.create_vm(f"bench-{case.name}-{rep}")
        disk = api.add_disk(vm_id, "d0", domain, case.disk_size)
        base_seg, top_seg = case.segments()
        base = api.heads(vm_id)[disk]
        qemu.write_patterns(self.cluster.volume_path(0, domain, disk, base), "qcow2", [base_seg])
        snap = api.snapshot(vm_id, "S1")
        assert snap.state == common_pb2.JOB_STATE_SUCCEEDED, snap
        head = api.heads(vm_id)[disk]
        head_path = self.cluster.volume_path(0, domain, disk, head)
        qemu.write_patterns(head_path, "qcow2", [top_seg])
        self.wait_trash()
        os.sync()
        start = time.perf_counter()
        job = api.snapshots.RemoveSnapshot(
            snapshots_pb2.RemoveSnapshotRequest(vm_id=vm_id, snapshot_id=snap.result.snapshot_id),
            timeout=30,
        ).job
        while job.state not in (
            common_pb2.JOB_STATE_SUCCEEDED,
            common_pb2.JOB_STATE_SUCCEEDED_PARTIAL,
            common_pb2.JOB_STATE_FAILED,
        ):
            time.sleep(0.02)
            job = api.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.id), timeout=10).job
        seconds = time.perf_counter() - start
        if job.state != common_pb2.JOB_STATE_SUCCEEDED:
            raise SystemExit(f"RemoveSnapshot failed: {job}")
        [merge] = [s for s in job.steps if s.kind == common_pb2.STEP_KIND_MERGE_VOLUMES]
        op = (
            self.cluster.agents[0]
            .stub()
            .GetOperation(agent_pb2.GetOperationRequest(op_id=merge.op_id), timeout=10)
            .operation
        )
        direction = agent_pb2.MergeDirection.Name(op.result.direction).removeprefix(
            "MERGE_DIRECTION_"
        )
        if direction != case.direction:
            raise SystemExit(f"{case.name}: the agent chose {direction}, not {case.direction}")
        agent_op = (op.updated_at.ToMicroseconds() - op.created_at.ToMicroseconds()) / 1e6
        qemu.assert_segments(
            head_path,
            "qcow2",
            [Segment(0, MiB, 0x11), Segment(top_seg.offset + top_seg.length - MiB, MiB, 0x22)],
        )
        removal = api.inventory.RemoveVm(inventory_pb2.RemoveVmRequest(vm_id=vm_id), timeout=30)
        api.wait_job(removal.job.id)
        return Timing(seconds, agent_op)

    def raw_run(self, case: Case) -> float:
        run_dir = self.raw_dir / f"{case.name}-{time.monotonic_ns()}"
        run_dir.mkdir()
        base, top = run_dir / "base", run_dir / "top"
        base_seg, top_seg = case.segments()
        qemu.create(base, "qcow2", case.disk_size)
        qemu.write_patterns(base, "qcow2", [base_seg])
        qemu.create(top, "qcow2", case.disk_size, backing="base", backing_fmt="qcow2")
        qemu.write_patterns(top, "qcow2", [top_seg])
        os.sync()
        start = time.perf_counter()
        qemu.commit(top, base, cache="none")
        seconds = time.perf_counter() - start
        qemu.assert_segments(base, "qcow2", [Segment(top_seg.offset, MiB, 0x22)])
        shutil.rmtree(run_dir)
        return seconds

    def run(self) -> None:
        self.cluster.start()
        try:
            for case in cases(self.n):
                engine: list[Timing] = []
                raw: list[float] = []
                for rep in range(self.reps):
                    if rep % 2:
                        raw.append(self.raw_run(case))
                        engine.append(self.engine_run(case, rep))
                    else:
                        engine.append(self.engine_run(case, rep))
                        raw.append(self.raw_run(case))
                    print(
                        f"  {case.name} {rep + 1}/{self.reps}: engine {fmt(engine[-1].engine)} "
                        f"(agent op {fmt(engine[-1].agent_op)}), raw commit {fmt(raw[-1])}",
                        flush=True,
                    )
                self.record(case, engine, raw)
        finally:
            self.cluster.stop()

    def record(self, case: Case, engine: list[Timing], raw: list[float]) -> None:
        e = statistics.median(t.engine for t in engine)
        a = statistics.median(t.agent_op for t in engine)
        r = statistics.median(raw)
        self.by_case[case.name] = (e, a, r)
        label = f"{case.name}: base {case.base_bytes // MiB} MiB, head {case.top_bytes // MiB} MiB"
        moved = case.moved / MiB
        self.rows.append((f"{label}, RemoveSnapshot", fmt(e), f"{moved / e:.0f} MiB/s", ""))
        self.rows.append(
            (
                f"  agent MergeVolumes {case.direction} (op record)",
                fmt(a),
                f"{moved / a:.0f} MiB/s",
                "",
            )
        )
        self.rows.append(
            (
                "  raw qemu-img commit -t none, same layers",
                fmt(r),
                f"{case.top_bytes / MiB / r:.0f} MiB/s",
                f"moves {case.top_bytes // MiB} MiB",
            )
        )
        self.ratios.append((f"{case.name}: engine/raw commit", e / r, case.target))
        self.ratios.append((f"{case.name}: agent op/raw commit", a / r, None))

    def report(self) -> None:
        header = ("measurement", "median", "rate", "notes")
        widths = [max(len(row[i]) for row in (header, *self.rows)) for i in range(4)]
        for row in (header, tuple("-" * w for w in widths), *self.rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        print()
        big, child = self.by_case.get("big"), self.by_case.get("child")
        if big and child:
            self.ratios.append(
                ("child/big engine (small child, big parent)", child[0] / big[0], None)
            )
        for name, value, target in self.ratios:
            if target is None:
                print(f"{name:44} {value:6.2f}  (info)")
            else:
                verdict = "ok" if value <= target else "ABOVE TARGET"
                print(f"{name:44} {value:6.2f}  (target <= {target:g})  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="256 MiB instead of 1 GiB")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per case")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (a tmp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    n = 256 * MiB if args.quick else GiB
    reps = args.reps or (1 if args.quick else 3)
    workdir = Path(tempfile.mkdtemp(prefix="disksnap-merge-bench-", dir=args.dir))
    print(f"scratch {workdir} (N = {n // MiB} MiB, x{reps})", flush=True)
    bench = Bench(workdir, n, reps)
    try:
        bench.run()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    bench.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
