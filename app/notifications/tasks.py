"""notifications.* tasks, run by the worker as outbox tasks."""

import asyncio

from app.integrations.email import Mail, get_email_backend


async def send_email(to: str, subject: str, text: str) -> str:
    """notifications.send_email: deliver one message through the configured backend (the SDKs are
    synchronous, so off the event loop)."""
    return await asyncio.to_thread(get_email_backend().send, Mail(to=to, subject=subject, text=text))
