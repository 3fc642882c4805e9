"""Alembic's entry point: runs the migrations on the connection `conversations.db` hands it.

There is no alembic.ini; `conversations.db.alembic_config` builds the configuration in code.
"""

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel import SQLModel
from sqlmodel.sql import sqltypes

from conversations import models  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config


def render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # sqlmodel's UTCDateTime is a timezone-aware DateTime; written as such, revisions work with any sqlmodel.
    utc_datetime = getattr(sqltypes, "UTCDateTime", None)
    if kind == "type" and utc_datetime is not None and isinstance(item, utc_datetime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through conversations.db (upgrade_db, new_revision), not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run upgrade_db against a database")
run_migrations_online()
