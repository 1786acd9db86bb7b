"""Certificates rotated on disk (cert-manager renewing a Secret) while everything runs.

Every file is replaced in place by material from a new CA, so an old certificate is refused
everywhere and only a process that re-read its files can talk. The engine serves the new
certificate without a restart; an agent that was not restarted dials the restarted engine
with its new certificate; the engine dials a restarted agent with its new one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import grpc
import pytest

from disksnap.engine.v1 import common_pb2, inventory_pb2
from support.certs import CertFiles, CertificateAuthority
from support.engine import EngineApi, EngineProcess, retry
from support.processes import AgentProcess

MiB = 1024 * 1024


def install(source: CertFiles, directory: Path) -> CertFiles:
    """Copy ``source`` to fixed names in ``directory``, each file replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    target = CertFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    for src, dst in ((source.cert, target.cert), (source.key, target.key), (source.ca, target.ca)):
        tmp = dst.with_suffix(".new")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
    return target


def free_port() -> int:
    """A loopback port nobody listens on now (the engine's agent port must survive a restart,
    since the running agent keeps dialing it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_trusting(engine: EngineProcess, ca: Path) -> tuple[grpc.Channel, EngineApi]:
    creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    channel = grpc.secure_channel(engine.address, creds)
    return channel, EngineApi(channel)


def hosts_up(api: EngineApi, since: float = 0.0) -> None:
    """Every host is UP, with a heartbeat received after ``since`` (a time.time())."""
    hosts = api.inventory.ListHosts(inventory_pb2.ListHostsRequest(), timeout=5).hosts
    assert hosts and all(h.status == inventory_pb2.HOST_STATUS_UP for h in hosts), hosts
    beats = [h.last_heartbeat_at.ToMicroseconds() / 1e6 for h in hosts]
    assert all(beat > since for beat in beats), f"no heartbeat since the restart: {hosts}"


def test_rotated_certificates_are_used_without_restarting_the_reader(tmp_path: Path) -> None:
    cas = [CertificateAuthority(tmp_path / f"pki{i}", name=f"ca{i}") for i in range(3)]
    engine_files = install(cas[0].issue_peer("engine"), tmp_path / "engine-tls")
    agent_files = install(cas[0].issue_peer("host0", ips=()), tmp_path / "agent-tls")
    engine = EngineProcess(
        tmp_path / "engine",
        f"sqlite:///{tmp_path / 'engine.db'}",
        extra_args=[
            *("--tls-cert", str(engine_files.cert), "--tls-key", str(engine_files.key)),
            *("--tls-ca", str(engine_files.ca), "--agent-listen", f"127.0.0.1:{free_port()}"),
        ],
        tls_ca=engine_files.ca,
    ).start()
    agent = AgentProcess(
        tmp_path / "agent",
        host_name="host0",
        insecure=False,
        tls=agent_files,
        extra_args=["--engine", engine.agent_address],
    )
    agent.start()
    try:
        api = engine.api()
        retry(lambda: hosts_up(api))
        host_id = api.inventory.ListHosts(inventory_pb2.ListHostsRequest(), timeout=5).hosts[0].id
        job = api.inventory.CreateStorageDomain(
            inventory_pb2.CreateStorageDomainRequest(name="sd", host_id=host_id), timeout=10
        ).job
        domain = api.wait_job(job.id).result.domain_id
        vm = api.create_vm("rotating")
        api.add_disk(vm, "d", domain, 16 * MiB)
        assert api.snapshot(vm, "ca0").state == common_pb2.JOB_STATE_SUCCEEDED

        # Rotation 1: the running engine serves the new certificate to new connections.
        install(cas[1].issue_peer("engine"), tmp_path / "engine-tls")
        install(cas[1].issue_peer("host0", ips=()), tmp_path / "agent-tls")
        channel, api = api_trusting(engine, cas[1].cert_path)
        assert api.inventory.ListVms(inventory_pb2.ListVmsRequest(), timeout=10).vms
        channel.close()
        old_channel, old_api = api_trusting(engine, cas[0].cert_path)
        with pytest.raises(grpc.RpcError) as refused:
            old_api.inventory.ListVms(inventory_pb2.ListVmsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        old_channel.close()

        # The engine restarts; the agent, still running, must dial it with its new files.
        engine.kill9()
        restarted = time.time()
        engine.restart()
        api = engine.api()
        retry(lambda: hosts_up(api, since=restarted), timeout=30)
        assert api.snapshot(vm, "ca1").state == common_pb2.JOB_STATE_SUCCEEDED

        # Rotation 2, then the agent restarts: the engine (not restarted since) must dial the
        # agent with its new client certificate and trust the agent's new CA.
        install(cas[2].issue_peer("engine"), tmp_path / "engine-tls")
        install(cas[2].issue_peer("host0", ips=()), tmp_path / "agent-tls")
        restarted = time.time()
        agent.restart()
        channel, api = api_trusting(engine, cas[2].cert_path)
        retry(lambda: hosts_up(api, since=restarted), timeout=30)
        assert api.snapshot(vm, "ca2").state == common_pb2.JOB_STATE_SUCCEEDED
        assert api.violations() == []
        channel.close()
    finally:
        agent.stop()
        engine.stop()
