"""The store keeps conversations behind their tokens and messages in order, on SQLite and PostgreSQL.

The `session` fixture (tests/conversations/conftest.py) runs each test on both engines.
"""

import pytest
from sqlmodel import Session

from conversations import crud
from conversations.models import Role


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
