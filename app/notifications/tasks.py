"""notifications.* tasks, run by the worker as outbox tasks."""

from app.kit import crypto
from app.notifications.service import BODY_CONTEXT, send_now


async def send_email(to: str, subject: str, sealed_text: str) -> str:
    """notifications.send_email: deliver one message through the configured backend."""
    return await send_now(to, subject, crypto.decrypt(sealed_text, BODY_CONTEXT))
