"""auth.* outbox tasks: the worker issues the single-use token and mails it at once, so a raw token
is never stored or queued anywhere; the request only queued an address or a user id."""

from app.auth import tokens
from app.config import get_settings
from app.db import run_in_transaction
from app.notifications import service as notifications
from app.users.models import User

VERIFY_SUBJECT = "Verify your PeerTest Hub email"
RESET_SUBJECT = "Reset your PeerTest Hub password"


async def send_verification(email: str) -> str:
    """Skipped, like its request, for an unknown or already verified address."""
    user = await User.find_one(User.email == email)
    if user is None or user.email_verified or not user.is_active:
        return "skipped"
    token = await _issue(user, "verify_email")
    # No user-chosen text in mail to an address nobody has proved yet.
    await notifications.send_now(user.email, VERIFY_SUBJECT, _body(
        "Someone (we hope you) signed up for PeerTest Hub with this address. To confirm it",
        token, "verify-email", "It expires in 24 hours and works once. If this was not you, ignore this email: "
        "the account is deleted unless confirmed."))
    return "sent"


async def send_password_reset(email: str) -> str:
    user = await User.find_one(User.email == email)
    if user is None or not user.is_active:
        return "skipped"
    token = await _issue(user, "password_reset")
    await notifications.send_now(user.email, RESET_SUBJECT, _body(
        "Someone asked to reset your PeerTest Hub password. To choose a new one", token, "reset-password",
        "It expires in one hour and works once. If this was not you, ignore this email."))
    return "sent"


async def _issue(user: User, purpose: str) -> str:
    return await run_in_transaction(lambda session: tokens.issue_one_time(session, user, purpose))


def _body(action: str, token: str, page: str, expiry: str) -> str:
    link = f"{get_settings().frontend_base_url}/{page}?token={token}"
    return f"{action}, open:\n{link}\n\nOr paste this token into the app.\nToken: {token}\n\n{expiry}\n"
