"""Engine settings: one frozen dataclass, filled from the command line and environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from disksnap._certs import CertificateFiles
from engine_svc.domain import GiB


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine process is configured with (SPEC §5, §7 defaults)."""

    db_url: str
    listen: str = "127.0.0.1:7700"
    health_listen: str | None = None
    # Where agents register over mTLS when TLS is on (the main port serves clients).
    agent_listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    agent_tls: CertificateFiles | None = None
    auth_token_file: Path | None = None
    insecure_allow_remote: bool = False
    ready_file: Path | None = None
    heartbeat_interval: timedelta = timedelta(seconds=10)
    transient_budget: timedelta = timedelta(minutes=10)
    prepare_deadline: timedelta = timedelta(hours=1)
    merge_deadline: timedelta = timedelta(hours=24)
    compensation_budget: timedelta = timedelta(hours=1)
    lease: timedelta = timedelta(seconds=30)
    agent_timeout: timedelta = timedelta(seconds=30)
    poll_interval: timedelta = timedelta(seconds=0.5)
    reaper_interval: timedelta = timedelta(seconds=60)
    # Terminal jobs (and the request_ids they hold) are kept this long after they end.
    job_retention: timedelta = timedelta(days=7)
    free_space_critical_bytes: int = 1 * GiB
    max_parallel_disks: int = 4
    worker_threads: int = 8
    engine_id: str = ""
    # On SIGTERM: how long to keep answering (mutations with ENGINE_SHUTTING_DOWN, queries
    # as usual, health NOT_SERVING) before the listener closes; load balancers move away.
    shutdown_drain: timedelta = timedelta(0)
