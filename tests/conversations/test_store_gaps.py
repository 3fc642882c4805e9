"""Answered gaps from a store with known conversations: a question the bot could not answer and a teammate then did
becomes training material (the conversation up to the teammate's answer, personal data masked) and waits for an
admin's decision until it is made a snippet or dismissed."""

from datetime import timedelta

import pytest
from sqlmodel import Session

from conversations import crud
from conversations.models import utcnow
from conversations.reports import NOT_ANSWERED
from tests.utils.store import bot, customer, make_conversation, staff

NOT_SURE = "I'm not sure about that, and I'd rather not guess."


def not_sure() -> object:
    return bot(NOT_SURE, decision="answer", trace={"check": {"verdict": NOT_ANSWERED}})


def test_a_question_a_teammate_answered_becomes_masked_training_messages(session: Session) -> None:
    conversation, messages = make_conversation(
        session,
        customer("Where is my parcel?"),
        bot("Orders ship within 2 working days.", decision="answer", trace={"check": {"verdict": "from the passages"}}),
        customer("Do you engrave watches? I'm jo@example.com"),
        not_sure(),
        customer("talk to a person"),
        bot("I'll pass this on to a teammate.", decision="handoff"),
        staff("Yes, engraving is $12 per item; call us on 0161 496 0753 to order it."),
        customer("Thanks!"),
        staff("You're welcome."),
    )
    # Answered by the bot itself, then a teammate chats: no gap. Unanswered and never answered by a teammate: none.
    make_conversation(session, customer("Returns?"), bot("Within 30 days.", decision="answer"), staff("Hello!"))
    make_conversation(session, customer("Do you sell kites?"), not_sure())

    assert crud.answered_gaps(session=session) == [
        [
            {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": "Orders ship within 2 working days."},
            {"role": "user", "content": "Do you engrave watches? I'm [email]\ntalk to a person"},
            {"role": "assistant", "content": "Yes, engraving is $12 per item; call us on [phone] to order it."},
        ]
    ]
    [gap] = crud.pending_gaps(session=session)
    assert (gap.conversation_id, gap.question_id) == (conversation.id, messages[2].id)
    assert gap.answer.startswith("Yes, engraving") and "0161 496 0753" in gap.answer, "shown as written to admins"
    assert crud.answered_gaps(session=session, since=utcnow() + timedelta(minutes=1)) == []
    assert len(crud.answered_gaps(session=session, since=utcnow() - timedelta(minutes=1))) == 1


def test_a_decided_gap_leaves_the_pending_list_but_stays_training_material(session: Session) -> None:
    _, first = make_conversation(session, customer("Do you engrave?"), not_sure(), staff("Yes, $12."))
    _, second = make_conversation(session, customer("Gift wrap?"), not_sure(), staff("Yes, $4.50."))
    assert [gap.question for gap in crud.pending_gaps(session=session)] == ["Gift wrap?", "Do you engrave?"]

    gap = crud.get_answered_gap(session=session, question_id=first[0].id)
    crud.decide_gap(session=session, gap=gap, article_slug=None, staff_id=None)
    assert [gap.question for gap in crud.pending_gaps(session=session)] == ["Gift wrap?"]
    assert len(crud.answered_gaps(session=session)) == 2
    with pytest.raises(crud.GapDecided):
        crud.get_answered_gap(session=session, question_id=first[0].id)
    with pytest.raises(crud.GapDecided):
        crud.decide_gap(session=session, gap=gap, article_slug="snippet-x", staff_id=None)
    with pytest.raises(crud.GapNotFound):
        crud.get_answered_gap(session=session, question_id=second[2].id)  # the teammate's answer is no question

    # Erasing the conversation takes its decision with it.
    crud.delete_conversations(session=session, conversation_ids=[gap.conversation_id])
    session.commit()
    assert [gap.question for gap in crud.pending_gaps(session=session)] == ["Gift wrap?"]
