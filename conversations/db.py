"""Database engines for SQLite (default) and PostgreSQL, and the schema, kept current by Alembic migrations.

The app calls `upgrade_db` at start; `new_revision` writes a migration after a model change.
"""

import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import cast

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, Table, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, SQLModel, create_engine

from conversations import models  # noqa: F401  (registers the tables)

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock held while migrating, so app processes starting together take turns.
_MIGRATION_LOCK_KEY = 73_310_001


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10, wait_s: float = 30.0) -> Engine:
    """An engine whose callers wait at most `wait_s` for a pooled connection (and, on SQLite, for the write
    lock); past that they get an error that `store_busy` recognises."""
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": wait_s}
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if make_url(url).database in (None, "", ":memory:") or "mode=memory" in url:
            pool = {}  # an in-memory database lives in one connection (SQLAlchemy's SingletonThreadPool)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": wait_s}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


# SQLite's "database or disk is full", PostgreSQL's "could not extend file ... No space left on device".
_FULL_SIGNS = ("disk is full", "no space left on device")


def store_full(error: BaseException) -> bool:
    """True when `error` says the database's disk is full: nothing can be written until space is freed."""
    if isinstance(error, OperationalError):
        message = str(error.orig or error).lower()
        return any(sign in message for sign in _FULL_SIGNS)
    return False


def store_busy(error: BaseException) -> bool:
    """True when `error` says the database is saturated for now, not broken: no pooled connection came free
    in time, SQLite's write lock stayed taken, or PostgreSQL has no connection slot left. Worth a retry."""
    if isinstance(error, PoolTimeout):
        return True
    if isinstance(error, OperationalError):
        message = str(error.orig or error).lower()
        return any(sign in message for sign in _BUSY_SIGNS)
    return False


# SQLite's "database is locked" / "database table is locked", PostgreSQL's full connection slots.
_BUSY_SIGNS = ("is locked", "too many clients", "remaining connection slots")


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
            _adopt_unversioned(connection)
            command.stamp(config, "head")
        command.upgrade(config, revision)


class UnversionedDatabase(RuntimeError):
    """A database made before the store had migrations that cannot be brought up to date automatically."""


def _adopt_unversioned(connection: Connection) -> None:
    """Bring a database made by create_all (before migrations) up to the models by adding what it lacks.

    Only additions: missing tables, missing columns (with the model's default filled in) and their indexes.
    """
    logger.warning("database has no migration history; adding missing tables and columns, then stamping it current")
    SQLModel.metadata.create_all(connection)
    inspector = inspect(connection)
    operations = Operations(MigrationContext.configure(connection))
    for mapper in SQLModel._sa_registry.mappers:
        table, fields = cast(Table, mapper.local_table), mapper.class_.model_fields
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            field = fields.get(column.name)
            default = field.get_default(call_default_factory=True) if field is not None else None
            if default is None and not column.nullable:
                raise UnversionedDatabase(
                    f"{table.name}.{column.name} is missing and has no default to fill it; "
                    "move this database aside and start with a fresh one"
                )
            operations.add_column(
                table.name,
                Column(column.name, column.type, nullable=column.nullable, server_default=_literal(default)),
            )
        for index in table.indexes:
            index.create(connection, checkfirst=True)


def _literal(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


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
