"""notifications.* tasks, run by the RQ worker."""

from app.integrations.email import Mail, get_email_backend


def send_email(to: str, subject: str, text: str) -> str:
    """notifications.send_email: deliver one message through the configured backend."""
    return get_email_backend().send(Mail(to=to, subject=subject, text=text))
