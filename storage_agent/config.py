"""Agent settings, built once by the CLI (``storage_agent.__main__``) and never changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from disksnap._certs import CertificateFiles

DEFAULT_LISTEN = "127.0.0.1:7701"


@dataclass(frozen=True)
class AgentSettings:
    """Everything the agent is configured with."""

    root: Path
    state_dir: Path
    host_name: str
    listen: str = DEFAULT_LISTEN
    # Empty: serve every domain found under root, plus the ones InitDomain creates.
    domains: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    insecure: bool = False
    health_listen: str | None = None
    # The rules file (DISKSNAP_AGENT_FAULTS); only read with allow_fault_injection.
    allow_fault_injection: bool = False
    faults_file: Path | None = None
    # "none" (O_DIRECT, falling back to writeback where refused) or "writeback".
    qemu_cache: str = "none"
    ready_file: Path | None = None
    # The engine to register with, and the address it should dial (default: the bound one).
    engine: str | None = None
    advertise: str | None = None
    log_level: str = "INFO"
    long_op_workers: int = 4

    @property
    def tls(self) -> bool:
        """True when certificate, key and CA are all configured."""
        return None not in (self.tls_cert, self.tls_key, self.tls_ca)

    def certificate_files(self) -> CertificateFiles:
        """The mTLS files (serving and dialing the engine); only when ``tls``."""
        assert self.tls_cert and self.tls_key and self.tls_ca
        return CertificateFiles(self.tls_cert, self.tls_key, self.tls_ca)
