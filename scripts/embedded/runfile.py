"""What `scripts/run` leaves in its run directory for other commands: the env file with the
settings it chose (read by `python -m app.cli` and `scripts/cli`, or `set -a; . .run/env` in a
shell), and the mail outbox it empties when it starts a fresh in-memory database."""

from __future__ import annotations

import datetime
import os
import shlex
from pathlib import Path

from app.kit import stackfile

from .common import RUN_DIR

ENV_FILE = RUN_DIR / "env"

# The settings a command needs to reach the running stack, written when the stack's environment
# has them (the secrets only when the user gave their own; the dev defaults need no copy).
ENV_FILE_KEYS = (
    "ENVIRONMENT",
    "API_PORT",
    "API_URL",
    "PUBLIC_BASE_URL",
    "MONGO_URI",
    "MONGO_DB",
    "REDIS_URL",
    "S3_ENDPOINT_URL",
    "S3_BUCKET",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "STRIPE_API_BASE",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_SIMULATE_CONNECT",
    "MAIL_BACKEND",
    "MAIL_OUTBOX_DIR",
    "JWT_SECRET",
    "ENCRYPTION_KEY",
)


def write_env_file(env: dict[str, str], path: Path = ENV_FILE) -> Path:
    """KEY=VALUE lines (values quoted for a POSIX shell where needed), mode 0600, written atomically.

    The first line names the stack's pid, so a reader can tell a file left by a stack that was
    killed (SIGKILL leaves no chance to remove it) from a live one.
    """
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = [
        stackfile.header(os.getpid(), stamp),
        "# The settings of the running stack: scripts/cli and python -m app.cli read them;",
        f"# in a shell: set -a; . {shlex.quote(str(path))}; set +a",
    ]
    lines += [f"{key}={shlex.quote(env[key])}" for key in ENV_FILE_KEYS if env.get(key)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT keeps the mode of a leftover tmp file
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def env_file_owner(path: Path = ENV_FILE) -> int | None:
    try:
        with open(path) as f:
            return stackfile.owner_pid(f.readline())
    except OSError:
        return None


def remove_env_file(path: Path = ENV_FILE) -> None:
    """Remove the env file if this process wrote it (another stack may have written it since)."""
    if env_file_owner(path) == os.getpid():
        path.unlink(missing_ok=True)


def clear_outbox(directory: Path) -> int:
    """Delete the mails (.eml, and .tmp halves) in `directory`; return how many. Subdirectories
    (the test and bench modes' own outboxes) and other files are left alone."""
    removed = 0
    for path in directory.glob("*"):
        if path.suffix in (".eml", ".tmp") and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
