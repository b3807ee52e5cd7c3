"""Where `send_email` sends: the SMTP server of --smtp-url, the sender of
--smtp-from, and the address check shared by both and by payloads.

Kept free of heavy imports: the configuration checks its fields with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

# RFC 5322 dot-atoms: no quoted local parts, no address literals, and a
# dotted domain. Stricter than the standard, and what real mailboxes use.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDR_SPEC = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
_NAMED = re.compile(r"\s*(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>\s*")
MAX_ADDRESS_LENGTH = 254

STARTTLS_MODES = ("auto", "required")
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


def parse_address(text: str) -> tuple[str, str]:
    """`(display name, address)` of 'ada@example.com' or 'Ada <ada@example.com>';
    ValueError says what is wrong. One address only: a list in one string is
    refused rather than cut to its first entry."""
    if any(c in text for c in "\r\n\0"):
        # A line break would let a payload add headers of its own.
        raise ValueError("must be on one line")
    named = _NAMED.fullmatch(text)
    if named is not None:
        name, addr = named["name"], named["addr"].strip()
        quoted = len(name) >= 2 and name[0] == name[-1] == '"'
        if quoted:
            name = name[1:-1]
            if '"' in name or "\\" in name:
                raise ValueError("a quoted display name cannot hold quotes or backslashes")
        elif any(c in name for c in ',;:@"'):
            raise ValueError(
                'put a display name with , ; : @ in double quotes: "Lovelace, Ada" <ada@example.com>'
            )
    else:
        name, addr = "", text.strip()
    if not addr:
        raise ValueError("is empty: give an address such as ada@example.com")
    if len(addr) > MAX_ADDRESS_LENGTH or not ADDR_SPEC.fullmatch(addr):
        raise ValueError(
            f"{addr[:80]!r} is not an e-mail address; write name@example.com "
            "or Name <name@example.com>, one address per entry"
        )
    if len(addr.split("@", 1)[0]) > 64:
        raise ValueError(f"{addr[:80]!r} has a local part over 64 characters")
    return name, addr


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    # smtps://: TLS from the first byte; else STARTTLS, "auto" (when offered)
    # or "required".
    implicit_tls: bool
    starttls: str
    username: str
    password: str = field(repr=False)
    # PEM of the CAs to trust instead of the system's ("" for the system's).
    cafile: str
    sender_name: str
    sender_address: str

    @property
    def display(self) -> str:
        """The server, for logs and messages: never the password."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_smtp_settings(url: str, sender: str) -> SmtpSettings:
    """Settings from --smtp-url and --smtp-from; ValueError names the flag
    and what to fix, without repeating the URL (it may hold a password)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"smtp_url must start with smtp:// or smtps://, got {scheme + '://' if scheme else 'no scheme'}"
        )
    try:
        port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError("smtp_url has a port that is not a number from 1 to 65535")
    if not parts.hostname:
        raise ValueError("smtp_url needs a host: smtp://mail.example.com:587")
    if parts.path not in ("", "/"):
        raise ValueError("smtp_url takes no path: smtp://[user:password@]host[:port][?options]")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"starttls", "cafile"}
    if unknown:
        raise ValueError(
            f"smtp_url takes only the options starttls and cafile; unknown: {', '.join(sorted(unknown))}"
        )
    starttls = query.get("starttls", ["auto"])[-1]
    if starttls not in STARTTLS_MODES:
        raise ValueError(f"smtp_url: starttls must be auto or required, got {starttls!r}")
    if scheme == "smtps" and "starttls" in query:
        raise ValueError("smtp_url: smtps:// is TLS from the start; starttls is for smtp://")
    if parts.password is not None and not parts.username:
        raise ValueError("smtp_url has a password but no user name: smtp://user:password@host")
    if not sender:
        raise ValueError(
            "smtp_from is required with smtp_url: the From address of send_email messages, "
            "such as 'Reports <reports@example.com>'"
        )
    try:
        sender_name, sender_address = parse_address(sender)
    except ValueError as exc:
        raise ValueError(f"smtp_from {exc}") from None
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        implicit_tls=scheme == "smtps",
        starttls=starttls,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        cafile=query.get("cafile", [""])[-1],
        sender_name=sender_name,
        sender_address=sender_address,
    )
