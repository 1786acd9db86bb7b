"""The embedded default: one engine on SQLite plus one local storage agent, no configuration.

::

    from disksnap.embedded import EmbeddedServer

    with EmbeddedServer(data_dir, listen="127.0.0.1:0") as server:
        with disksnap.Client(server.address) as client:
            ...

``EmbeddedServer`` runs two child processes: ``disksnap-engine serve`` on
``sqlite:///<data-dir>/engine.db`` and ``disksnap-agent --insecure --engine <engine>`` with its
storage root at ``<data-dir>/storage`` and its state in ``<data-dir>/agent-state``. It waits
for the agent to register as host ``local`` and creates the storage domain ``local`` on it if
there is none. Logs go to ``<data-dir>/logs/{engine,agent}.log``. Stopping (leaving the
``with`` block, ``stop()``) terminates the agent and then the engine with SIGTERM, and kills
whichever does not exit within ``STOP_TIMEOUT`` seconds. Everything is plaintext and bound to
loopback (SPEC §7 embedded dev mode).

The children run in their own session (so a terminal's Ctrl-C reaches only the parent, which
then stops them in order) and, on Linux, receive SIGTERM if the thread that started them dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from disksnap._client import DEFAULT_ADDRESS, Client
from disksnap._types import DomainStatus, HostStatus, StorageDomain
from disksnap.errors import DisksnapError, JobFailed, Unavailable, WaitTimeout

HOST_NAME = "local"
DOMAIN_NAME = "local"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

__all__ = ["DOMAIN_NAME", "HOST_NAME", "EmbeddedServer", "EmbeddedServerError", "default_data_dir"]


class EmbeddedServerError(DisksnapError):
    """A child process failed to start or the setup did not complete; includes its log tail."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/disksnap``, else ``~/.local/share/disksnap``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "disksnap"


def _executable(script: str, module: str) -> list[str]:
    """The console script next to this interpreter, on PATH, or ``python -m module``."""
    beside = Path(sys.executable).parent / script
    if beside.exists():
        return [str(beside)]
    found = shutil.which(script)
    if found:
        return [found]
    return [sys.executable, "-m", module]


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when this process dies (Linux ``setpriv``).

    Not a ``preexec_fn``: that forces a fork of this multi-threaded process and runs gRPC's
    fork handlers in the child, which can crash it before it execs.
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


class _Child:
    """One child process with its log file and ready file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, ready_file: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.ready_file = ready_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== {' '.join(self.argv)}\n".encode())
        self._log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            _with_parent_death_signal(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, deadline: float) -> dict[str, object]:
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                rc = None if self.proc is None else self.proc.returncode
                raise EmbeddedServerError(f"{self.name} exited (rc={rc})\n{self.log_tail()}")
            if self.ready_file.exists():
                with contextlib.suppress(ValueError):
                    ready: dict[str, object] = json.loads(self.ready_file.read_text())
                    if ready.get("address"):
                        return ready
            time.sleep(0.05)
        raise EmbeddedServerError(f"{self.name} not ready in time\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if proc is None else proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class EmbeddedServer:
    """An engine (SQLite) plus one local agent as child processes; see the module docstring.

    ``data_dir`` defaults to :func:`default_data_dir`; ``listen`` to ``127.0.0.1:7700``
    (port 0 picks a free port; read ``address`` after start). ``engine_args`` and
    ``agent_args`` are appended to the children's command lines.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        listen: str = DEFAULT_ADDRESS,
        engine_args: tuple[str, ...] = (),
        agent_args: tuple[str, ...] = (),
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.data_dir = self.data_dir.expanduser().resolve()
        self.listen = listen
        self.engine_args = tuple(engine_args)
        self.agent_args = tuple(agent_args)
        self.start_timeout = start_timeout
        self.storage_dir = self.data_dir / "storage"
        self.agent_state_dir = self.data_dir / "agent-state"
        self.log_dir = self.data_dir / "logs"
        self.db_path = self.data_dir / "engine.db"
        self._address = ""
        self.host_id = ""
        self.domain_id = ""
        self._engine: _Child | None = None
        self._agent: _Child | None = None

    # -- public -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The engine's ``host:port`` (valid once started)."""
        if not self._address:
            raise EmbeddedServerError("the embedded server is not running")
        return self._address

    @property
    def engine_log(self) -> Path:
        """The engine's log file."""
        return self.log_dir / "engine.log"

    @property
    def agent_log(self) -> Path:
        """The agent's log file."""
        return self.log_dir / "agent.log"

    def volume_path(self, disk_id: str, volume_id: str, domain_id: str | None = None) -> Path:
        """Where a volume file of the local domain lives (SPEC §6.1)."""
        return self.storage_dir / (domain_id or self.domain_id) / "images" / disk_id / volume_id

    def start(self) -> EmbeddedServer:
        """Start both children, wait for registration, ensure the ``local`` domain."""
        for d in (self.data_dir, self.storage_dir, self.agent_state_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.start_timeout
        try:
            self._engine = _Child(
                "engine",
                [
                    *_executable("disksnap-engine", "engine_svc"),
                    "serve",
                    "--db",
                    f"sqlite:///{self.db_path}",
                    "--listen",
                    self.listen,
                    "--ready-file",
                    str(self.data_dir / "engine.ready.json"),
                    *self.engine_args,
                ],
                self.engine_log,
                self.data_dir / "engine.ready.json",
            )
            self._engine.start()
            self._address = str(self._engine.wait_ready(deadline)["address"])
            self._agent = _Child(
                "agent",
                [
                    *_executable("disksnap-agent", "storage_agent"),
                    "--root",
                    str(self.storage_dir),
                    "--state-dir",
                    str(self.agent_state_dir),
                    "--listen",
                    "127.0.0.1:0",
                    "--host-name",
                    HOST_NAME,
                    "--insecure",
                    "--ready-file",
                    str(self.data_dir / "agent.ready.json"),
                    "--engine",
                    self._address,
                    *self.agent_args,
                ],
                self.agent_log,
                self.data_dir / "agent.ready.json",
            )
            self._agent.start()
            self._agent.wait_ready(deadline)
            self._setup(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the agent, then the engine (idempotent)."""
        for child in (self._agent, self._engine):
            if child is not None:
                child.stop()
        self._agent = None
        self._engine = None
        self._address = ""

    def running(self) -> bool:
        """True while both children run."""
        return all(c is not None and c.running() for c in (self._engine, self._agent))

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- setup ------------------------------------------------------------------------------

    def _check_children(self) -> None:
        for child in (self._engine, self._agent):
            if child is not None and not child.running():
                raise EmbeddedServerError(f"{child.name} exited\n{child.log_tail()}")

    def _logs(self) -> str:
        return "\n".join(
            f"--- {c.name} log ---\n{c.log_tail(2000)}" for c in (self._engine, self._agent) if c
        )

    def _setup(self, deadline: float) -> None:
        with Client(self._address, timeout=10) as client:
            self.host_id = self._wait_host(client, deadline)
            domain = self._find_domain(client)
            if domain is None:
                try:
                    job = client.create_storage_domain(
                        DOMAIN_NAME,
                        self.host_id,
                        wait_timeout=max(1.0, deadline - time.monotonic()),
                    )
                except (JobFailed, WaitTimeout) as err:
                    raise EmbeddedServerError(
                        f"creating storage domain {DOMAIN_NAME!r} failed: {err}\n{self._logs()}"
                    ) from err
                self.domain_id = job.result.domain_id or ""
            else:
                self.domain_id = domain.id
            self._wait_domain_active(client, deadline)

    def _wait_host(self, client: Client, deadline: float) -> str:
        while time.monotonic() < deadline:
            self._check_children()
            with contextlib.suppress(Unavailable):
                for host in client.list_hosts():
                    if host.name == HOST_NAME and host.status is HostStatus.UP:
                        return host.id
            time.sleep(0.1)
        raise EmbeddedServerError(
            f"the agent did not register with the engine in time\n{self._logs()}"
        )

    @staticmethod
    def _find_domain(client: Client) -> StorageDomain | None:
        return next((d for d in client.list_storage_domains() if d.name == DOMAIN_NAME), None)

    def _wait_domain_active(self, client: Client, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_children()
            domain = self._find_domain(client)
            if domain is not None and domain.status is DomainStatus.ACTIVE:
                return
            time.sleep(0.1)
        raise EmbeddedServerError(
            f"storage domain {DOMAIN_NAME!r} did not become ACTIVE\n{self._logs()}"
        )
