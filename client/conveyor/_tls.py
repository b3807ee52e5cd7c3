"""Channel credentials for a Conveyor service that serves TLS."""

from __future__ import annotations

import os

import grpc

PemSource = str | os.PathLike[str] | bytes
"""A path to a PEM file, or the PEM data itself as bytes."""


def _pem(source: PemSource | None, what: str) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    try:
        with open(source, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {os.fspath(source)!r}: {exc}") from None


def tls(
    ca: PemSource | None = None,
    *,
    cert: PemSource | None = None,
    key: PemSource | None = None,
) -> grpc.ChannelCredentials:
    """Credentials for `Client(..., credentials=...)` and `AsyncClient`.

    `ca` holds the certificates that signed the server's (the system's trusted
    roots when None); `cert` and `key` are the client certificate and its key,
    for a server that asks for one (mutual TLS). Each is a path, or PEM bytes.

    Example::

        import os

        from conveyor import Client, tls

        with Client(
            "conveyor.internal:50051",
            credentials=tls("ca.pem", cert="client.pem", key="client.key"),
            token=os.environ["CONVEYOR_TOKEN"],
        ) as client:
            ...
    """
    if (cert is None) != (key is None):
        raise ValueError("cert and key go together: give both or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca, "CA"),
        private_key=_pem(key, "key"),
        certificate_chain=_pem(cert, "certificate"),
    )
