"""Email behind one small interface: an .eml outbox for dev and tests, SendGrid in production."""

import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol

from app.config import Settings, get_settings


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


class EmailBackend(Protocol):
    def send(self, mail: Mail) -> str: ...


class OutboxBackend:
    """One .eml file per message in MAIL_OUTBOX_DIR."""

    def __init__(self, directory: str, sender: str):
        self.directory = Path(directory)
        self.sender = sender

    def send(self, mail: Mail) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, mail.to, mail.subject
        msg["Date"], msg["Message-ID"] = formatdate(usegmt=True), make_msgid(domain="peertest.local")
        msg.set_content(mail.text)
        name = f"{formatdate(usegmt=True).replace(' ', '_').replace(',', '').replace(':', '')}-{uuid.uuid4().hex}.eml"
        path = self.directory / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(msg))
        tmp.rename(path)  # readers never see half a message
        return str(path)


class SendGridBackend:
    def __init__(self, api_key: str, host: str, sender: str):
        from sendgrid import SendGridAPIClient

        self.client = SendGridAPIClient(api_key, host=host)
        self.sender = sender

    def send(self, mail: Mail) -> str:
        from sendgrid.helpers.mail import Mail as SendGridMail

        message = SendGridMail(
            from_email=self.sender, to_emails=mail.to, subject=mail.subject, plain_text_content=mail.text
        )
        response = self.client.send(message)
        if response.status_code >= 300:
            raise RuntimeError(f"SendGrid answered {response.status_code}")
        return response.headers.get("X-Message-Id", "") if response.headers else ""


def get_email_backend(settings: Settings | None = None) -> EmailBackend:
    settings = settings or get_settings()
    if settings.mail_backend == "sendgrid":
        return SendGridBackend(settings.sendgrid_api_key, settings.sendgrid_host, settings.mail_from)
    return OutboxBackend(settings.mail_outbox_dir, settings.mail_from)
