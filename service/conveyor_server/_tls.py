"""Server credentials for TLS and mutual TLS, read from PEM files."""

from __future__ import annotations

import ssl

import grpc

from conveyor_server._config import ServerConfig


def _read_pem(flag: str, path: str, marker: bytes) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {flag} file {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise ValueError(f"{flag} file {path!r} holds no PEM {marker.decode().strip('- ')}")
    return data


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured files, or None for plaintext.

    With a client CA, clients must present a certificate it signed.
    """
    if not config.tls_cert:
        return None
    cert = _read_pem("--tls-cert", config.tls_cert, b"CERTIFICATE-----")
    key = _read_pem("--tls-key", config.tls_key, b"PRIVATE KEY-----")
    client_ca = (
        _read_pem("--tls-client-ca", config.tls_client_ca, b"CERTIFICATE-----")
        if config.tls_client_ca
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def http_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The same certificate (and client CA) for the HTTP API, or None for
    plaintext."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_client_ca:
            context.load_verify_locations(config.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load --tls-cert/--tls-key for the HTTP API: {exc}") from None
    return context
