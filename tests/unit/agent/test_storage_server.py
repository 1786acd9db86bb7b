"""The gRPC edge in-process: status mapping, health, reflection-free calls, mTLS, the CLI."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from disksnap.agent.v1 import agent_pb2 as pb
from disksnap.agent.v1 import agent_pb2_grpc
from storage_agent.__main__ import parse_args
from storage_agent.config import AgentSettings
from storage_agent.runtime import Runtime
from storage_agent.server import create_server, new_health
from unit.agent.storage_helpers import new_id


@pytest.fixture
def channel(settings: AgentSettings, rt: Runtime) -> Iterator[grpc.Channel]:
    server, port = create_server(
        replace(settings, listen="127.0.0.1:0", insecure=True), rt, new_health()
    )
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    server.stop(0)


def test_calls_and_error_details(channel: grpc.Channel, domain_id: str) -> None:
    stub = agent_pb2_grpc.StorageAgentServiceStub(channel)
    caps = stub.Capabilities(pb.CapabilitiesRequest())
    assert [d.domain_id for d in caps.domains] == [domain_id]
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetVolumeInfo(
            pb.GetVolumeInfoRequest(domain_id=domain_id, disk_id="x", volume_id=new_id())
        )
    status = rpc_status.from_call(caught.value)
    assert status is not None and caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad_request)
    assert (info.reason, info.domain, info.metadata["field"]) == (
        "INVALID_ID",
        "disksnap.agent",
        "disk_id",
    )
    assert bad_request.field_violations[0].field == "disk_id"


def test_long_operations_report_through_get_operation(
    channel: grpc.Channel, domain_id: str
) -> None:
    stub = agent_pb2_grpc.StorageAgentServiceStub(channel)
    op_id = new_id()
    started = stub.MergeVolumes(
        pb.MergeVolumesRequest(
            op_id=op_id,
            domain_id=domain_id,
            disk_id=new_id(),
            base_id=new_id(),
            top_id=(top := new_id()),
            survivor_id=top,
        )
    ).operation
    assert started.kind == pb.OPERATION_KIND_MERGE_VOLUMES
    while True:
        op = stub.GetOperation(pb.GetOperationRequest(op_id=op_id)).operation
        if op.state not in (pb.OPERATION_STATE_PENDING, pb.OPERATION_STATE_RUNNING):
            break
    assert op.state == pb.OPERATION_STATE_FAILED
    assert (op.error.code, op.error.reason) == (5, "VOLUME_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetOperation(pb.GetOperationRequest(op_id=new_id()))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_health(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "disksnap.agent.v1.StorageAgentService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class _Pki:
    """A throwaway CA in ``directory`` issuing EC certificates named after their DNS SAN."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ca-{new_id()}")])
        ca = self._sign(self.name, self.key, ca=True)
        self.ca = directory / "ca.crt"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def _sign(
        self, subject: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool = False
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            dns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            san = x509.SubjectAlternativeName([x509.DNSName(str(dns))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) files for DNS name ``name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key)
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _capabilities(port: int, pki: _Pki, *, with_cert: bool) -> pb.CapabilitiesResponse:
    cert, key = pki.issue("engine")
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if with_cert else None,
        certificate_chain=cert.read_bytes() if with_cert else None,
    )
    with grpc.secure_channel(f"localhost:{port}", creds) as channel:
        stub = agent_pb2_grpc.StorageAgentServiceStub(channel)
        reply: pb.CapabilitiesResponse = stub.Capabilities(pb.CapabilitiesRequest(), timeout=5)
        return reply


def test_mutual_tls_with_rotation(tmp_path: Path, settings: AgentSettings, rt: Runtime) -> None:
    old, new = _Pki(tmp_path / "old"), _Pki(tmp_path / "new")
    files = tmp_path / "server"
    files.mkdir()
    tls = replace(
        settings,
        listen="127.0.0.1:0",
        tls_cert=files / "tls.crt",
        tls_key=files / "tls.key",
        tls_ca=files / "ca.crt",
    )

    def install(pki: _Pki) -> None:
        cert, key = pki.issue("localhost")
        for source, target in ((cert, tls.tls_cert), (key, tls.tls_key), (pki.ca, tls.tls_ca)):
            assert target is not None
            target.write_bytes(source.read_bytes())

    install(old)
    server, port = create_server(tls, rt, new_health())
    server.start()
    try:
        assert _capabilities(port, old, with_cert=True).host_name == "unit-host"
        with pytest.raises(grpc.RpcError):
            _capabilities(port, old, with_cert=False)
        install(new)  # rotated on disk; the running server picks it up
        assert _capabilities(port, new, with_cert=True).host_name == "unit-host"
        with pytest.raises(grpc.RpcError):
            _capabilities(port, old, with_cert=True)
    finally:
        server.stop(0)


def test_cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    monkeypatch.setenv("DISKSNAP_AGENT_ROOT", str(root))
    monkeypatch.setenv("DISKSNAP_AGENT_STATE_DIR", str(state))
    monkeypatch.setenv("NODE_NAME", "node-7")
    domains = [new_id(), new_id()]
    monkeypatch.setenv("DISKSNAP_AGENT_DOMAINS", ",".join(domains))
    monkeypatch.setenv("DISKSNAP_AGENT_INSECURE", "1")
    settings = parse_args(["--listen", "127.0.0.1:0"])
    assert (settings.root, settings.state_dir, settings.host_name) == (root, state, "node-7")
    assert settings.domains == tuple(domains) and settings.insecure
    assert parse_args(["--domain", domains[0]]).domains == (domains[0],)


@pytest.mark.parametrize(
    "argv",
    [
        ["--state-dir", "/tmp/s"],  # no root
        ["--root", "/tmp/r", "--state-dir", "/tmp/s"],  # neither TLS nor --insecure
        ["--root", "/tmp/r", "--state-dir", "/tmp/r/state", "--insecure"],
        ["--root", "/tmp/r", "--state-dir", "/tmp/s", "--insecure", "--domain", "x"],
        ["--root", "/tmp/r", "--state-dir", "/tmp/s", "--tls-cert", "/c"],
    ],
)
def test_cli_refusals(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISKSNAP_AGENT_ROOT", "DISKSNAP_AGENT_STATE_DIR", "DISKSNAP_AGENT_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        parse_args(argv)
