"""``disksnap-agent``: run a storage agent. Every flag can also come from an environment
variable (shown in ``--help``), which is how Kubernetes configures it."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from storage_agent.config import DEFAULT_LISTEN, AgentSettings
from storage_agent.layout import is_id
from storage_agent.server import serve

ROOT_STATE_DIR = Path("/var/lib/disksnap-agent")
_TRUE = ("1", "true", "yes", "on")


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _env_flag(name: str) -> bool:
    return (os.environ.get(name) or "").strip().lower() in _TRUE


def parse_args(argv: Sequence[str] | None = None) -> AgentSettings:
    """Settings from the command line and the environment; exits with a message on errors."""
    env_domains = [d.strip() for d in (_env("DISKSNAP_AGENT_DOMAINS") or "").split(",")]
    parser = argparse.ArgumentParser(
        prog="disksnap-agent", description="disksnap storage agent (SPEC §6)"
    )
    add = parser.add_argument
    add(
        "--root",
        type=Path,
        default=_env("DISKSNAP_AGENT_ROOT"),
        help="directory holding the storage domains [DISKSNAP_AGENT_ROOT] (required)",
    )
    add(
        "--state-dir",
        type=Path,
        default=_env("DISKSNAP_AGENT_STATE_DIR"),
        help="operation records and lock files, outside the root [DISKSNAP_AGENT_STATE_DIR]; "
        f"default {ROOT_STATE_DIR} when running as root, else required",
    )
    add(
        "--listen",
        default=_env("DISKSNAP_AGENT_LISTEN") or DEFAULT_LISTEN,
        help=f"HOST:PORT, port 0 picks one [DISKSNAP_AGENT_LISTEN] (default {DEFAULT_LISTEN})",
    )
    add(
        "--host-name",
        default=_env("DISKSNAP_AGENT_HOST_NAME") or _env("NODE_NAME") or socket.gethostname(),
        help="host name (= TLS identity) [DISKSNAP_AGENT_HOST_NAME, NODE_NAME, hostname]",
    )
    add(
        "--domain",
        dest="domains",
        action="append",
        default=None,
        metavar="UUID",
        help="serve only this domain; repeatable [DISKSNAP_AGENT_DOMAINS, comma-separated]; "
        "default: every domain under the root plus those InitDomain creates",
    )
    add(
        "--tls-cert",
        type=Path,
        default=_env("DISKSNAP_AGENT_TLS_CERT"),
        help="server certificate (PEM) [DISKSNAP_AGENT_TLS_CERT]",
    )
    add(
        "--tls-key",
        type=Path,
        default=_env("DISKSNAP_AGENT_TLS_KEY"),
        help="server private key (PEM) [DISKSNAP_AGENT_TLS_KEY]",
    )
    add(
        "--tls-ca",
        type=Path,
        default=_env("DISKSNAP_AGENT_TLS_CA"),
        help="CA that signs client certificates (PEM) [DISKSNAP_AGENT_TLS_CA]",
    )
    add(
        "--insecure",
        action="store_true",
        default=_env_flag("DISKSNAP_AGENT_INSECURE"),
        help="serve plaintext without client authentication [DISKSNAP_AGENT_INSECURE=1]",
    )
    add(
        "--health-listen",
        default=_env("DISKSNAP_AGENT_HEALTH_LISTEN"),
        help="extra plaintext HOST:PORT serving only grpc.health.v1 [DISKSNAP_AGENT_HEALTH_LISTEN]",
    )
    add(
        "--allow-fault-injection",
        action="store_true",
        default=_env_flag("DISKSNAP_AGENT_ALLOW_FAULT_INJECTION"),
        help="read fault rules from $DISKSNAP_AGENT_FAULTS (tests only) "
        "[DISKSNAP_AGENT_ALLOW_FAULT_INJECTION=1]",
    )
    add(
        "--qemu-cache",
        choices=("none", "writeback"),
        default=_env("DISKSNAP_AGENT_QEMU_CACHE") or "none",
        help="qemu-img cache mode for commit/rebase; none falls back to writeback where "
        "O_DIRECT is refused [DISKSNAP_AGENT_QEMU_CACHE] (default none)",
    )
    add(
        "--ready-file",
        type=Path,
        default=_env("DISKSNAP_AGENT_READY_FILE"),
        help="write {address, health_address, pid} as JSON here once serving "
        "[DISKSNAP_AGENT_READY_FILE]",
    )
    add(
        "--engine",
        default=_env("DISKSNAP_ENGINE"),
        help="engine HOST:PORT to register with (a comma-separated list fails over)",
    )
    add(
        "--advertise",
        default=_env("DISKSNAP_AGENT_ADVERTISE"),
        help="HOST:PORT the engine should dial [DISKSNAP_AGENT_ADVERTISE]",
    )
    add(
        "--log-level",
        default=_env("DISKSNAP_AGENT_LOG_LEVEL") or "INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="[DISKSNAP_AGENT_LOG_LEVEL] (default INFO)",
    )
    args = parser.parse_args(argv)

    if args.root is None:
        parser.error("--root (or DISKSNAP_AGENT_ROOT) is required")
    state_dir = args.state_dir
    if state_dir is None:
        if os.geteuid() != 0:
            parser.error("--state-dir (or DISKSNAP_AGENT_STATE_DIR) is required when not root")
        state_dir = ROOT_STATE_DIR
    root_real = os.path.realpath(args.root)
    state_real = os.path.realpath(state_dir)
    if state_real == root_real or state_real.startswith(root_real + os.sep):
        parser.error("--state-dir must not be inside --root")
    domains = tuple(args.domains if args.domains is not None else [d for d in env_domains if d])
    bad = [d for d in domains if not is_id(d)]
    if bad:
        parser.error(f"--domain must be a lowercase canonical UUID: {', '.join(bad)}")
    tls_files = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls_files) and not all(tls_files):
        parser.error("--tls-cert, --tls-key and --tls-ca go together")
    if not all(tls_files) and not args.insecure:
        parser.error(
            "no TLS material: give --tls-cert, --tls-key and --tls-ca (mTLS), or --insecure "
            "to serve plaintext (development only)"
        )
    faults = _env("DISKSNAP_AGENT_FAULTS")
    return AgentSettings(
        root=args.root,
        state_dir=state_dir,
        host_name=args.host_name,
        listen=args.listen,
        domains=domains,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        insecure=args.insecure,
        health_listen=args.health_listen,
        allow_fault_injection=args.allow_fault_injection,
        faults_file=Path(faults) if faults else None,
        qemu_cache=args.qemu_cache,
        ready_file=args.ready_file,
        engine=args.engine,
        advertise=args.advertise,
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``disksnap-agent``."""
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        serve(settings)
    except (OSError, RuntimeError, ValueError) as exc:
        logging.getLogger("storage_agent").error("cannot start: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
