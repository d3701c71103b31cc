"""payments.* tasks."""

from app.payments import inbox
from workers.runtime import task_context


async def process_event(inbox_id: str) -> str:
    """payments.process_event: apply one stored provider event."""
    async with task_context():
        return await inbox.process(inbox_id)
