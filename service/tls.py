"""TLS and mutual TLS for the gRPC port, from PEM files named in the settings.

- `--tls-cert` and `--tls-key`: the server's certificate chain and private key; the port
  then speaks TLS only (plaintext clients fail their handshake).
- `--tls-client-ca`: CA certificates; clients must present a certificate one of them
  signed (mutual TLS), or the handshake fails.

The files are read at start (a missing or malformed file stops the start with a message
naming it) and again whenever one of them changes on disk, at the next handshake, so a
renewed certificate is picked up without a restart; a replacement that cannot be read
is logged and the previous certificates stay in use.
"""

import logging
import os

import grpc

__all__ = ["server_credentials"]

logger = logging.getLogger(__name__)


def _read_pem(path, option):
    try:
        with open(path, "rb") as file:
            content = file.read()
    except OSError as error:
        raise OSError(f"{option}: cannot read {path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in content:
        raise ValueError(f"{option} {path}: got no PEM block, expected '-----BEGIN ...'")
    return content


class _Certificates:
    """The PEM files and their modification times; reloads when one changes."""

    def __init__(self, cert, key, client_ca):
        self._files = [(cert, "tls_cert"), (key, "tls_key")] + ([(client_ca, "tls_client_ca")] if client_ca else [])
        self._stamps = self._stat()
        self.configuration = self._load()

    def _stat(self):
        stamps = []
        for path, _ in self._files:
            try:
                info = os.stat(path)
                stamps.append((info.st_mtime_ns, info.st_size, info.st_ino))
            except OSError:
                stamps.append(None)
        return stamps

    def _load(self):
        cert, key, *ca = [_read_pem(path, option) for path, option in self._files]
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca[0] if ca else None)

    def fetch(self):
        """grpc's per-handshake hook: a new configuration when the files changed, else None."""
        try:
            stamps = self._stat()
            if stamps == self._stamps:
                return None
            self._stamps = stamps
            configuration = self._load()
        except Exception as error:  # never raise into grpc's handshake; keep the old certificates
            logger.error("TLS files changed but cannot be loaded; keeping the previous ones: %s", error,
                         extra={"event": "tls_reload_failed"})
            return None
        logger.info("TLS certificates reloaded", extra={"event": "tls_reloaded"})
        return configuration


def server_credentials(settings):
    """grpc.ServerCredentials for the settings' TLS files, or None for plaintext.

    Raises ValueError for an incomplete combination (a certificate without its key, a
    client CA without a certificate) and OSError/ValueError for a file that cannot be
    read or holds no PEM.
    """
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if not (cert or key or client_ca):
        return None
    if not (cert and key):
        given = [name for name, value in (("tls_cert", cert), ("tls_key", key),
                                          ("tls_client_ca", client_ca)) if value]
        raise ValueError(f"TLS: got only {' and '.join(given)}, expected tls_cert and tls_key "
                         "(--tls-cert, --tls-key), with tls_client_ca optional")
    certificates = _Certificates(cert, key, client_ca)
    logger.info("TLS on", extra={"event": "tls_enabled", "mutual": bool(client_ca)})
    return grpc.dynamic_ssl_server_credentials(certificates.configuration, certificates.fetch,
                                               require_client_authentication=bool(client_ca))
