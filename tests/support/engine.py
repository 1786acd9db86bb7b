"""Real `disksnap-engine` processes and a small multi-host cluster for end-to-end tests.

`EngineProcess` runs the console script on `127.0.0.1:0` against a database URL and waits
for its ready file. `Cluster` starts one or more engines and N agents (each its own root,
registered through `--engine`), creates one storage domain per agent host through the
engine, and offers the generated stubs. `pg_database` creates throwaway PostgreSQL
databases cloned from a migrated template (dropped by the fixture that owns them).
`db_dump` proves a rejected request changed nothing, `volume_status` damages a volume out of
band, and `token_file` writes an `--auth-token-file`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import psycopg

from disksnap.engine.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from support.processes import AgentProcess, FaultsFile

READY_TIMEOUT = 30.0
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FAST_ENGINE_ARGS = (
    "--heartbeat-interval",
    "1",
    "--lease",
    "3",
    "--transient-budget",
    "6",
    "--compensation-budget",
    "8",
    "--agent-timeout",
    "10",
    "--reaper-interval",
    "2",
    "--free-space-reserve",
    str(64 * 1024 * 1024),
)


def pg_admin_url() -> str:
    """The PostgreSQL server tests may create databases on (DISKSNAP_TEST_PG)."""
    return os.environ.get("DISKSNAP_TEST_PG", DEFAULT_PG)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


class PgDatabases:
    """Creates databases on the test server and drops every one it created."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []
        self.prefix = f"disksnap_test_{uuid.uuid4().hex[:8]}"

    def _exec(self, sql: str) -> None:
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create(self, *, template: str | None = None) -> str:
        """A new empty database (or a clone of ``template``); returns its URL."""
        name = f"{self.prefix}_{len(self.created)}"
        self._exec(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(name)
        return with_database(self.admin_url, name)

    def allow_connections(self, url: str, allowed: bool) -> None:
        """Let clients connect to a database this object created, or refuse every client and
        cut the current connections (the database becomes unreachable for an engine)."""
        name = url.rsplit("/", 1)[1]
        assert name in self.created, f"{name} was not created here"
        self._exec(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            self._exec(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )

    def drop_all(self) -> None:
        """Drop every database this object created."""
        for name in reversed(self.created):
            self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


class EngineStartError(AssertionError):
    """The engine did not become ready; the message carries its log tail."""


class EngineProcess:
    """One engine subprocess."""

    def __init__(
        self,
        workdir: Path,
        db_url: str,
        *,
        name: str = "engine",
        extra_args: Sequence[str] = (),
        tls_ca: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.tls_ca = tls_ca
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        self.name = name
        self.extra_args = tuple(extra_args)
        self.ready_file = workdir / f"{name}.ready.json"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.agent_address = ""
        self._log: IO[bytes] | None = None
        self._channel: grpc.Channel | None = None

    def start(self, *, port: int = 0) -> EngineProcess:
        """Start and wait until it serves."""
        self.ready_file.unlink(missing_ok=True)
        self._log = self.log_path.open("ab")
        argv = [
            str(Path(sys.executable).parent / "disksnap-engine"),
            "serve",
            "--db",
            self.db_url,
            "--listen",
            f"127.0.0.1:{port}",
            "--ready-file",
            str(self.ready_file),
            "--migrate",
            "--engine-id",
            self.name,
            *FAST_ENGINE_ARGS,
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineStartError(
                    f"engine exited rc={self.proc.returncode}\n{self.log_tail()}"
                )
            if self.ready_file.exists():
                ready = json.loads(self.ready_file.read_text())
                self.address = ready["address"]
                self.agent_address = ready["agent_address"]
                return self
            time.sleep(0.05)
        self.kill9()
        raise EngineStartError(f"engine not ready after {READY_TIMEOUT}s\n{self.log_tail()}")

    @property
    def port(self) -> int:
        """The port the engine listens on."""
        return int(self.address.rsplit(":", 1)[1])

    def restart(self) -> EngineProcess:
        """Start again on the same port (after kill9 or stop)."""
        self._close_channel()
        return self.start(port=self.port)

    def kill9(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_channel()

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_channel()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the engine's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def channel(self) -> grpc.Channel:
        """A channel to the engine (reused)."""
        if self._channel is None:
            if self.tls_ca is None:
                self._channel = grpc.insecure_channel(self.address)
            else:
                creds = grpc.ssl_channel_credentials(root_certificates=self.tls_ca.read_bytes())
                self._channel = grpc.secure_channel(self.address, creds)
        return self._channel

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def api(self) -> EngineApi:
        """Stubs of every engine service."""
        return EngineApi(self.channel())


class EngineApi:
    """The engine's stubs plus helpers that tests use everywhere."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        self.snapshots = snapshots_pb2_grpc.SnapshotServiceStub(channel)
        self.jobs = jobs_pb2_grpc.JobServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    def wait_job(self, job_id: str, timeout: float = 120.0) -> common_pb2.Job:
        """Poll until the job is terminal."""
        terminal = {
            common_pb2.JOB_STATE_SUCCEEDED,
            common_pb2.JOB_STATE_SUCCEEDED_PARTIAL,
            common_pb2.JOB_STATE_FAILED,
        }
        deadline = time.monotonic() + timeout
        while True:
            resp: jobs_pb2.GetJobResponse = self.jobs.GetJob(
                jobs_pb2.GetJobRequest(job_id=job_id), timeout=10
            )
            job = resp.job
            if job.state in terminal:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not terminal after {timeout}s: {job}")
            time.sleep(0.1)

    def violations(self, vm_id: str = "") -> list[admin_pb2.Violation]:
        """CheckConsistency (of one VM, or everything) with image verification."""
        scope = admin_pb2.CHECK_SCOPE_VM if vm_id else admin_pb2.CHECK_SCOPE_ALL
        resp = self.admin.CheckConsistency(
            admin_pb2.CheckConsistencyRequest(scope=scope, entity_id=vm_id, verify_images=True),
            timeout=60,
        )
        return list(resp.violations)

    def wait_hosts_up(self, timeout: float = 20.0) -> None:
        """Wait until every registered host heartbeats (e.g. after an engine restart)."""

        def all_up() -> None:
            resp: inventory_pb2.ListHostsResponse = self.inventory.ListHosts(
                inventory_pb2.ListHostsRequest(), timeout=5
            )
            down = [h.name for h in resp.hosts if h.status != inventory_pb2.HOST_STATUS_UP]
            assert not down, f"hosts down: {down}"

        retry(all_up, timeout)

    def assert_consistent(self, vm_id: str = "") -> None:
        """Fail with the list of violations, if any (once every host is UP)."""
        self.wait_hosts_up()
        found = self.violations(vm_id)
        assert not found, "consistency violations:\n" + "\n".join(
            f"{v.invariant} {v.entity_id}: {v.detail}" for v in found
        )

    def create_vm(self, name: str, **config: Any) -> str:
        """Create a VM; returns its id."""
        cfg = inventory_pb2.VmConfig(name=name, cpu_count=2, memory_mb=2048, **config)
        resp: inventory_pb2.CreateVmResponse = self.inventory.CreateVm(
            inventory_pb2.CreateVmRequest(config=cfg), timeout=10
        )
        assert resp.job.state == common_pb2.JOB_STATE_SUCCEEDED, resp.job
        return resp.job.result.vm_id

    def add_disk(
        self, vm_id: str, alias: str, domain_id: str, size: int, *, fmt: Any = 0, **extra: Any
    ) -> str:
        """Add an IMAGE disk to a VM and wait for its base volume; returns the disk id."""
        job = self.inventory.AddDisk(
            inventory_pb2.AddDiskRequest(
                alias=alias,
                vm_id=vm_id,
                domain_id=domain_id,
                virtual_size=size,
                format=fmt or inventory_pb2.DISK_FORMAT_COW,
                **extra,
            ),
            timeout=10,
        ).job
        job = self.wait_job(job.id)
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
        return job.result.disk_id

    def snapshot(
        self, vm_id: str, description: str, disk_ids: Sequence[str] | None = None, **extra: Any
    ) -> common_pb2.Job:
        """CreateSnapshot and wait for the job."""
        req = snapshots_pb2.CreateSnapshotRequest(vm_id=vm_id, description=description, **extra)
        if disk_ids is not None:
            req.disks.disk_ids.extend(disk_ids)
        job = self.snapshots.CreateSnapshot(req, timeout=10).job
        return self.wait_job(job.id)

    def heads(self, vm_id: str) -> dict[str, str]:
        """Disk id → head volume id for the VM's disks."""
        vm = self.inventory.GetVm(inventory_pb2.GetVmRequest(vm_id=vm_id), timeout=10).vm
        return {d.id: d.head_volume_id for d in vm.disks}


@dataclass
class Cluster:
    """Engines and agents on loopback, one storage domain per agent host."""

    workdir: Path
    db_url: str
    agent_count: int = 3
    engine_count: int = 1
    allow_fault_injection: bool = True
    engine_args: Sequence[str] = ()
    engines: list[EngineProcess] = field(default_factory=list)
    agents: list[AgentProcess] = field(default_factory=list)
    faults: list[FaultsFile] = field(default_factory=list)
    host_ids: list[str] = field(default_factory=list)
    domain_ids: list[str] = field(default_factory=list)

    def start(self) -> Cluster:
        """Start everything and create one domain per host (stopping it all on failure)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Cluster:
        for i in range(self.engine_count):
            self.engines.append(
                EngineProcess(
                    self.workdir / f"engine{i}",
                    self.db_url,
                    name=f"engine{i}",
                    extra_args=self.engine_args,
                ).start()
            )
        for i in range(self.agent_count):
            faults = FaultsFile(self.workdir / f"faults{i}.json")
            self.faults.append(faults)
            agent = AgentProcess(
                self.workdir / f"agent{i}",
                host_name=f"host{i}",
                allow_fault_injection=self.allow_fault_injection,
                faults=faults,
                extra_args=["--engine", ",".join(e.agent_address for e in self.engines)],
            )
            self.agents.append(agent.start())
        api = self.api()
        self.host_ids = self._wait_hosts(api)
        for i, host_id in enumerate(self.host_ids):
            job = api.inventory.CreateStorageDomain(
                inventory_pb2.CreateStorageDomainRequest(name=f"sd{i}", host_id=host_id), timeout=10
            ).job
            job = api.wait_job(job.id)
            assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job
            self.domain_ids.append(job.result.domain_id)
        return self

    def _wait_hosts(self, api: EngineApi) -> list[str]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            hosts = api.inventory.ListHosts(inventory_pb2.ListHostsRequest(), timeout=5).hosts
            by_name = {h.name: h.id for h in hosts if h.status == inventory_pb2.HOST_STATUS_UP}
            if all(f"host{i}" in by_name for i in range(self.agent_count)):
                return [by_name[f"host{i}"] for i in range(self.agent_count)]
            time.sleep(0.1)
        raise AssertionError(f"agents did not register: {[a.log_tail() for a in self.agents]}")

    def api(self, engine: int = 0) -> EngineApi:
        """Stubs of one engine."""
        return self.engines[engine].api()

    def volume_path(self, host: int, domain_id: str, disk_id: str, volume_id: str) -> Path:
        """Where a volume file lives on an agent's root."""
        return self.agents[host].root / domain_id / "images" / disk_id / volume_id

    def stop(self) -> None:
        """Stop every process."""
        for agent in self.agents:
            agent.stop()
        for engine in self.engines:
            engine.stop()


def db_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every engine table, sorted: compare before/after a rejected request.

    Heartbeat bookkeeping (hosts, host_domains) changes every second on its own and is left
    out; no request under test writes it.
    """
    from sqlalchemy import select

    from engine_svc.db.models import Base
    from engine_svc.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(
                    (tuple(str(v) for v in row) for row in conn.execute(select(table))),
                )
                for name, table in Base.metadata.tables.items()
                if name not in ("hosts", "host_domains")
            }
    finally:
        engine.dispose()


@contextmanager
def volume_status(db_url: str, volume_id: str, status: str) -> Iterator[None]:
    """Set a volume's status directly in the database for the block (out-of-band damage)."""
    from sqlalchemy import update

    from engine_svc.db.models import Volume
    from engine_svc.db.session import make_engine

    def set_status(value: str) -> str:
        engine = make_engine(db_url)
        try:
            with engine.begin() as conn:
                old = conn.execute(Volume.__table__.select().where(Volume.id == volume_id)).one()
                conn.execute(update(Volume).where(Volume.id == volume_id).values(status=value))
                return str(old.status)
        finally:
            engine.dispose()

    old = set_status(status)
    try:
        yield
    finally:
        set_status(old)


def token_file(path: Path, roles: Mapping[str, str]) -> Path:
    """Write an engine ``--auth-token-file`` granting each token (key) its role (value)."""
    path.write_text(
        "".join(f"{hashlib.sha256(t.encode()).hexdigest()} {r}\n" for t, r in roles.items())
    )
    return path


def engine_with_tokens(workdir: Path) -> EngineProcess:
    """An engine on SQLite (not started) whose callers need a bearer token:
    ``admin-secret`` (role admin) or ``viewer-secret`` (role viewer)."""
    tokens = token_file(workdir / "tokens", {"admin-secret": "admin", "viewer-secret": "viewer"})
    return EngineProcess(
        workdir / "engine",
        f"sqlite:///{workdir / 'engine.db'}",
        extra_args=["--auth-token-file", str(tokens)],
    )


def error_info(err: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """(code, reason, metadata) of an engine error."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status on {err}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            code: grpc.StatusCode = err.code()
            return code, info.reason, dict(info.metadata)
    raise AssertionError(f"no ErrorInfo in {status}")


def retry(fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Call ``fn`` until it stops raising AssertionError or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
