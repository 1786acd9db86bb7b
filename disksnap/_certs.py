"""Certificate files that are rotated on disk, for the engine's and the agents' gRPC TLS.

cert-manager (or an operator updating a Secret) replaces the mounted files in place. Servers
built with :func:`reloading_server_credentials` present the new certificate from the next
handshake on; clients compare :meth:`CertificateFiles.stamp` before dialing and build new
channels once it changed. Not part of the SDK's public API.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class CertificateFiles:
    """A PEM certificate chain, its private key and the CA that peers must chain to."""

    cert: Path
    key: Path
    ca: Path

    def stamp(self) -> Stamp:
        """(mtime, size, inode) of each file: changes whenever one of them is replaced."""
        stats = [os.stat(path) for path in (self.cert, self.key, self.ca)]
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in stats)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """mTLS client credentials from the files as they are now."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )

    def server_configuration(self) -> grpc.ServerCertificateConfiguration:
        """The server certificate configuration from the files as they are now."""
        return grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
        )


class _Reloader:
    """Called by gRPC before each handshake: a new configuration once the files changed."""

    def __init__(self, files: CertificateFiles) -> None:
        self._files = files
        self._stamp = files.stamp()
        self.initial = files.server_configuration()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._files.stamp()
            if stamp == self._stamp:
                return None
            config = self._files.server_configuration()
        except OSError as exc:
            log.warning("keeping the current TLS certificate: %s", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificate files changed; new connections use them")
        return config


def reloading_server_credentials(
    files: CertificateFiles, *, require_client_auth: bool
) -> grpc.ServerCredentials:
    """Server TLS credentials that re-read ``files`` at the first handshake after a change.

    With ``require_client_auth`` (mTLS), a client must present a certificate signed by the CA.
    """
    reloader = _Reloader(files)
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial, reloader, require_client_authentication=require_client_auth
    )
