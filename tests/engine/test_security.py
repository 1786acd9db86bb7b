"""Security (SPEC §7): bearer tokens with roles, and mTLS between engine and agents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from disksnap.engine.v1 import common_pb2, inventory_pb2, registry_pb2, registry_pb2_grpc
from support.certs import CertificateAuthority
from support.engine import EngineApi, EngineProcess, engine_with_tokens, error_info
from support.processes import AgentProcess

MiB = 1024 * 1024


@pytest.fixture
def token_engine(tmp_path: Path) -> Iterator[EngineProcess]:
    engine = engine_with_tokens(tmp_path).start()
    try:
        yield engine
    finally:
        engine.stop()


def _call(engine: EngineProcess, token: str | None, mutate: bool) -> None:
    api = engine.api()
    metadata = [("authorization", f"Bearer {token}")] if token else []
    if mutate:
        api.inventory.CreateVm(
            inventory_pb2.CreateVmRequest(
                config=inventory_pb2.VmConfig(
                    name=f"vm{time.monotonic_ns()}", cpu_count=1, memory_mb=512
                )
            ),
            metadata=metadata,
            timeout=10,
        )
    else:
        api.inventory.ListVms(inventory_pb2.ListVmsRequest(), metadata=metadata, timeout=10)


@pytest.mark.parametrize(
    ("token", "mutate", "expected"),
    [
        (None, False, "UNAUTHENTICATED"),
        ("wrong", False, "UNAUTHENTICATED"),
        ("viewer-secret", False, None),
        ("viewer-secret", True, "PERMISSION_DENIED"),
        ("admin-secret", True, None),
    ],
)
def test_bearer_tokens_and_roles(
    token_engine: EngineProcess, token: str | None, mutate: bool, expected: str | None
) -> None:
    if expected is None:
        _call(token_engine, token, mutate)
        return
    with pytest.raises(grpc.RpcError) as caught:
        _call(token_engine, token, mutate)
    code, reason, _ = error_info(caught.value)
    assert reason == expected
    assert code == getattr(grpc.StatusCode, expected)


def test_health_needs_no_token(token_engine: EngineProcess) -> None:
    health = health_pb2_grpc.HealthStub(token_engine.channel())
    resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_mtls_engine_and_agents(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    engine_cert = ca.issue_peer("engine")
    engine = EngineProcess(
        tmp_path / "engine",
        f"sqlite:///{tmp_path / 'engine.db'}",
        extra_args=[
            "--tls-cert",
            str(engine_cert.cert),
            "--tls-key",
            str(engine_cert.key),
            "--tls-ca",
            str(engine_cert.ca),
            "--agent-listen",
            "127.0.0.1:0",
        ],
        tls_ca=engine_cert.ca,
    ).start()
    agents: list[AgentProcess] = []
    try:
        for name in ("host0", "host1"):
            agent = AgentProcess(
                tmp_path / name,
                host_name=name,
                insecure=False,
                # Like the manifests: the certificate names the host (the node), not the
                # address the agent advertises, so the engine must check the registered name.
                tls=ca.issue_peer(name, ips=()),
                extra_args=["--engine", engine.agent_address],
            )
            agents.append(agent.start())
        api = EngineApi(engine.channel())

        def hosts_up() -> dict[str, str]:
            hosts = api.inventory.ListHosts(inventory_pb2.ListHostsRequest(), timeout=5).hosts
            return {h.name: h.id for h in hosts if h.status == inventory_pb2.HOST_STATUS_UP}

        deadline = time.monotonic() + 20
        while len(hosts_up()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        host_ids = hosts_up()
        assert set(host_ids) == {"host0", "host1"}
        job = api.inventory.CreateStorageDomain(
            inventory_pb2.CreateStorageDomainRequest(name="sd", host_id=host_ids["host1"]),
            timeout=10,
        ).job
        domain = api.wait_job(job.id).result.domain_id
        vm = api.create_vm("secure")
        api.add_disk(vm, "d", domain, 16 * MiB)
        assert api.snapshot(vm, "over mTLS").state == common_pb2.JOB_STATE_SUCCEEDED

        # An agent whose certificate names another host cannot register as host1.
        impostor = ca.issue_peer("host9")
        creds = grpc.ssl_channel_credentials(
            root_certificates=impostor.ca.read_bytes(),
            private_key=impostor.key.read_bytes(),
            certificate_chain=impostor.cert.read_bytes(),
        )
        with grpc.secure_channel(engine.agent_address, creds) as channel:
            registry = registry_pb2_grpc.AgentRegistryServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                registry.RegisterHost(
                    registry_pb2.RegisterHostRequest(name="host1", address="127.0.0.1:1"),
                    timeout=10,
                )
        code, reason, _ = error_info(caught.value)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "HOST_IDENTITY_MISMATCH")
        # Without a client certificate the agent port refuses the handshake, and the client
        # port does not serve the registry at all.
        anonymous = grpc.ssl_channel_credentials(root_certificates=engine_cert.ca.read_bytes())
        for address in (engine.agent_address, engine.address):
            with grpc.secure_channel(address, anonymous) as channel:
                registry = registry_pb2_grpc.AgentRegistryServiceStub(channel)
                with pytest.raises(grpc.RpcError) as refused:
                    registry.RegisterHost(
                        registry_pb2.RegisterHostRequest(name="host0", address="127.0.0.1:1"),
                        timeout=5,
                    )
            assert refused.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.UNIMPLEMENTED,
            )
        api.assert_consistent()
    finally:
        for agent in agents:
            agent.stop()
        engine.stop()
