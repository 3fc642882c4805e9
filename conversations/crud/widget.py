"""What the customer web widget asks of the store: live updates, reply ratings, satisfaction, ending."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, or_, select

from conversations.crud.conversations import get_conversation
from conversations.crud.errors import MessageNotFound, NotABotMessage
from conversations.models import (
    Conversation,
    ConversationStatus,
    CsatRating,
    Feedback,
    Message,
    Rating,
    Role,
    utcnow,
)


def list_messages_after(
    *, session: Session, conversation_id: str, after_id: int, recent_since: datetime | None = None
) -> Sequence[Message]:
    """Messages with an id above `after_id`, oldest first.

    With `recent_since`, messages written since then are included even when their id is lower: on
    PostgreSQL ids are handed out before commit, so two writers can commit out of id order.
    """
    newer = col(Message.id) > after_id
    if recent_since is not None:
        newer = or_(newer, col(Message.created_at) >= recent_since)
    statement = select(Message).where(Message.conversation_id == conversation_id, newer).order_by(Message.id)
    return session.exec(statement).all()


def change_marks(*, session: Session, conversation_ids: Sequence[str]) -> dict[str, tuple]:
    """A cheap mark per conversation (status, message count, newest message id) that changes whenever a
    message is added or the status changes, also when PostgreSQL commits ids out of order. One query for
    all; a conversation that no longer exists is absent."""
    marks: dict[str, tuple] = {}
    ids = list(conversation_ids)
    for start in range(0, len(ids), 500):  # stays far below every database's bound on bound parameters
        statement = (
            select(Conversation.id, Conversation.status, func.count(col(Message.id)), func.max(Message.id))
            .outerjoin(Message, col(Message.conversation_id) == col(Conversation.id))
            .where(col(Conversation.id).in_(ids[start : start + 500]))
            .group_by(col(Conversation.id), col(Conversation.status))
        )
        for conversation_id, status, count, newest in session.exec(statement):
            marks[conversation_id] = (status, count, newest)
    return marks


def latest_staff_author(*, session: Session, conversation_id: str) -> str | None:
    """Display name of the staff member who wrote last in the conversation, if any did."""
    statement = (
        select(Message.author)
        .where(Message.conversation_id == conversation_id, Message.role == Role.staff, col(Message.author).is_not(None))
        .order_by(col(Message.id).desc())
        .limit(1)
    )
    return session.exec(statement).first()


def get_message(*, session: Session, conversation_id: str, message_id: int) -> Message:
    message = session.get(Message, message_id)
    if message is None or message.conversation_id != conversation_id:
        raise MessageNotFound(message_id)
    return message


def rate_reply(*, session: Session, conversation_id: str, message_id: int, rating: Rating) -> Feedback:
    """Store the customer's thumbs up/down on one bot reply, replacing an earlier rating of it."""
    message = get_message(session=session, conversation_id=conversation_id, message_id=message_id)
    if message.role != Role.bot:
        raise NotABotMessage(message_id)
    feedback = session.exec(select(Feedback).where(Feedback.message_id == message_id)).first()
    if feedback is None:
        feedback = Feedback(message_id=message_id, conversation_id=conversation_id, rating=rating)
    else:
        feedback.rating = rating
        feedback.created_at = utcnow()
    session.add(feedback)
    session.commit()
    session.refresh(feedback)
    return feedback


def list_feedback(*, session: Session, conversation_id: str) -> Sequence[Feedback]:
    statement = select(Feedback).where(Feedback.conversation_id == conversation_id).order_by(Feedback.message_id)
    return session.exec(statement).all()


def rate_conversation(*, session: Session, conversation_id: str, score: int, comment: str | None) -> CsatRating:
    """Store the customer's satisfaction score for the conversation, replacing an earlier one."""
    get_conversation(session=session, conversation_id=conversation_id)
    csat = get_csat(session=session, conversation_id=conversation_id)
    if csat is None:
        csat = CsatRating(conversation_id=conversation_id, score=score, comment=comment)
    else:
        csat.score, csat.comment, csat.created_at = score, comment, utcnow()
    session.add(csat)
    session.commit()
    session.refresh(csat)
    return csat


def get_csat(*, session: Session, conversation_id: str) -> CsatRating | None:
    return session.exec(select(CsatRating).where(CsatRating.conversation_id == conversation_id)).first()


def end_conversation(*, session: Session, conversation_id: str) -> Conversation:
    """The customer closed the chat: the conversation is resolved."""
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    conversation.status = ConversationStatus.resolved
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.commit()
    session.refresh(conversation)
    return conversation
