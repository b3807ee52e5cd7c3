"""Certificates made at test time, token files, and servers that use them."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.server import ServerThread

# Two tenants; team-b's token is stored hashed in the token file.
TOKENS = {
    "team-a": "token-of-team-a-0123456789abcdef",
    "team-b": "token-of-team-b-fedcba9876543210",
}
WRONG_TOKEN = "token-nobody-was-given-00000000"


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate it signed for 127.0.0.1 and
    localhost, a client certificate it signed, and a client certificate
    signed by a CA the server does not trust."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
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
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate) -> Path:
    path = directory / name
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(directory: Path, name: str, key: ec.EllipticCurvePrivateKey) -> Path:
    path = directory / name
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ca", "s", "c", "oca", "x")}
    ca = _certificate("Conveyor test CA", keys["ca"], None, ca=True)
    other_ca = _certificate("Some other CA", keys["oca"], None, ca=True)
    signer = (ca.subject, keys["ca"])
    return Pki(
        ca=_write(directory, "ca.pem", ca),
        server_cert=_write(
            directory, "server.pem", _certificate("localhost", keys["s"], signer, server=True)
        ),
        server_key=_write_key(directory, "server.key", keys["s"]),
        client_cert=_write(directory, "client.pem", _certificate("client", keys["c"], signer)),
        client_key=_write_key(directory, "client.key", keys["c"]),
        stranger_cert=_write(
            directory,
            "stranger.pem",
            _certificate("stranger", keys["x"], (other_ca.subject, keys["oca"])),
        ),
        stranger_key=_write_key(directory, "stranger.key", keys["x"]),
    )


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    hashed = hashlib.sha256(TOKENS["team-b"].encode()).hexdigest()
    path.write_text(
        f"# token tenant\n{TOKENS['team-a']} team-a\n\nsha256:{hashed}   team-b   # stored hashed\n"
    )
    return path


@pytest.fixture
def tls_settings(pki: Pki) -> dict[str, str]:
    return {"tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key)}


@pytest.fixture
def mtls_settings(pki: Pki, tls_settings: dict[str, str]) -> dict[str, str]:
    return {**tls_settings, "tls_client_ca": str(pki.ca)}


@pytest.fixture
def auth_server(make_server: Callable[..., ServerThread], tokens_file: Path) -> ServerThread:
    """Token authentication over plaintext."""
    return make_server(auth_tokens_file=str(tokens_file))


@pytest.fixture
def secure_server(
    make_server: Callable[..., ServerThread], tokens_file: Path, mtls_settings: dict[str, str]
) -> ServerThread:
    """Mutual TLS and token authentication."""
    return make_server(auth_tokens_file=str(tokens_file), **mtls_settings)


@pytest.fixture
def tokens() -> dict[str, str]:
    """Tenant name to its token, as in the tokens file."""
    return dict(TOKENS)


@pytest.fixture
def wrong_token() -> str:
    return WRONG_TOKEN
