"""Outgoing messages. An email is an outbox task written in the transaction that decided to send it,
so a crash or a Redis outage after that commit delays the mail but never loses it; the worker sends it.
Its body may carry a single-use token, so it is stored encrypted (AES-256-GCM), never in clear."""

import asyncio
import uuid

from pymongo.asynchronous.client_session import AsyncClientSession

from app.integrations.email import Mail, get_email_backend
from app.kit import crypto
from app.kit.queue import DEFAULT
from app.outbox import service as outbox

SEND_EMAIL = "app.notifications.tasks.send_email"
BODY_CONTEXT = b"outbox-email"


async def email(session: AsyncClientSession, to: str, subject: str, text: str) -> None:
    await outbox.add(session, SEND_EMAIL, to, subject, crypto.encrypt(text, BODY_CONTEXT),
                     key=f"email:{uuid.uuid4().hex}", queue=DEFAULT, label=f"email: {subject}")


async def send_now(to: str, subject: str, text: str) -> str:
    """Deliver at once, from a worker task (the SDKs are synchronous, so off the event loop)."""
    return await asyncio.to_thread(get_email_backend().send, Mail(to=to, subject=subject, text=text))
