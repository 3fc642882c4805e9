"""Database engines for SQLite (default) and PostgreSQL, and the schema, kept current by Alembic migrations.

The app calls `upgrade_db` at start; `new_revision` writes a migration after a model change.
"""

import logging
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from conversations import models  # noqa: F401  (registers the tables)

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock held while migrating, so app processes starting together take turns.
_MIGRATION_LOCK_KEY = 73_310_001


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets the API read while a reply is being written; foreign keys are off by default in SQLite.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (there is no alembic.ini), migrating over `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


def upgrade_db(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default); on a current database it changes nothing."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if "alembic_version" not in tables and "conversation" in tables:
            # Made by create_all before the store had migrations: add the missing tables, then adopt it.
            logger.warning("database has no migration history; creating missing tables and stamping it current")
            SQLModel.metadata.create_all(connection)
            command.stamp(config, "head")
        command.upgrade(config, revision)


def init_db(engine: Engine) -> None:
    """The name callers used before migrations: the same as `upgrade_db(engine)`."""
    upgrade_db(engine)


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at; None when it has none."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def new_revision(message: str, *, autogenerate: bool = True) -> Path:
    """Write a migration from the newest revision to the current models; returns the new file.

    The difference is taken against a scratch SQLite database migrated to the newest revision.
    """
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{scratch}/scratch.db")
        try:
            upgrade_db(engine)
            with engine.begin() as connection:
                script = command.revision(alembic_config(connection), message=message, autogenerate=autogenerate)
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    path = Path(script.path)
    # Alembic writes its own layout; ruff (a test dependency) brings it to the project's style if installed.
    for fix in (["format"], ["check", "--fix", "--quiet"]):
        subprocess.run([sys.executable, "-m", "ruff", *fix, str(path)], check=False, capture_output=True)
    return path


def sessions(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session
