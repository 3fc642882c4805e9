"""Migrations build the whole schema from nothing on SQLite and PostgreSQL, and running them again is harmless."""

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import ForeignKeyConstraint, MetaData, Table, inspect
from sqlmodel import Session, SQLModel

from conversations import crud
from conversations.db import alembic_config, current_revision, init_db, make_engine, upgrade_db
from conversations.models import Role


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def test_upgrade_creates_every_table_from_empty(db_url: str) -> None:
    engine = make_engine(db_url)
    assert inspect(engine).get_table_names() == []
    upgrade_db(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert {"review", "intentrelabel", "tag", "conversationtag", "conversationreview"} <= tables
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_upgrade_again_keeps_data_and_revision(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade_db(engine)
    with Session(engine) as session:
        conversation_id = crud.create_conversation(session=session)[0].id
        crud.add_message(session=session, conversation_id=conversation_id, role=Role.customer, text="still here?")
    upgrade_db(engine)
    init_db(engine)  # the name the app used before migrations does the same
    with Session(engine) as session:
        assert [m.text for m in crud.list_messages(session=session, conversation_id=conversation_id)] == ["still here?"]
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrations_match_the_models(db_url: str) -> None:
    """A model changed without a new revision shows up here: run conversations.db.new_revision."""
    engine = make_engine(db_url)
    upgrade_db(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    assert differences == [], f"models and migrations differ; write a revision: {differences}"


def test_downgrade_to_nothing_and_back(db_url: str) -> None:
    from alembic import command

    engine = make_engine(db_url)
    upgrade_db(engine)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade_db(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


# The walking skeleton's tables, made by create_all before the store had migrations.
SKELETON = {
    "conversation": [
        "channel",
        "id",
        "token_hash",
        "status",
        "needs_attention",
        "attention_reason",
        "created_at",
        "updated_at",
    ],
    "message": [
        "role",
        "text",
        "id",
        "conversation_id",
        "created_at",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "first_token_ms",
        "latency_ms",
        "failed",
        "error",
    ],
}


def test_database_made_before_migrations_is_adopted(db_url: str) -> None:
    engine = make_engine(db_url)
    skeleton = MetaData()
    for name, columns in SKELETON.items():
        source = SQLModel.metadata.tables[name]
        links = [ForeignKeyConstraint([fk.parent.name], [fk.target_fullname]) for fk in source.foreign_keys]
        Table(name, skeleton, *[source.c[column]._copy() for column in columns], *links)
    skeleton.create_all(engine)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            skeleton.tables["conversation"]
            .insert()
            .values(
                channel="api",
                id="c1",
                token_hash=crud.hash_token("secret"),
                status="bot",
                needs_attention=False,
                created_at=now,
                updated_at=now,
            )
        )
        connection.execute(
            skeleton.tables["message"]
            .insert()
            .values(role="customer", text="from before", conversation_id="c1", created_at=now, failed=False)
        )

    upgrade_db(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    with Session(engine) as session:
        conversation = crud.open_conversation(session=session, conversation_id="c1", token="secret")
        assert (conversation.slots, conversation.misses, conversation.summary) == ({}, 0, "")
        assert [m.text for m in crud.list_messages(session=session, conversation_id="c1")] == ["from before"]
        crud.add_tag(session=session, conversation_id="c1", name="legacy")
    upgrade_db(engine)
    engine.dispose()
