"""Reading the local SMTP server's Maildir: what the approvers were sent (for the demo and the tests)."""

from __future__ import annotations

import mailbox
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from tollgate.htmltext import plain_text


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str  # the body with HTML tags removed
    received: float


def _body(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    chunks = []
    for part in parts:
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True) or b""
            chunks.append(payload.decode(part.get_content_charset() or "utf-8", errors="replace"))
    return plain_text("\n".join(chunks))


def messages(maildir: Path) -> list[Mail]:
    """Every message delivered so far, oldest first."""
    if not (maildir / "new").is_dir() and not (maildir / "cur").is_dir():
        return []
    box = mailbox.Maildir(str(maildir), factory=None, create=False)
    found = []
    for key in box.iterkeys():
        message = box.get_message(key)
        found.append(Mail(str(message["To"]), str(message["Subject"]), _body(message), message.get_date()))
    return sorted(found, key=lambda mail: mail.received)


def describe(mail: Mail) -> str:
    return f"To: {mail.to}\nSubject: {mail.subject}\n\n{mail.text}"
