"""The app's database as the commands open it: the one the app uses, never a new, empty one made by mistake.

`supportbot start` creates the SQLite database. Any other command run with other settings than the app's (another
SUPPORTBOT_DATA_DIR, database URL or .env) would otherwise write into a new file the app never reads, and succeed.
"""

from pathlib import Path

import typer
from rich.console import Console
from sqlalchemy.engine import Engine, make_url

from conversations.db import make_engine, upgrade_db
from core.settings import Settings

err_console = Console(stderr=True)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database or one in memory."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or "mode=memory" in url:
        return None
    return Path(database).resolve()


def check_database(settings: Settings) -> None:
    """Stop the command (exit status 2, the path and what to do on standard error) if its SQLite file is missing."""
    path = sqlite_file(settings.resolved_database_url)
    if path is not None and not path.exists():
        err_console.print(
            f"[red]No supportbot database at {path}[/]; nothing was done and no database was created. "
            "`supportbot start` creates it; if the app runs with SUPPORTBOT_DATA_DIR or SUPPORTBOT_DATABASE_URL set, "
            "set the same here."
        )
        raise typer.Exit(2)


def open_database(settings: Settings) -> Engine:
    """An engine on the app's existing database, migrated to the current schema."""
    check_database(settings)
    engine = make_engine(settings.resolved_database_url)
    upgrade_db(engine)
    return engine
