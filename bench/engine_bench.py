"""Engine benchmark: CreateSnapshot end to end against raw qemu-img in the same run.

Usage: .venv/bin/python bench/engine_bench.py [--quick] [--db sqlite|postgresql]

Measures (p50 over N iterations, baseline interleaved with the measured runs):
  (a) a single-disk snapshot through the engine (CreateSnapshot with wait_timeout_s, i.e.
      admission, which also claims the job, the agent's CreateVolume, finalize) vs a bare
      `qemu-img create -f qcow2 -o compat=1.1 -b <parent> -F qcow2 -u <path> <size>` plus the
      fsyncs a durable create needs; target ratio <= 1.5;
  (b) a 16-disk snapshot on 4 agents vs the same 16 raw creates run 4 at a time (the
      engine's per-job disk parallelism, SPEC §3.1); target <= 1.3;
  (c) engine overhead: a single-disk snapshot against a no-op agent (an in-process gRPC
      server that answers CreateVolume at once), on PostgreSQL; target p50 <= 5 ms.
The floor of (a) and (b), info: the same overlays created by calling the agents' CreateVolume
directly (no engine), against the same raw creates. A snapshot also does that agent work, so
its ratio cannot be below the floor's; "engine's part" is the snapshot against that floor.
Real engine and agent processes on loopback; PostgreSQL is the DISKSNAP_TEST_PG server
(a throwaway database, dropped at the end). Prints a table and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from functools import partial
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from disksnap.agent.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
from disksnap.engine.v1 import (  # noqa: E402
    common_pb2,
    inventory_pb2,
    registry_pb2,
    registry_pb2_grpc,
    snapshots_pb2,
)
from engine_svc.agents.client import GrpcAgentClient, OpState  # noqa: E402
from engine_svc.db.migrate import upgrade  # noqa: E402
from support.engine import Cluster, EngineApi, EngineProcess, PgDatabases, pg_admin_url  # noqa: E402

MiB = 1024 * 1024
DISK_SIZE = 64 * MiB


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def p50(values: list[float]) -> float:
    return statistics.median(values)


def raw_create(directory: Path, parent: Path, n: int) -> None:
    """A durable overlay create: qemu-img plus fsync of the file and its directory."""
    path = directory / f"raw-{n}-{time.monotonic_ns()}"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=1.1",
            "-b",
            parent.name,
            "-F",
            "qcow2",
            "-u",
            str(path),
            str(DISK_SIZE),
        ],
        check=True,
        cwd=directory,
    )
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    dfd = os.open(directory, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def snapshot(api: EngineApi, vm_id: str) -> None:
    job = api.snapshots.CreateSnapshot(
        snapshots_pb2.CreateSnapshotRequest(
            vm_id=vm_id,
            description="bench",
            envelope=common_pb2.RequestEnvelope(wait_timeout_s=60),
        ),
        timeout=70,
    ).job
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"snapshot failed: {job}")


def agent_create(
    agents: GrpcAgentClient, address: str, domain_id: str, disk_id: str, parent_id: str
) -> None:
    """An overlay created by the agent alone, through the engine's own agent client, as a
    snapshot's step does (the floor)."""
    volume_id = str(uuid.uuid4())
    op = agents.create_volume(
        address, volume_id, domain_id, disk_id, volume_id, parent_id=parent_id
    )
    if op.state is not OpState.DONE:
        raise SystemExit(f"agent create failed: {op}")


def with_real_agents(db_url: str, work: Path, iterations: int) -> list[tuple[str, float, float]]:
    cluster = Cluster(work / "cluster", db_url, agent_count=4, allow_fault_injection=False)
    cluster.start()
    agents = GrpcAgentClient()
    rows = []
    try:
        api = cluster.api()
        raw_dir = cluster.agents[0].root / "raw"
        raw_dir.mkdir()
        parent = raw_dir / "parent"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(parent), str(DISK_SIZE)], check=True
        )
        one = api.create_vm("bench-one")
        api.add_disk(one, "d", cluster.domain_ids[0], DISK_SIZE)
        many = api.create_vm("bench-many")
        # The floor's overlays go on each disk's base volume: (address, domain, disk, parent).
        [(disk, base)] = api.heads(one).items()
        floor_one = (cluster.agents[0].address, cluster.domain_ids[0], disk, base)
        placed = [
            (
                cluster.agents[i % 4].address,
                cluster.domain_ids[i % 4],
                api.add_disk(many, f"d{i}", cluster.domain_ids[i % 4], DISK_SIZE),
            )
            for i in range(16)
        ]
        bases = api.heads(many)
        floor_many = [(address, domain, disk, bases[disk]) for address, domain, disk in placed]
        snapshot(api, one)  # warm up channels and caches
        agent_create(agents, *floor_one)
        engine_one: list[float] = []
        raw_one: list[float] = []
        agent_one: list[float] = []
        for n in range(iterations):
            engine_one.append(timed(lambda: snapshot(api, one)))
            raw_one.append(timed(partial(raw_create, raw_dir, parent, n)))
            agent_one.append(timed(lambda: agent_create(agents, *floor_one)))
        rows.append(("1 disk: snapshot vs raw create", p50(engine_one), p50(raw_one)))
        rows.append(("  floor: agent CreateVolume alone vs raw", p50(agent_one), p50(raw_one)))
        rows.append(("  engine's part: snapshot vs agent alone", p50(engine_one), p50(agent_one)))
        engine_many, raw_many, agent_many = [], [], []
        with futures.ThreadPoolExecutor(4) as pool:
            for n in range(max(3, iterations // 4)):
                engine_many.append(timed(lambda: snapshot(api, many)))

                def parallel(n: int = n) -> None:
                    list(pool.map(lambda i: raw_create(raw_dir, parent, n * 100 + i), range(16)))

                raw_many.append(timed(parallel))
                agent_many.append(
                    timed(lambda: list(pool.map(lambda f: agent_create(agents, *f), floor_many)))
                )
        rows.append(("16 disks on 4 agents vs 16 raw creates", p50(engine_many), p50(raw_many)))
        rows.append(
            ("  floor: 16 agent CreateVolumes alone vs raw", p50(agent_many), p50(raw_many))
        )
        rows.append(
            ("  engine's part: snapshot vs agents alone", p50(engine_many), p50(agent_many))
        )
    finally:
        agents.close()
        cluster.stop()
    return rows


class NoOpAgent(agent_pb2_grpc.StorageAgentServiceServicer):
    """Answers CreateVolume at once, as if storage were free."""

    def CreateVolume(
        self, request: agent_pb2.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> agent_pb2.CreateVolumeResponse:
        return agent_pb2.CreateVolumeResponse(
            operation=agent_pb2.Operation(
                op_id=request.op_id,
                kind=agent_pb2.OPERATION_KIND_CREATE_VOLUME,
                state=agent_pb2.OPERATION_STATE_DONE,
                progress=100,
                result=agent_pb2.OperationResult(
                    volume=agent_pb2.Volume(
                        volume_id=request.volume_id,
                        disk_id=request.disk_id,
                        domain_id=request.domain_id,
                        parent_id=request.parent_volume_id,
                        format=agent_pb2.VOLUME_FORMAT_COW,
                        virtual_size=DISK_SIZE,
                    )
                ),
            )
        )

    def InitDomain(
        self, request: agent_pb2.InitDomainRequest, context: grpc.ServicerContext
    ) -> agent_pb2.InitDomainResponse:
        return agent_pb2.InitDomainResponse(
            operation=agent_pb2.Operation(
                op_id=request.op_id,
                state=agent_pb2.OPERATION_STATE_DONE,
                result=agent_pb2.OperationResult(
                    domain=agent_pb2.Domain(
                        domain_id=request.domain_id, free_bytes=1 << 40, total_bytes=1 << 41
                    )
                ),
            )
        )


def engine_overhead(db_url: str, work: Path, iterations: int) -> float:
    """p50 of a single-disk snapshot against the no-op agent."""
    agent = grpc.server(futures.ThreadPoolExecutor(8))
    # The stubs declare every RPC abstract; the no-op agent implements what the engine calls.
    agent_pb2_grpc.add_StorageAgentServiceServicer_to_server(
        NoOpAgent(),  # type: ignore[abstract]
        agent,
    )
    port = agent.add_insecure_port("127.0.0.1:0")
    agent.start()
    engine = EngineProcess(work / "noop-engine", db_url, name="noop").start()
    stop = threading.Event()
    try:
        registry = registry_pb2_grpc.AgentRegistryServiceStub(engine.channel())
        host_id = registry.RegisterHost(
            registry_pb2.RegisterHostRequest(name="noop", address=f"127.0.0.1:{port}"),
            timeout=10,
        ).host_id

        def beat() -> None:
            while not stop.wait(0.5):
                registry.Heartbeat(
                    registry_pb2.HeartbeatRequest(host_id=host_id, name="noop", domains=domains),
                    timeout=5,
                )

        api = engine.api()
        job = api.inventory.CreateStorageDomain(
            inventory_pb2.CreateStorageDomainRequest(name="noop", host_id=host_id), timeout=10
        ).job
        domain_id = api.wait_job(job.id).result.domain_id
        domains = [
            registry_pb2.DomainSpace(domain_id=domain_id, free_bytes=1 << 40, total_bytes=1 << 41)
        ]
        threading.Thread(target=beat, daemon=True).start()
        vm = api.create_vm("noop-vm")
        api.add_disk(vm, "d", domain_id, DISK_SIZE)
        snapshot(api, vm)
        return p50([timed(lambda: snapshot(api, vm)) for _ in range(iterations)])
    finally:
        stop.set()
        engine.stop()
        agent.stop(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    args = parser.parse_args(argv)
    iterations = 10 if args.quick else 30
    dbs = PgDatabases(pg_admin_url())
    try:
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
            work = Path(tmp)

            def fresh(kind: str, name: str) -> str:
                if kind == "sqlite":
                    return f"sqlite:///{work / name}.db"
                url = dbs.create()
                upgrade(url)
                return url

            rows = with_real_agents(fresh(args.db, "real"), work, iterations)
            overhead = engine_overhead(fresh("postgresql", "noop"), work, iterations * 3)
    finally:
        dbs.drop_all()
    print(f"engine benchmark ({args.db}, {iterations} iterations, p50)")
    print(f"{'case':45} {'measured':>10} {'baseline':>10} {'ratio':>7}")
    for name, engine_s, raw_s in rows:
        print(f"{name:45} {engine_s * 1000:8.1f}ms {raw_s * 1000:8.1f}ms {engine_s / raw_s:6.2f}x")
    print(f"{'engine overhead, no-op agent, PostgreSQL':45} {overhead * 1000:8.1f}ms")
    print("targets: 1 disk <= 1.5x, 16 disks <= 1.3x, overhead <= 5 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
