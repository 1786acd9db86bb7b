"""``disksnap-engine``: run the engine (``serve``, the default) or migrate its database."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from disksnap._certs import CertificateFiles
from engine_svc.config import EngineSettings
from engine_svc.db.migrate import at_head, upgrade
from engine_svc.db.session import make_engine


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _seconds(value: str) -> timedelta:
    return timedelta(seconds=float(value))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="disksnap-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the engine (default)")
    serve.add_argument(
        "--db", default=_env("DISKSNAP_DB_URL"), help="SQLAlchemy URL [DISKSNAP_DB_URL]"
    )
    serve.add_argument("--listen", default=_env("DISKSNAP_ENGINE_LISTEN", "127.0.0.1:7700"))
    serve.add_argument("--health-listen", default=_env("DISKSNAP_ENGINE_HEALTH_LISTEN"))
    serve.add_argument(
        "--agent-listen",
        default=_env("DISKSNAP_ENGINE_AGENT_LISTEN"),
        help="mTLS port for agent registration (required with TLS)",
    )
    serve.add_argument("--tls-cert", type=Path, default=_env("DISKSNAP_ENGINE_TLS_CERT"))
    serve.add_argument("--tls-key", type=Path, default=_env("DISKSNAP_ENGINE_TLS_KEY"))
    serve.add_argument("--tls-ca", type=Path, default=_env("DISKSNAP_ENGINE_TLS_CA"))
    serve.add_argument(
        "--agent-tls-cert",
        type=Path,
        default=_env("DISKSNAP_ENGINE_AGENT_TLS_CERT"),
        help="client certificate for agents (default: --tls-cert)",
    )
    serve.add_argument("--agent-tls-key", type=Path, default=_env("DISKSNAP_ENGINE_AGENT_TLS_KEY"))
    serve.add_argument("--auth-token-file", type=Path, default=_env("DISKSNAP_AUTH_TOKEN_FILE"))
    serve.add_argument("--insecure-allow-remote", action="store_true")
    serve.add_argument("--ready-file", type=Path)
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade the schema before serving (always done for SQLite)",
    )
    serve.add_argument("--heartbeat-interval", type=_seconds, default=timedelta(seconds=10))
    serve.add_argument("--transient-budget", type=_seconds, default=timedelta(minutes=10))
    serve.add_argument("--prepare-deadline", type=_seconds, default=timedelta(hours=1))
    serve.add_argument("--compensation-budget", type=_seconds, default=timedelta(hours=1))
    serve.add_argument("--lease", type=_seconds, default=timedelta(seconds=30))
    serve.add_argument("--agent-timeout", type=_seconds, default=timedelta(seconds=30))
    serve.add_argument("--reaper-interval", type=_seconds, default=timedelta(seconds=60))
    serve.add_argument("--job-retention", type=_seconds, default=timedelta(days=7))
    serve.add_argument("--free-space-reserve", type=int, default=1024**3)
    serve.add_argument("--shutdown-drain", type=_seconds, default=timedelta(0))
    serve.add_argument("--engine-id", default=_env("DISKSNAP_ENGINE_ID", ""))
    serve.add_argument("--log-level", default=_env("DISKSNAP_LOG_LEVEL", "INFO"))
    migrate = sub.add_parser("migrate", help="upgrade the database schema and exit")
    migrate.add_argument("--db", default=_env("DISKSNAP_DB_URL"))
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 0 iff the schema is at the newest revision, else 3",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``disksnap-engine``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0].startswith("-"):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    if not args.db:
        raise SystemExit("--db (or DISKSNAP_DB_URL) is required")
    if args.command == "migrate":
        if args.check:
            raise SystemExit(0 if at_head(args.db) else 3)
        upgrade(args.db)
        return
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    agent_tls = None
    cert = args.agent_tls_cert or args.tls_cert
    key = args.agent_tls_key or args.tls_key
    if cert and key and args.tls_ca:
        agent_tls = CertificateFiles(cert=cert, key=key, ca=args.tls_ca)
    settings = EngineSettings(
        db_url=args.db,
        listen=args.listen,
        health_listen=args.health_listen,
        agent_listen=args.agent_listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        agent_tls=agent_tls,
        auth_token_file=args.auth_token_file,
        insecure_allow_remote=args.insecure_allow_remote,
        ready_file=args.ready_file,
        heartbeat_interval=args.heartbeat_interval,
        transient_budget=args.transient_budget,
        prepare_deadline=args.prepare_deadline,
        compensation_budget=args.compensation_budget,
        lease=args.lease,
        agent_timeout=args.agent_timeout,
        free_space_critical_bytes=args.free_space_reserve,
        reaper_interval=args.reaper_interval,
        job_retention=args.job_retention,
        engine_id=args.engine_id,
        shutdown_drain=args.shutdown_drain,
    )
    from engine_svc.server import serve

    sqlite = make_engine(args.db).dialect.name == "sqlite"
    serve(settings, migrate=args.migrate or sqlite)


if __name__ == "__main__":
    main()
