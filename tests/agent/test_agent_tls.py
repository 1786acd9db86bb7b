"""mTLS on the agent's server (SPEC §7): only clients with a certificate from its CA get in."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from disksnap.agent.v1 import agent_pb2, agent_pb2_grpc
from support.certs import CertFiles, CertificateAuthority
from support.processes import AgentFactory, AgentProcess, client_credentials


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = CertificateAuthority(directory / "ca", "agent-ca")
        self.server = self.ca.issue_server("agent")
        self.client = self.ca.issue_client("engine")
        self.rogue_ca = CertificateAuthority(directory / "rogue", "rogue-ca")
        self.rogue_client = self.rogue_ca.issue_client("engine")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_agent(agent_factory: AgentFactory, pki: Pki) -> AgentProcess:
    return agent_factory("tls-agent", insecure=False, tls=pki.server, client_tls=pki.client)


def capabilities(channel: grpc.Channel) -> agent_pb2.CapabilitiesResponse:
    stub = agent_pb2_grpc.StorageAgentServiceStub(channel)
    resp: agent_pb2.CapabilitiesResponse = stub.Capabilities(
        agent_pb2.CapabilitiesRequest(), timeout=5
    )
    return resp


def assert_refused(agent: AgentProcess, credentials: grpc.ChannelCredentials | None) -> None:
    channel = (
        agent.open_channel(credentials) if credentials else grpc.insecure_channel(agent.address)
    )
    try:
        with pytest.raises(grpc.RpcError) as info:
            capabilities(channel)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    finally:
        channel.close()


def test_client_with_a_valid_certificate_is_served(tls_agent: AgentProcess, pki: Pki) -> None:
    resp = capabilities(tls_agent.open_channel(client_credentials(pki.client)))
    assert resp.host_name == tls_agent.host_name
    # The default channel of the launcher uses the same client certificate.
    assert capabilities(tls_agent.channel()).host_name == tls_agent.host_name


def test_client_without_a_certificate_is_refused(tls_agent: AgentProcess, pki: Pki) -> None:
    assert_refused(tls_agent, client_credentials(pki.client, with_cert=False))


def test_client_with_a_certificate_from_another_ca_is_refused(
    tls_agent: AgentProcess, pki: Pki
) -> None:
    # Trusts the right server CA but presents a client certificate the agent must not accept.
    mixed = CertFiles(cert=pki.rogue_client.cert, key=pki.rogue_client.key, ca=pki.ca.cert_path)
    assert_refused(tls_agent, client_credentials(mixed))


def test_plaintext_client_is_refused(tls_agent: AgentProcess) -> None:
    assert_refused(tls_agent, None)


def test_agent_refuses_to_start_without_tls_unless_insecure(agent_factory: AgentFactory) -> None:
    agent = agent_factory("no-tls", insecure=False, start=False)
    rc = agent.start_expecting_exit()
    assert rc != 0
    assert not agent.ready_file.exists(), "an agent that refused to start wrote its ready file"


def test_health_listener_is_plaintext_and_serves_only_health(
    agent_factory: AgentFactory, pki: Pki
) -> None:
    agent = agent_factory(
        "tls-health", insecure=False, tls=pki.server, client_tls=pki.client, health_listen=True
    )
    assert agent.health_address and agent.health_address != agent.address
    channel = grpc.insecure_channel(agent.health_address)
    try:
        resp = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            capabilities(channel)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()
