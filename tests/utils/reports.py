"""Conversations with known outcomes on known days, for the reports' tests."""

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud
from conversations.models import Conversation, ConversationStatus, Rating, Role

DAY_ONE = date(2026, 11, 2)
DAY_TWO = date(2026, 11, 3)


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), UTC)


def _conversation(session: Session, day: date, hour: int) -> str:
    conversation, _ = crud.create_conversation(session=session, channel="widget")
    conversation.created_at = _at(day, hour)
    session.add(conversation)
    session.commit()
    return conversation.id


def _turn(session: Session, cid: str, day: date, hour: int, customer: str, reply: str, **bot: object) -> int:
    asked = crud.add_message(session=session, conversation_id=cid, role=Role.customer, text=customer,
                             intent=bot.pop("customer_intent", None))  # fmt: skip
    answer = crud.add_message(session=session, conversation_id=cid, role=Role.bot, text=reply, **bot)
    for message in (asked, answer):
        message.created_at = _at(day, hour)
        session.add(message)
    session.commit()
    assert answer.id is not None
    return answer.id


def seed_report_world(engine: Engine) -> dict[str, str]:
    """Day one: two conversations the bot resolved (one rated up and CSAT 5), one handed off for a complaint and
    answered by a teammate after 10 minutes (CSAT 2), one not understood twice. Day two: one resolved, one
    handed off for an unserved language, and a question the help content does not cover."""
    ids: dict[str, str] = {}
    with Session(engine) as session:
        ids["resolved"] = cid = _conversation(session, DAY_ONE, 9)
        answer = _turn(session, cid, DAY_ONE, 9, "How long do refunds take?", "Refunds take 5 days.",
                       decision="answer", customer_intent="refund_status")  # fmt: skip
        crud.rate_reply(session=session, conversation_id=cid, message_id=answer, rating=Rating.up)
        crud.rate_conversation(session=session, conversation_id=cid, score=5, comment=None)

        ids["resolved_2"] = cid = _conversation(session, DAY_ONE, 10)
        answer = _turn(session, cid, DAY_ONE, 10, "Do you ship to Canada?", "Yes, we ship to Canada.",
                       decision="answer", customer_intent="shipping_info")  # fmt: skip
        crud.rate_reply(session=session, conversation_id=cid, message_id=answer, rating=Rating.down)

        ids["complaint"] = cid = _conversation(session, DAY_ONE, 11)
        _turn(session, cid, DAY_ONE, 11, "This is outrageous, my lamp broke twice!", "I'm passing you on.",
              decision="handoff", customer_intent="complaint",
              trace={"reason": "intent complaint is handled by people"})  # fmt: skip
        crud.open_ticket(session=session, conversation_id=cid, reason="intent complaint is handled by people",
                         now=_at(DAY_ONE, 11))  # fmt: skip
        crud.record_first_response(session=session, conversation_id=cid, now=_at(DAY_ONE, 11) + timedelta(minutes=10))
        crud.add_message(session=session, conversation_id=cid, role=Role.staff, text="Sorry! A new one is coming.")
        crud.rate_conversation(session=session, conversation_id=cid, score=2, comment=None)

        ids["confused"] = cid = _conversation(session, DAY_ONE, 12)
        _turn(session, cid, DAY_ONE, 12, "blorp the zingle", "Could you rephrase?", decision="rephrase")
        _turn(session, cid, DAY_ONE, 12, "zingle blorp!!", "I'm passing you on.", decision="handoff",
              trace={"reason": "not understood twice"})  # fmt: skip
        crud.save_dialogue_state(session=session, conversation_id=cid, status=ConversationStatus.pending_human,
                                 slots={}, misses=0, negative_streak=0, pending_intent=None)  # fmt: skip

        ids["resolved_3"] = cid = _conversation(session, DAY_TWO, 9)
        _turn(session, cid, DAY_TWO, 9, "Can I return a kettle?", "Yes, within 30 days.", decision="answer",
              customer_intent="return_item")  # fmt: skip

        ids["german"] = cid = _conversation(session, DAY_TWO, 10)
        _turn(session, cid, DAY_TWO, 10, "Wo ist meine Bestellung?", "Entschuldigung ...", decision="handoff",
              trace={"reason": "language de is not served"})  # fmt: skip

        ids["gap"] = cid = _conversation(session, DAY_TWO, 11)
        _turn(session, cid, DAY_TWO, 11, "Do you sell gift cards?", "I'm not sure about that.", decision="answer",
              trace={"check": {"verdict": "not covered by the help content"}})  # fmt: skip
    return ids


def conversation_exists(engine: Engine, cid: str) -> bool:
    with Session(engine) as session:
        return session.get(Conversation, cid) is not None
