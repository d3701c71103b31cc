"""Operator commands: python -m app.cli --help"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import typer
from rich.console import Console

from app import db
from app.config import get_settings

cli = typer.Typer(help="PeerTest Hub operator commands", no_args_is_help=True)
console = Console()


def run_with_db(work: Callable[[], Awaitable[Any]]) -> Any:
    from app import registry

    registry.load()

    async def runner() -> Any:
        await db.connect(get_settings())
        try:
            return await work()
        finally:
            await db.disconnect()

    return asyncio.run(runner())


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
