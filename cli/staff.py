"""`supportbot staff ...`: staff console accounts from the command line, starting with the first admin.

Passwords are read from a hidden prompt or from standard input, never from the command line.
"""

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from cli.database import open_database
from conversations import crud
from conversations.models import StaffRole
from core.settings import get_settings
from serving.auth import account_problem, hash_password

staff_app = typer.Typer(help="Staff console accounts.", no_args_is_help=True)
console = Console()


def _session() -> Session:
    return Session(open_database(get_settings()))


@staff_app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's sign-in email.")],
    name: Annotated[str, typer.Option(help="The name shown to colleagues and customers.")],
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
) -> None:
    """Create an admin account (the first one, or another); the password is asked for, hidden."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    problem = account_problem(email, name, password)
    if problem is not None:
        console.print(f"[red]{problem}[/]")
        raise typer.Exit(1)
    with _session() as session:
        try:
            account = crud.create_staff(
                session=session, email=email, display_name=name, password_hash=hash_password(password),
                role=StaffRole.admin,
            )  # fmt: skip
        except crud.EmailTaken:
            console.print(f"[red]An account with the email {email} already exists.[/]")
            raise typer.Exit(1) from None
        crud.record_audit(
            session=session, actor_id=None, action="staff.create", target=f"staff:{account.id}",
            details={"email": account.email, "role": str(account.role), "via": "command line"},
        )  # fmt: skip
        settings = get_settings()
        console.print(
            f"[green]Admin {account.email} created.[/] Sign in at http://{settings.host}:{settings.port}/console"
        )


@staff_app.command("list")
def list_accounts() -> None:
    """List the staff accounts."""
    with _session() as session:
        accounts = crud.list_staff(session=session)
    table = Table("id", "email", "name", "role", "active", "created")
    for account in accounts:
        table.add_row(
            str(account.id), account.email, account.display_name, str(account.role), "yes" if account.active else "no",
            f"{account.created_at:%Y-%m-%d %H:%M}",
        )  # fmt: skip
    console.print(table if accounts else "No staff accounts yet: create one with `supportbot staff create-admin`.")
