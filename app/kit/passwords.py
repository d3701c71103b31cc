"""Password strength rules: long enough, not trivial, not the email."""

from app.config import get_settings
from app.errors import WeakPassword

_COMMON = {
    "password", "password1", "password123", "passw0rd", "123456789", "1234567890", "qwertyuiop",
    "iloveyou", "letmein123", "welcome123", "admin12345", "abc1234567", "qwerty1234", "football1",
}


def check_strength(password: str, email: str = "") -> None:
    minimum = get_settings().password_min_length
    problems = []
    if len(password) < minimum:
        problems.append(f"at least {minimum} characters")
    if not any(c.isalpha() for c in password) or not any(c.isdigit() for c in password):
        problems.append("both letters and digits")
    if len(set(password)) < 4:
        problems.append("more than a few distinct characters")
    lowered = password.lower()
    local_part = email.split("@")[0].lower()
    if lowered in _COMMON or (len(local_part) >= 4 and local_part in lowered):
        problems.append("not a common password or your email")
    if problems:
        raise WeakPassword({"message": "The password is too weak.", "requirements": problems})
