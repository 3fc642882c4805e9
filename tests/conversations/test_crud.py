"""The store keeps conversations behind their tokens and messages in order, on SQLite and PostgreSQL.

The `session` fixture (tests/conversations/conftest.py) runs each test on both engines.
"""

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from conversations import crud
from conversations.db import make_engine, store_busy, upgrade_db
from conversations.models import ConversationStatus, Message, Role


def test_token_opens_its_conversation_only(session: Session) -> None:
    conversation, token = crud.create_conversation(session=session, channel="widget")
    assert conversation.token_hash != token and len(token) >= 40
    assert crud.open_conversation(session=session, conversation_id=conversation.id, token=token).id == conversation.id
    with pytest.raises(crud.ConversationAccessDenied):
        crud.open_conversation(session=session, conversation_id=conversation.id, token=token + "x")
    with pytest.raises(crud.ConversationNotFound):
        crud.open_conversation(session=session, conversation_id="missing", token=token)


def test_messages_are_kept_in_order_and_flagging_marks_attention(session: Session) -> None:
    conversation, _ = crud.create_conversation(session=session)
    for index in range(5):
        role = Role.customer if index % 2 == 0 else Role.bot
        crud.add_message(session=session, conversation_id=conversation.id, role=role, text=f"m{index}")
    assert [m.text for m in crud.list_messages(session=session, conversation_id=conversation.id)] == [
        f"m{i}" for i in range(5)
    ]
    flagged = crud.flag_for_staff(session=session, conversation_id=conversation.id, reason="model: down")
    assert flagged.needs_attention and flagged.attention_reason == "model: down"


def test_change_marks_move_with_every_message_and_status_change(session: Session) -> None:
    first, _ = crud.create_conversation(session=session)
    second, _ = crud.create_conversation(session=session)
    marks = crud.change_marks(session=session, conversation_ids=[first.id, second.id, "missing"])
    assert set(marks) == {first.id, second.id}, "a conversation that does not exist has no mark"
    crud.add_message(session=session, conversation_id=first.id, role=Role.customer, text="hello")
    after_message = crud.change_marks(session=session, conversation_ids=[first.id, second.id])
    assert after_message[first.id] != marks[first.id] and after_message[second.id] == marks[second.id]
    crud.save_dialogue_state(
        session=session, conversation_id=first.id, status=ConversationStatus.pending_human, slots={}, misses=0,
        negative_streak=0, pending_intent=None,
    )  # fmt: skip
    assert crud.change_marks(session=session, conversation_ids=[first.id])[first.id] != after_message[first.id]


def test_a_message_committed_out_of_id_order_still_moves_the_mark(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: ids are committed in order")
    with Session(engine) as session:
        conversation, _ = crud.create_conversation(session=session)
        conversation_id = conversation.id
    with Session(engine) as slow, Session(engine) as fast:
        slow.add(Message(conversation_id=conversation_id, role=Role.bot, text="first id, committed last"))
        slow.flush()
        crud.add_message(session=fast, conversation_id=conversation_id, role=Role.customer, text="second id")
        before = crud.change_marks(session=fast, conversation_ids=[conversation_id])
        slow.commit()
        fast.rollback()  # a fresh snapshot, as the next poll has
        assert crud.change_marks(session=fast, conversation_ids=[conversation_id]) != before


def test_a_saturated_database_is_told_apart_from_a_broken_one(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1, max_overflow=0, wait_s=0.2)
    try:
        upgrade_db(engine)
        with engine.connect(), pytest.raises(PoolTimeout) as waited:
            engine.connect()
        assert store_busy(waited.value)
        with engine.connect() as connection, pytest.raises(DBAPIError) as broken:
            connection.execute(text("SELECT * FROM no_such_table"))
        assert not store_busy(broken.value)
        if engine.dialect.name == "sqlite":
            writer = sqlite3.connect(make_url(db_url).database or "")
            writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            try:
                with Session(engine) as session, pytest.raises(OperationalError) as locked:
                    crud.create_conversation(session=session)
                assert store_busy(locked.value)
            finally:
                writer.rollback()
                writer.close()
    finally:
        engine.dispose()
