"""Real `disksnap-agent` processes for black-box tests and benchmarks.

`AgentProcess` starts the installed console script as a subprocess on `127.0.0.1:0`, waits
for the ready file the agent writes once it serves (`{"address", "health_address", "pid"}`),
and offers channels and stubs to it. It can be killed with SIGKILL (crash tests), waited for
(injected crashes), restarted on the same root and state directory, and stopped. stdout and
stderr go to a log file whose tail is included in every start failure.

`FaultsFile` is the JSON rule list named by `DISKSNAP_AGENT_FAULTS` (only honoured by an agent
started with `--allow-fault-injection`; the agent re-reads it per request and decrements
`times` when a rule fires).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import grpc

from disksnap.agent.v1 import agent_pb2_grpc

READY_TIMEOUT = 20.0
FAULTS_ENV = "DISKSNAP_AGENT_FAULTS"


class AgentStartError(AssertionError):
    """The agent did not become ready; the message carries the tail of its log."""


class TlsMaterial(Protocol):
    """Paths of a PEM certificate, its key and the CA to trust (see support.certs)."""

    @property
    def cert(self) -> Path: ...

    @property
    def key(self) -> Path: ...

    @property
    def ca(self) -> Path: ...


def agent_executable() -> Path:
    """The `disksnap-agent` console script next to the running interpreter (the venv's)."""
    return Path(sys.executable).parent / "disksnap-agent"


def client_credentials(
    tls: TlsMaterial | None, *, with_cert: bool = True
) -> grpc.ChannelCredentials:
    """Channel credentials trusting `tls.ca`, presenting `tls.cert` unless `with_cert` is false."""
    if tls is None:
        raise ValueError("TLS material required")
    if not with_cert:
        return grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes(),
        certificate_chain=tls.cert.read_bytes(),
    )


class FaultsFile:
    """The fault-rule file an agent re-reads on each request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            self.set([])

    def set(self, rules: Sequence[Mapping[str, Any]]) -> None:
        """Replace the rules atomically."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps([dict(r) for r in rules], indent=1))
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.set([])

    def read(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = json.loads(self.path.read_text())
        return rules


class AgentProcess:
    """One storage agent subprocess with its root, state directory, ready file and log."""

    def __init__(
        self,
        workdir: Path,
        *,
        root: Path | None = None,
        state_dir: Path | None = None,
        host_name: str = "agent-test-host",
        insecure: bool = True,
        tls: TlsMaterial | None = None,
        client_tls: TlsMaterial | None = None,
        allow_fault_injection: bool = False,
        faults: FaultsFile | None = None,
        health_listen: bool = False,
        qemu_cache: str | None = None,
        domains: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.root = root or workdir / "root"
        self.state_dir = state_dir or workdir / "state"
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.host_name = host_name
        self.insecure = insecure
        self.tls = tls
        self.client_tls = client_tls
        self.allow_fault_injection = allow_fault_injection
        self.faults = faults
        self.health_listen = health_listen
        self.qemu_cache = qemu_cache
        self.domains = tuple(domains)
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.ready_file = workdir / "agent.ready.json"
        self.log_path = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.starts = 0
        self._port = 0
        self._log: IO[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self._extra_channels: list[grpc.Channel] = []

    # -- life cycle --------------------------------------------------------------------------

    def argv(self, port: int = 0) -> list[str]:
        """The command line for a start listening on `port` (0: any free port)."""
        argv = [
            str(agent_executable()),
            "--root",
            str(self.root),
            "--state-dir",
            str(self.state_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--host-name",
            self.host_name,
            "--ready-file",
            str(self.ready_file),
        ]
        if self.insecure:
            argv.append("--insecure")
        if self.tls is not None:
            argv += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
            argv += ["--tls-ca", str(self.tls.ca)]
        if self.allow_fault_injection:
            argv.append("--allow-fault-injection")
        if self.health_listen:
            argv += ["--health-listen", "127.0.0.1:0"]
        if self.qemu_cache is not None:
            argv += ["--qemu-cache", self.qemu_cache]
        for domain in self.domains:
            argv += ["--domain", domain]
        return [*argv, *self.extra_args]

    def environment(self) -> dict[str, str]:
        # Inherited DISKSNAP_* settings would change the agent under test: drop them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISKSNAP_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.faults is not None:
            env[FAULTS_ENV] = str(self.faults.path)
        env.update(self.extra_env)
        return env

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        if self.ready_file.exists():
            self.ready_file.unlink()
        self._close_channels()
        self.starts += 1
        self._log = self._log or self.log_path.open("ab")
        self._log.write(f"\n==== start #{self.starts}: {' '.join(self.argv(port))}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv(port),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.workdir,
        )
        return self.proc

    def start(self, port: int = 0) -> AgentProcess:
        """Start the agent and wait until its ready file names the address it serves on."""
        if self.is_running():
            raise RuntimeError("agent already running")
        proc = self._spawn(port)
        self.ready = self._wait_ready(proc)
        self._port = int(self.address.rsplit(":", 1)[1])
        return self

    def start_expecting_exit(self, timeout: float = READY_TIMEOUT) -> int:
        """Start the agent when it is expected to refuse to run; returns its exit code."""
        proc = self._spawn(0)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AgentStartError(
                f"agent kept running although it should have refused to start\n{self.log_tail()}"
            ) from None
        return rc

    def restart(self, *, same_port: bool = True) -> AgentProcess:
        """Start again on the same root and state dir; prefers the previous port."""
        if self.is_running():
            self.stop()
        if same_port and self._port:
            try:
                return self.start(self._port)
            except AgentStartError:
                if self.is_running():
                    self.kill9()
        return self.start(0)

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                try:
                    ready: dict[str, Any] = json.loads(self.ready_file.read_text())
                except (ValueError, OSError):
                    ready = {}
                if ready.get("address"):
                    return ready
            rc = proc.poll()
            if rc is not None:
                raise AgentStartError(
                    f"agent exited with rc={rc} before it was ready\n{self.log_tail()}"
                )
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=10)
        raise AgentStartError(
            f"agent not ready after {self.ready_timeout:.0f} s (no address in {self.ready_file})"
            f"\n{self.log_tail()}"
        )

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit by itself (e.g. an injected crash); returns its rc."""
        if self.proc is None:
            raise RuntimeError("agent never started")
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"agent still running after {timeout:.0f} s\n{self.log_tail()}"
            ) from None
        self._close_channels()
        return rc

    def kill9(self) -> int | None:
        """SIGKILL the agent (a crash) and reap it."""
        self._close_channels()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; closes channels and the log."""
        self._close_channels()
        rc: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=30)
            rc = self.proc.returncode
        return rc

    def close(self) -> None:
        """Stop the process and release every resource (idempotent)."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses, channels -----------------------------------------------------------------

    @property
    def address(self) -> str:
        if not self.ready:
            raise RuntimeError("agent not started")
        return str(self.ready["address"])

    @property
    def health_address(self) -> str | None:
        value = self.ready.get("health_address")
        return str(value) if value else None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("agent not started")
        return self.proc.pid

    def open_channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        """A new channel to the agent (insecure unless `credentials`); closed with the agent."""
        if credentials is None and self.client_tls is not None:
            credentials = client_credentials(self.client_tls)
        options = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        channel = (
            grpc.secure_channel(self.address, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(self.address, options=options)
        )
        self._extra_channels.append(channel)
        return channel

    def channel(self) -> grpc.Channel:
        """The shared channel of the current process (re-created after a restart)."""
        if self._channel is None:
            self._channel = self.open_channel()
        return self._channel

    def stub(self) -> agent_pb2_grpc.StorageAgentServiceStub:
        return agent_pb2_grpc.StorageAgentServiceStub(self.channel())

    def _close_channels(self) -> None:
        for channel in self._extra_channels:
            channel.close()
        self._extra_channels = []
        self._channel = None

    # -- diagnostics -------------------------------------------------------------------------

    def log_tail(self, chars: int = 4000) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            text = self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return "(no agent log)"
        return f"---- tail of {self.log_path} ----\n{text}"

    def rss_bytes(self) -> int:
        """Resident set size from /proc/<pid>/status (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")


AgentFactory = Callable[..., AgentProcess]
"""A fixture-provided callable: `factory(name, *, start=True, **AgentProcess kwargs)`."""
