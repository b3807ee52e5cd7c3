"""The `send_email` task type against a real SMTP server (aiosmtpd) run by
the test: what it receives, retries on 4xx, failure on 5xx, TLS and
credentials, and payloads refused at submit."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conveyor import Client, InvalidArgument, TaskState
from conveyor_server import ServerConfig
from tests.support.server import ServerThread

SENDER = "Reports <reports@example.com>"
USER, PASSWORD = "mailer", "s3cret p@ss"


class Mailbox:
    """An aiosmtpd handler that keeps what it receives and answers RCPT and
    DATA with scripted replies (then 250)."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []
        self.data_replies: list[str] = []
        self.rcpt_replies: dict[str, str] = {}
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 Message accepted for delivery"

    def authenticate(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
        return AuthResult(success=ok)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Mailbox, int]]]:
    """start(**controller_options) runs an SMTP server on 127.0.0.1."""
    controllers: list[Controller] = []

    def start(*, auth: bool = False, **options: Any) -> tuple[Mailbox, int]:
        mailbox = Mailbox()
        if auth:
            options.setdefault("auth_require_tls", True)
            options["authenticator"] = mailbox.authenticate
        port = _free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return mailbox, port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def test_the_message_reaches_the_smtp_server_with_its_headers_body_and_recipients(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
) -> None:
    mailbox, port = smtp_server()
    server = make_server(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=SENDER)
    with Client(server.address) as client:
        assert "send_email" in {t.name for t in client.task_types()}
        task = client.submit(
            "send_email",
            {
                "to": ["Ada Lovelace <ada@example.com>", "alan@example.org"],
                "cc": "grace@example.net",
                "subject": "Your report is ready",
                "text": "Hello Ada,\nthe report is ready.\n",
                "html": "<p>Hello Ada,</p><p>the report is ready.</p>",
                "reply_to": "Help <help@example.com>",
            },
        ).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    [(envelope, message)] = mailbox.messages
    assert envelope.mail_from == "reports@example.com"
    assert envelope.rcpt_tos == ["ada@example.com", "alan@example.org", "grace@example.net"]
    assert message["From"] == SENDER
    assert message["To"] == "Ada Lovelace <ada@example.com>, alan@example.org"
    assert message["Cc"] == "grace@example.net"
    assert message["Reply-To"] == "Help <help@example.com>"
    assert message["Subject"] == "Your report is ready"
    assert message["Date"] is not None
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    # On the wire lines end in CRLF.
    assert text.get_content().replace("\r\n", "\n") == "Hello Ada,\nthe report is ready.\n"
    assert html.get_content().strip() == "<p>Hello Ada,</p><p>the report is ready.</p>"
    assert task.result == {
        "message_id": message["Message-ID"],
        "accepted": ["ada@example.com", "alan@example.org", "grace@example.net"],
        "refused": {},
    }
    assert task.progress.percent == 100


def test_an_html_only_message_is_sent_as_html(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
) -> None:
    mailbox, port = smtp_server()
    server = make_server(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email", {"to": "ada@example.com", "subject": "Hi", "html": "<b>hi</b>"}
        ).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    [(_, message)] = mailbox.messages
    assert message.get_content_type() == "text/html"
    assert message.get_content().strip() == "<b>hi</b>"


def test_a_4xx_reply_is_retried_and_the_next_attempt_delivers(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
) -> None:
    mailbox, port = smtp_server()
    mailbox.data_replies = ["451 4.3.0 Mail server temporarily rejected message"]
    server = make_server(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email",
            {"to": ["ada@example.com"], "subject": "Hi", "text": "hello"},
            max_attempts=3,
        ).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.attempt == 2
    assert len(mailbox.messages) == 1


def test_a_4xx_reply_on_the_last_attempt_fails_the_task_with_the_reply(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
) -> None:
    mailbox, port = smtp_server()
    mailbox.data_replies = ["452 4.3.1 Insufficient system storage"] * 2
    server = make_server(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email", {"to": "ada@example.com", "subject": "Hi", "text": "x"}, max_attempts=2
        ).wait(timeout=20)
    assert task.state is TaskState.FAILED
    assert task.attempt == 2
    assert task.error is not None
    assert "452 4.3.1 Insufficient system storage" in task.error.message
    assert mailbox.messages == []


def test_a_5xx_reply_fails_the_task_at_once_with_the_servers_reply(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
) -> None:
    mailbox, port = smtp_server()
    mailbox.rcpt_replies = {"nobody@example.com": "550 5.1.1 No such user here"}
    server = make_server(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email",
            {"to": "nobody@example.com", "subject": "Hi", "text": "x"},
            max_attempts=5,
        ).wait(timeout=20)
    assert task.state is TaskState.FAILED
    assert task.attempt == 1
    assert task.error is not None
    assert task.error.code == "NON_RETRYABLE"
    assert "550 5.1.1 No such user here" in task.error.message
    assert mailbox.messages == []


def test_recipients_refused_beside_accepted_ones_are_in_the_result(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
) -> None:
    mailbox, port = smtp_server()
    mailbox.rcpt_replies = {"nobody@example.com": "550 5.1.1 No such user here"}
    server = make_server(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email",
            {"to": ["nobody@example.com", "ada@example.com"], "subject": "Hi", "text": "x"},
        ).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert isinstance(task.result, dict)
    assert task.result["accepted"] == ["ada@example.com"]
    assert task.result["refused"] == {"nobody@example.com": "550 5.1.1 No such user here"}
    [(envelope, _)] = mailbox.messages
    assert envelope.rcpt_tos == ["ada@example.com"]


def test_starttls_with_credentials_reaches_a_server_with_a_self_signed_certificate(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
    certificate: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mailbox, port = smtp_server(
        auth=True, tls_context=_server_context(certificate), require_starttls=True
    )
    cafile = certificate[0]
    url = f"smtp://{USER}:s3cret%20p%40ss@127.0.0.1:{port}?starttls=required&cafile={cafile}"
    caplog.set_level(logging.DEBUG)
    server = make_server(smtp_url=url, smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email", {"to": "ada@example.com", "subject": "Hi", "text": "over TLS"}
        ).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert len(mailbox.messages) == 1
    assert mailbox.logins == [(USER.encode(), PASSWORD.encode())]
    assert PASSWORD not in caplog.text
    assert "s3cret" not in repr(ServerConfig(smtp_url=url, smtp_from=SENDER))


def test_smtps_speaks_tls_from_the_start(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
    certificate: tuple[Path, Path],
) -> None:
    # aiosmtpd offers AUTH over implicit TLS only when not told to require
    # STARTTLS for it.
    mailbox, port = smtp_server(
        auth=True, auth_require_tls=False, ssl_context=_server_context(certificate)
    )
    url = f"smtps://{USER}:s3cret%20p%40ss@127.0.0.1:{port}?cafile={certificate[0]}"
    server = make_server(smtp_url=url, smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email", {"to": "ada@example.com", "subject": "Hi", "text": "x"}
        ).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert mailbox.logins == [(USER.encode(), PASSWORD.encode())]
    assert len(mailbox.messages) == 1


def test_credentials_are_not_sent_to_a_server_without_starttls(
    smtp_server: Callable[..., tuple[Mailbox, int]],
    make_server: Callable[..., ServerThread],
) -> None:
    mailbox, port = smtp_server()
    server = make_server(smtp_url=f"smtp://{USER}:pw@127.0.0.1:{port}", smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email", {"to": "ada@example.com", "subject": "Hi", "text": "x"}, max_attempts=3
        ).wait(timeout=20)
    assert task.state is TaskState.FAILED
    assert task.attempt == 1
    assert task.error is not None
    assert "does not offer STARTTLS" in task.error.message
    assert "credentials are sent only over TLS" in task.error.message
    assert mailbox.logins == [] and mailbox.messages == []


def test_an_unreachable_smtp_server_is_retried(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(smtp_url=f"smtp://127.0.0.1:{_free_port()}", smtp_from=SENDER)
    with Client(server.address) as client:
        task = client.submit(
            "send_email", {"to": "ada@example.com", "subject": "Hi", "text": "x"}, max_attempts=2
        ).wait(timeout=20)
    assert task.state is TaskState.FAILED
    assert task.attempt == 2
    assert task.error is not None
    assert task.error.code == "HANDLER_ERROR"
    assert "cannot talk to the SMTP server smtp://127.0.0.1" in task.error.message


GOOD = {"to": ["ada@example.com"], "subject": "Hi", "text": "hello"}


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (
            {"to": ["ada@example.com", "not an address"]},
            "payload.to[1]",
            "is not an e-mail address",
        ),
        ({"to": "ada@example.com, alan@example.com"}, "payload.to", "one address per entry"),
        ({"to": []}, "payload.to", '"to" is required'),
        ({"to": None}, "payload.to", '"to" is required'),
        ({"to": [42]}, "payload.to[0]", "must be a string"),
        ({"cc": ["alan@example"]}, "payload.cc[0]", "is not an e-mail address"),
        ({"cc": ["Lovelace, Ada <ada@example.com>"]}, "payload.cc[0]", "double quotes"),
        ({"reply_to": "help@"}, "payload.reply_to", "is not an e-mail address"),
        ({"subject": "Hi\r\nBcc: eve@example.com"}, "payload.subject", "one line"),
        ({"subject": None}, "payload.subject", '"subject" is required'),
        ({"text": None}, "payload.text", 'give a body: "text", "html" or both'),
        ({"html": 3}, "payload.html", '"html" must be a string'),
        ({"from": "boss@example.com"}, "payload.from", "send_email takes to, cc, subject"),
        ({"to": [f"u{i}@example.com" for i in range(101)]}, "payload.to", "at most 100"),
    ],
)
def test_a_payload_that_cannot_be_sent_is_refused_at_submit_naming_the_field(
    change: dict[str, Any],
    field: str,
    says: str,
    make_server: Callable[..., ServerThread],
) -> None:
    payload = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    server = make_server(smtp_url="smtp://127.0.0.1:1", smtp_from=SENDER)
    with Client(server.address) as client, pytest.raises(InvalidArgument) as caught:
        client.submit("send_email", payload)
    [(where, description)] = caught.value.field_violations
    assert where == field
    assert says in description


def test_without_an_smtp_url_send_email_is_not_a_type(server: ServerThread) -> None:
    with Client(server.address) as client:
        assert "send_email" not in {t.name for t in client.task_types()}
        with pytest.raises(InvalidArgument, match="unknown task type 'send_email'"):
            client.submit("send_email", GOOD)


def test_the_example_payload_and_description_are_listed(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server(smtp_url="smtp://127.0.0.1:1", smtp_from=SENDER)
    with Client(server.address) as client:
        [listed] = [t for t in client.task_types() if t.name == "send_email"]
    assert listed.description.startswith("Sends an e-mail")
    assert listed.example_payload is not None
    assert listed.example_payload["to"] == ["Ada <ada@example.com>"]


@pytest.mark.parametrize(
    ("url", "sender", "says"),
    [
        ("http://mail.example.com", SENDER, "must start with smtp:// or smtps://"),
        ("smtp://", SENDER, "needs a host"),
        ("smtp://mail.example.com:99999", SENDER, "port"),
        ("smtp://mail.example.com?tls=yes", SENDER, "unknown: tls"),
        ("smtp://mail.example.com?starttls=maybe", SENDER, "starttls must be auto or required"),
        ("smtps://mail.example.com?starttls=required", SENDER, "starttls is for smtp://"),
        ("smtp://u:topsecret@mail.example.com", "", "smtp_from is required"),
        ("smtp://u:topsecret@mail.example.com", "reports", "smtp_from 'reports' is not"),
    ],
)
def test_a_bad_smtp_setting_stops_the_server_from_starting(
    url: str, sender: str, says: str
) -> None:
    with pytest.raises(ValueError, match="smtp") as caught:
        ServerConfig(smtp_url=url, smtp_from=sender)
    assert says in str(caught.value)
    assert "topsecret" not in str(caught.value)
