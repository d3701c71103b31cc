"""Operator commands: python -m app.cli --help (or scripts/cli, which uses the project's venv).

Settings come from the environment, as everywhere. Any variable not set there is taken from the
env file `scripts/run` writes for its running stack ($PEERTEST_RUN_DIR/env, by default .run/env),
so the commands reach that stack without copying its addresses by hand.
"""

import asyncio
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console

from app import db
from app.config import Settings, get_settings
from app.kit import stackfile

ROOT = Path(__file__).resolve().parent.parent

cli = typer.Typer(help="PeerTest Hub operator commands", no_args_is_help=True)
console = Console()


def run_env_path() -> Path:
    """$PEERTEST_RUN_DIR/env (a relative run dir means the current directory), else <repo>/.run/env."""
    return Path(os.environ.get("PEERTEST_RUN_DIR") or ROOT / ".run").resolve() / "env"


def load_run_env(path: Path | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set, from scripts/run's env file, each variable that `environ` (os.environ) lacks; return them.

    A file whose stack is gone (its first line names the stack's pid, and that process is not
    running) is ignored with a note on stderr: its addresses point at servers that died with it.
    So is a file written for another ENVIRONMENT than the one `environ` names (the test suite's
    CLI calls never pick up a developer's running dev stack): settings of two environments are
    never mixed.
    """
    path = path or run_env_path()
    environ = os.environ if environ is None else environ
    try:
        if not _private_to_me(path):
            print(f"note: ignoring {path}: it is not yours alone (owner or mode)", file=sys.stderr)
            return {}
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    owner = stackfile.owner_pid(lines[0] if lines else "")
    if owner is not None and not stackfile.pid_alive(owner):
        print(f"note: ignoring {path}: the stack that wrote it (pid {owner}) is not running", file=sys.stderr)
        return {}
    values = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        try:
            values[key] = " ".join(shlex.split(raw))
        except ValueError:
            values[key] = raw
    mine, theirs = environ.get("ENVIRONMENT"), values.get("ENVIRONMENT")
    if mine and theirs and mine != theirs:
        print(f"note: ignoring {path}: it was written for ENVIRONMENT={theirs}, and this one is {mine}",
              file=sys.stderr)
        return {}
    if elsewhere := sorted(k for k in _CONNECTIONS if environ.get(k) and values.get(k) not in (None, environ[k])):
        # all or nothing: this shell points at other servers, so none of the stack's settings may mix in
        print(f"note: ignoring {path}: this shell sets {', '.join(elsewhere)} to other servers", file=sys.stderr)
        return {}
    loaded = {key: value for key, value in values.items() if key and key not in environ}
    environ.update(loaded)
    return loaded


# Settings that say which servers (and whose secrets) a command talks to.
_CONNECTIONS = ("MONGO_URI", "REDIS_URL", "S3_ENDPOINT_URL", "STRIPE_API_BASE", "STRIPE_SECRET_KEY",
                "JWT_SECRET", "ENCRYPTION_KEY")


def _private_to_me(path: Path) -> bool:
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


@cli.callback()
def _load_stack_settings() -> None:
    """Runs before every command: the running stack's settings fill in what the environment lacks."""
    if load_run_env():
        get_settings.cache_clear()


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit: an operator needs the cause, not a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def redacted(uri: str) -> str:
    """The URI without its password."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def load_settings() -> Settings:
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(str(e.get("msg", e)).removeprefix("Value error, ") for e in exc.errors())
        hint = "" if run_env_path().exists() else f" (found no {run_env_path()}: is scripts/run running?)"
        fail(f"invalid settings: {problems}{hint}")


def run_with_db(work: Callable[[], Awaitable[Any]]) -> Any:
    """Connect to MongoDB, run `work`, disconnect. An unreachable database is a one-line error."""
    from pymongo.errors import ConnectionFailure

    from app import registry

    settings = load_settings()
    registry.load()

    async def runner() -> Any:
        await db.connect(settings)
        try:
            return await work()
        finally:
            await db.disconnect()

    try:
        return asyncio.run(runner())
    except ConnectionFailure:  # server selection timed out, connection refused or dropped
        fail(f"cannot reach MongoDB at {redacted(settings.mongo_uri)} (is scripts/run running?)", 2)


@cli.command("create-admin")
def create_admin(email: str, password: str, display_name: str = typer.Option("Admin", help="shown to users")) -> None:
    """Create a verified admin account (there is no public route for this)."""
    from app.errors import AppError
    from app.users import service as users_service

    try:
        user = run_with_db(lambda: users_service.create_admin(email, password, display_name))
    except AppError as exc:
        console.print(f"[red]error[/red] {exc.code}: {exc.detail}")
        raise typer.Exit(1) from None
    console.print(f"[green]admin created[/green] id={user.id} email={user.email}")


@cli.command("ledger-check")
def ledger_check() -> None:
    """Verify the ledger invariants; exits 1 when any is violated."""
    from app.ledger import service as ledger_service

    report = run_with_db(ledger_service.check_invariants)
    for violation in report["violations"]:
        console.print(f"[red]violation[/red] {violation}")
    console.print(f"[{'green' if report['ok'] else 'red'}]ok={report['ok']}[/] accounts={report['accounts']}")
    raise typer.Exit(0 if report["ok"] else 1)


@cli.command("reconcile")
def reconcile() -> None:
    """Compare deposits, refunds and transfers with the payment provider; exits 1 on any mismatch."""
    from app.reconciliation import service as reconciliation

    report = run_with_db(reconciliation.reconcile)
    for name, why in report.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: {why}")
    for mismatch in report.mismatches:
        console.print(f"[red]mismatch[/red] {mismatch}")
    console.print(f"[{'green' if report.ok else 'red'}]ok={report.ok}[/] checked={report.checked} report={report.id}")
    raise typer.Exit(0 if report.ok else 1)


outbox_cli = typer.Typer(help="Durable after-commit work: list and replay dead-lettered tasks", no_args_is_help=True)
cli.add_typer(outbox_cli, name="outbox")


@outbox_cli.command("list")
def outbox_list(status: str = typer.Option("dead", help="pending, done or dead"),
                limit: int = typer.Option(50, min=1, max=100)) -> None:
    """List outbox tasks (by default the dead-lettered ones, which wait for an operator)."""
    from rich.table import Table

    from app.kit.pagination import PageParams
    from app.outbox import service as outbox

    tasks, _ = run_with_db(lambda: outbox.tasks(status, PageParams(limit=limit, cursor=None)))
    table = Table("id", "label", "status", "attempts", "last error", "created")
    for task in tasks:
        table.add_row(task.id, task.label, task.status, str(task.attempts), (task.last_error or "")[:80],
                      task.created_at.isoformat(timespec="seconds"))
    console.print(table)


@outbox_cli.command("replay")
def outbox_replay(task_id: str) -> None:
    """Give a dead-lettered task a fresh set of attempts; the worker runs it at once."""
    from app.errors import AppError
    from app.outbox import service as outbox

    try:
        task = run_with_db(lambda: outbox.replay(task_id))
    except AppError as exc:
        console.print(f"[red]error[/red] {exc.code}: {exc.detail}")
        raise typer.Exit(1) from None
    console.print(f"[green]replayed[/green] {task.id} ({task.label}): due now, {task.max_attempts} attempts")


if __name__ == "__main__":
    cli()
