"""Outgoing messages. Email leaves through the worker, never from the request."""

from workers.queues import DEFAULT, enqueue_async

SEND_EMAIL = "app.notifications.tasks.send_email"


async def queue_email(to: str, subject: str, text: str) -> None:
    await enqueue_async(DEFAULT, SEND_EMAIL, to, subject, text, retries=3)
