"""notifications.* tasks, run by the worker as outbox tasks."""

import asyncio

from app.integrations.email import Mail, get_email_backend
from app.kit import crypto
from app.notifications.service import BODY_CONTEXT


async def send_email(to: str, subject: str, sealed_text: str) -> str:
    """notifications.send_email: deliver one message through the configured backend (the SDKs are
    synchronous, so off the event loop)."""
    mail = Mail(to=to, subject=subject, text=crypto.decrypt(sealed_text, BODY_CONTEXT))
    return await asyncio.to_thread(get_email_backend().send, mail)
