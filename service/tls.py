"""TLS and mutual TLS for the gRPC port and the REST port, from PEM files named in the settings.

- `--tls-cert` and `--tls-key`: the server's certificate chain and private key; the ports
  then speak TLS only (plaintext clients fail their handshake).
- `--tls-client-ca`: CA certificates; clients must present a certificate one of them
  signed (mutual TLS), or the handshake fails.

The files are read at start (a missing or malformed file stops the start with a message
naming it) and again whenever one of them changes on disk, at the next handshake, so a
renewed certificate is picked up without a restart; a replacement that cannot be read
is logged and the previous certificates stay in use. gRPC asks through its certificate
hook; the REST port's ssl.SSLContext through its SNI callback, which every handshake calls
(with or without a server name) and which may switch the connection to a newer context.
"""

import logging
import os
import ssl

import grpc

__all__ = ["forward_credentials", "server_credentials", "server_ssl_context"]

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
    """The PEM files, their modification times and what `build(cert, key, client_ca)` (the
    paths; client_ca may be '') made of them; built again when one of them changes."""

    def __init__(self, cert, key, client_ca, build, port):
        self._files = [(cert, "tls_cert"), (key, "tls_key")] + ([(client_ca, "tls_client_ca")] if client_ca else [])
        self._paths = (cert, key, client_ca)
        self._build = build
        self._port = port  # which port's copy, for the logs
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
        return self._build(*self._paths)

    def fetch(self):
        """A new configuration when the files changed (also kept as `configuration`), else None."""
        try:
            stamps = self._stat()
            if stamps == self._stamps:
                return None
            self._stamps = stamps
            configuration = self._load()
        except Exception as error:  # never raise into a handshake; keep the old certificates
            logger.error("TLS files changed but cannot be loaded; keeping the previous ones: %s", error,
                         extra={"event": "tls_reload_failed", "listener": self._port})
            return None
        logger.info("TLS certificates reloaded", extra={"event": "tls_reloaded", "listener": self._port})
        self.configuration = configuration
        return configuration


def _files(settings):
    """(cert, key, client_ca) of the settings, or None for plaintext; ValueError for an
    incomplete combination."""
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if not (cert or key or client_ca):
        return None
    if not (cert and key):
        given = [name for name, value in (("tls_cert", cert), ("tls_key", key),
                                          ("tls_client_ca", client_ca)) if value]
        raise ValueError(f"TLS: got only {' and '.join(given)}, expected tls_cert and tls_key "
                         "(--tls-cert, --tls-key), with tls_client_ca optional")
    return cert, key, client_ca


def _read_pems(cert, key, client_ca):
    """The files' contents (the client CA's None when unset), each checked to hold PEM."""
    return (_read_pem(cert, "tls_cert"), _read_pem(key, "tls_key"),
            _read_pem(client_ca, "tls_client_ca") if client_ca else None)


def _grpc_configuration(cert, key, client_ca):
    cert, key, ca = _read_pems(cert, key, client_ca)
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def server_credentials(settings):
    """grpc.ServerCredentials for the settings' TLS files, or None for plaintext.

    Raises ValueError for an incomplete combination (a certificate without its key, a
    client CA without a certificate) and OSError/ValueError for a file that cannot be
    read or holds no PEM.
    """
    files = _files(settings)
    if files is None:
        return None
    certificates = _Certificates(*files, _grpc_configuration, "grpc")
    logger.info("TLS on", extra={"event": "tls_enabled", "mutual": bool(files[2])})
    return grpc.dynamic_ssl_server_credentials(certificates.configuration, certificates.fetch,
                                               require_client_authentication=bool(files[2]))


def _ssl_context(cert, key, client_ca):
    _read_pems(cert, key, client_ca)  # the same errors as for gRPC, naming the file
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as gRPC's default
    try:
        context.load_cert_chain(cert, key)  # from the paths: ssl cannot take a key from memory
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as error:  # a key that does not match, a certificate that does not parse
        raise ValueError(f"TLS: cannot use tls_cert {cert} with tls_key {key}"
                         f"{f' and tls_client_ca {client_ca}' if client_ca else ''}: {error}") from None
    return context


def server_ssl_context(settings):
    """An ssl.SSLContext for the settings' TLS files that follows them when they change, or
    None for plaintext. Raises as server_credentials does."""
    files = _files(settings)
    if files is None:
        return None
    certificates = _Certificates(*files, _ssl_context, "http")
    listening = certificates.configuration

    def newest(connection, server_name, context):
        certificates.fetch()
        if certificates.configuration is not listening:
            connection.context = certificates.configuration

    listening.sni_callback = newest
    return listening


def forward_credentials(settings):
    """grpc.ChannelCredentials for the calls a cluster server forwards to a model's owner,
    or None (plaintext, when the servers speak plaintext).

    The owners' certificates are checked against --cluster-ca; under mutual TLS
    (--tls-client-ca) this server's own certificate and key are presented as the client's,
    so they must allow client authentication. Read once, at start.
    """
    if not settings.cluster_ca:
        return None
    ca = _read_pem(settings.cluster_ca, "cluster_ca")
    if not settings.tls_client_ca:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(root_certificates=ca,
                                        private_key=_read_pem(settings.tls_key, "tls_key"),
                                        certificate_chain=_read_pem(settings.tls_cert, "tls_cert"))
