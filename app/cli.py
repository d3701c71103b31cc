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
    from app.ledger import reconciliation

    report = run_with_db(reconciliation.reconcile)
    for name, why in report.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: {why}")
    for mismatch in report.mismatches:
        console.print(f"[red]mismatch[/red] {mismatch}")
    console.print(f"[{'green' if report.ok else 'red'}]ok={report.ok}[/] checked={report.checked} report={report.id}")
    raise typer.Exit(0 if report.ok else 1)


if __name__ == "__main__":
    cli()
