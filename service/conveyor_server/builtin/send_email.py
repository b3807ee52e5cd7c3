"""The `send_email` task type: one message through the SMTP server of
--smtp-url."""

from __future__ import annotations

import datetime
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from conveyor_server._context import TaskContext
from conveyor_server._handlers import InvalidPayload, NonRetryableError, TaskHandler
from conveyor_server.builtin.smtp_settings import SmtpSettings, parse_address

FIELDS = ("to", "cc", "subject", "text", "html", "reply_to")
MAX_RECIPIENTS = 100
# RFC 5322's limit for one header line.
MAX_SUBJECT_LENGTH = 998
SMTP_TIMEOUT_SECONDS = 30.0

EXAMPLE = {
    "to": ["Ada <ada@example.com>"],
    "cc": ["alan@example.com"],
    "subject": "Your report is ready",
    "text": "Hello Ada,\n\nthe report you asked for is attached to your account.\n",
    "html": "<p>Hello Ada,</p><p>the report you asked for is attached to your account.</p>",
    "reply_to": "reports@example.com",
}


class SmtpTemporaryError(Exception):
    """The SMTP server answered 4xx or could not be reached: worth a retry."""


def _addresses(payload: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    value = payload.get(key)
    if value is None:
        return []
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list):
        raise InvalidPayload(
            f'"{key}" must be an address or a list of addresses, got {type(value).__name__}',
            field=key,
        )
    parsed = []
    for index, entry in enumerate(entries):
        where = key if isinstance(value, str) else f"{key}[{index}]"
        if not isinstance(entry, str):
            raise InvalidPayload(
                f"{where} must be a string, got {type(entry).__name__}", field=where
            )
        try:
            parsed.append(parse_address(entry))
        except ValueError as exc:
            raise InvalidPayload(f"{where} {exc}", field=where) from None
    return parsed


def _one_line(payload: Mapping[str, Any], key: str, required: bool) -> str:
    value = payload.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidPayload(
            f'"{key}" is required: a string' if value is None else f'"{key}" must be a string',
            field=key,
        )
    if "\r" in value or "\n" in value:
        raise InvalidPayload(f'"{key}" must be on one line', field=key)
    if len(value) > MAX_SUBJECT_LENGTH:
        raise InvalidPayload(f'"{key}" has at most {MAX_SUBJECT_LENGTH} characters', field=key)
    return value


@dataclass(frozen=True, slots=True)
class EmailRequest:
    """A checked payload."""

    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    subject: str
    reply_to: tuple[str, str] | None
    text: str
    html: str

    @property
    def recipients(self) -> list[str]:
        """Every address to send to, once each, in order."""
        return list(dict.fromkeys(addr for _, addr in self.to + self.cc))


def check_email(payload: Mapping[str, Any]) -> EmailRequest:
    """The payload's fields, checked; InvalidPayload names the field at fault."""
    unknown = set(payload) - set(FIELDS)
    if unknown:
        raise InvalidPayload(
            f"send_email takes {', '.join(FIELDS)}; unknown: {', '.join(sorted(unknown))}",
            field=sorted(unknown)[0],
        )
    to = _addresses(payload, "to")
    if not to:
        raise InvalidPayload('"to" is required: at least one address', field="to")
    cc = _addresses(payload, "cc")
    if len(to) + len(cc) > MAX_RECIPIENTS:
        raise InvalidPayload(f"at most {MAX_RECIPIENTS} recipients in to and cc", field="to")
    subject = _one_line(payload, "subject", required=True)
    reply_to = _addresses(payload, "reply_to") if _one_line(payload, "reply_to", False) else []
    bodies = {}
    for key in ("text", "html"):
        body = payload.get(key)
        if body is not None and not isinstance(body, str):
            raise InvalidPayload(f'"{key}" must be a string', field=key)
        bodies[key] = body or ""
    if not bodies["text"] and not bodies["html"]:
        raise InvalidPayload('give a body: "text", "html" or both', field="text")
    return EmailRequest(
        to, cc, subject, reply_to[0] if reply_to else None, bodies["text"], bodies["html"]
    )


def validate_send_email(payload: Mapping[str, Any]) -> None:
    check_email(payload)


def build_message(request: EmailRequest, settings: SmtpSettings) -> EmailMessage:
    message = EmailMessage()
    message["From"] = Address(settings.sender_name, addr_spec=settings.sender_address)
    message["To"] = [Address(name, addr_spec=addr) for name, addr in request.to]
    if request.cc:
        message["Cc"] = [Address(name, addr_spec=addr) for name, addr in request.cc]
    if request.reply_to is not None:
        name, addr = request.reply_to
        message["Reply-To"] = Address(name, addr_spec=addr)
    message["Subject"] = request.subject
    message["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    message["Message-ID"] = make_msgid(domain=settings.sender_address.split("@", 1)[1])
    if request.text:
        message.set_content(request.text)
        if request.html:
            message.add_alternative(request.html, subtype="html")
    else:
        message.set_content(request.html, subtype="html")
    return message


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def _failure(settings: SmtpSettings, code: int, reply: str) -> Exception:
    """4xx is the server's "not now": retried while attempts remain; any
    other reply will not change, so the task fails at once."""
    if 400 <= code < 500:
        return SmtpTemporaryError(f"the SMTP server {settings.display} answered {reply}; try again")
    return NonRetryableError(f"the SMTP server {settings.display} refused the message: {reply}")


def _start_tls(smtp: smtplib.SMTP, settings: SmtpSettings, context: ssl.SSLContext) -> None:
    smtp.ehlo()
    if smtp.has_extn("starttls"):
        smtp.starttls(context=context)
        smtp.ehlo()
    elif settings.starttls == "required" or settings.username:
        why = "credentials are sent only over TLS" if settings.username else "starttls=required"
        raise NonRetryableError(
            f"the SMTP server {settings.display} does not offer STARTTLS, and {why}: "
            "use smtps:// or a server that offers STARTTLS"
        )


def deliver(ctx: TaskContext, payload: Mapping[str, Any], settings: SmtpSettings) -> Any:
    request = check_email(payload)
    message = build_message(request, settings)
    recipients = request.recipients
    if ctx.cancelled:
        return None
    ctx.report_progress(0, f"connecting to {settings.host}:{settings.port}")
    context = ssl.create_default_context(cafile=settings.cafile or None)
    try:
        smtp: smtplib.SMTP
        if settings.implicit_tls:
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=SMTP_TIMEOUT_SECONDS, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=SMTP_TIMEOUT_SECONDS)
        with smtp:
            if not settings.implicit_tls:
                _start_tls(smtp, settings, context)
            if settings.username:
                smtp.login(settings.username, settings.password)
            ctx.report_progress(50, f"sending to {len(recipients)} recipients")
            refused = smtp.send_message(
                message, from_addr=settings.sender_address, to_addrs=recipients
            )
    except smtplib.SMTPRecipientsRefused as exc:
        # Every recipient refused, so nothing was sent: a retry sends no
        # duplicates, and is worth it when some refusal was temporary.
        replies = {addr: _reply(code, text) for addr, (code, text) in exc.recipients.items()}
        code = min(code for code, _ in exc.recipients.values())
        raise _failure(
            settings, code, "; ".join(f"{addr}: {reply}" for addr, reply in replies.items())
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise _failure(settings, exc.smtp_code, _reply(exc.smtp_code, exc.smtp_error)) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise NonRetryableError(f"the SMTP server {settings.display}: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SmtpTemporaryError(
            f"cannot talk to the SMTP server {settings.display}: {exc or type(exc).__name__}"
        ) from exc
    accepted = [addr for addr in recipients if addr not in refused]
    message_id = str(message["Message-ID"])
    ctx.logger.info(
        "sent message %s to %d recipients through %s", message_id, len(accepted), settings.display
    )
    ctx.report_progress(100, f"sent to {len(accepted)} recipients")
    # Some recipients refused while others took the message: it was sent, so
    # the task succeeds (a retry would send it again to the others), and
    # the refusals are in the result.
    return {
        "message_id": message_id,
        "accepted": accepted,
        "refused": {addr: _reply(code, text) for addr, (code, text) in refused.items()},
    }


def send_email_handler(settings: SmtpSettings) -> TaskHandler:
    def send_email(ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Sends an e-mail (to, cc, subject, text and/or html, reply_to)
        through the server's SMTP server; returns the message id and the
        accepted recipients.

        SMTP 4xx replies and lost connections are retried while attempts
        remain; 5xx replies fail the task at once with the server's reply."""
        return deliver(ctx, payload, settings)

    return send_email
