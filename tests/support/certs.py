"""Throwaway X.509 material for mTLS tests: a private CA, server and client certificates.

Keys are EC P-256 (fast to generate). Server certificates carry SAN DNS=localhost and
IP=127.0.0.1 by default, so clients can connect to `127.0.0.1:PORT` without a name override.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one certificate: its certificate, private key and issuing CA."""

    cert: Path
    key: Path
    ca: Path

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()

    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()


class CertificateAuthority:
    """A self-signed CA that writes its certificate and the ones it issues under `directory`."""

    def __init__(self, directory: Path, name: str = "disksnap-test-ca") -> None:
        self.directory = directory
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = directory / f"{name}.crt"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue_server(
        self,
        name: str = "server",
        dns: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1",),
    ) -> CertFiles:
        """A server certificate (serverAuth) with the given DNS and IP SANs."""
        return self._issue(name, dns, ips, ExtendedKeyUsageOID.SERVER_AUTH)

    def issue_client(self, name: str = "client", dns: tuple[str, ...] = ()) -> CertFiles:
        """A client certificate (clientAuth); `dns` SANs (e.g. a host name) are optional."""
        return self._issue(name, dns or (name,), (), ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue_peer(
        self, name: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ("127.0.0.1",)
    ) -> CertFiles:
        """A certificate for both ends of mTLS (serverAuth + clientAuth), e.g. an agent's."""
        return self._issue(
            name,
            dns or (name, "localhost"),
            ips,
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )

    def _issue(
        self,
        name: str,
        dns: tuple[str, ...],
        ips: tuple[str, ...],
        *usages: x509.ObjectIdentifier,
    ) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path = self.directory / f"{self.name}-{name}.crt"
        key_path = self.directory / f"{self.name}-{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return CertFiles(cert=cert_path, key=key_path, ca=self.cert_path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
