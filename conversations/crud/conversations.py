"""The customer side of a conversation: open it with its token, store messages and the dialogue state."""

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from conversations.crud.errors import ConversationAccessDenied, ConversationNotFound
from conversations.models import (
    Conversation,
    ConversationStatus,
    Message,
    Role,
    utcnow,
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_conversation(
    *, session: Session, channel: str = "api", verified_user_id: str | None = None, verified_email: str | None = None
) -> tuple[Conversation, str]:
    """Open a conversation, for a customer the embedding site vouched for when `verified_*` are given; returns it
    with the token that alone can read and write it."""
    token = secrets.token_urlsafe(32)
    conversation = Conversation(
        channel=channel, token_hash=hash_token(token), verified_user_id=verified_user_id, verified_email=verified_email
    )
    session.add(conversation)
    session.commit()
    session.refresh(conversation)
    return conversation, token


def get_conversation(*, session: Session, conversation_id: str) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise ConversationNotFound(conversation_id)
    return conversation


def open_conversation(*, session: Session, conversation_id: str, token: str) -> Conversation:
    """The conversation, if `token` is its customer token."""
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    if not hmac.compare_digest(conversation.token_hash, hash_token(token)):
        raise ConversationAccessDenied(conversation_id)
    return conversation


def add_message(*, session: Session, conversation_id: str, role: Role, text: str, **details: object) -> Message:
    """Store one message and commit at once, so it survives whatever happens next."""
    message = Message(conversation_id=conversation_id, role=role, text=text, **details)
    session.add(message)
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.commit()
    session.refresh(message)
    return message


def list_messages(*, session: Session, conversation_id: str) -> Sequence[Message]:
    statement = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
    return session.exec(statement).all()


def flag_for_staff(*, session: Session, conversation_id: str, reason: str) -> Conversation:
    """Mark a conversation as needing a human, e.g. because the model could not answer."""
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    conversation.needs_attention = True
    conversation.attention_reason = reason[:200]
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.commit()
    session.refresh(conversation)
    return conversation


def save_dialogue_state(
    *,
    session: Session,
    conversation_id: str,
    status: ConversationStatus,
    slots: dict[str, str],
    misses: int,
    negative_streak: int,
    pending_intent: str | None,
    attention_reason: str | None = None,
    identity_failures: int = 0,
    pending_action: dict | None = None,
) -> Conversation:
    """Store what the dialogue manager remembers after a turn; a reason also flags it for staff."""
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    conversation.status = status
    conversation.slots = dict(slots)
    conversation.misses = misses
    conversation.negative_streak = negative_streak
    conversation.pending_intent = pending_intent
    conversation.identity_failures = identity_failures
    conversation.pending_action = pending_action
    if attention_reason:
        conversation.needs_attention = True
        conversation.attention_reason = attention_reason[:200]
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.commit()
    session.refresh(conversation)
    return conversation


def set_message_intent(*, session: Session, message_id: int, intent: str | None, confidence: float | None) -> None:
    message = session.get(Message, message_id)
    if message is not None:
        message.intent, message.confidence = intent, confidence
        session.add(message)
        session.commit()


def save_summary(*, session: Session, conversation_id: str, summary: str, summarized_upto: int) -> None:
    """Store the rolling summary, unless a newer one (covering more messages) is already stored."""
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    if conversation.summarized_upto is not None and conversation.summarized_upto >= summarized_upto:
        return
    conversation.summary = summary
    conversation.summarized_upto = summarized_upto
    session.add(conversation)
    session.commit()


def unanswered_customer_messages(*, session: Session, written_before: datetime) -> list[tuple[str, int]]:
    """(conversation id, message id) of every conversation the bot owns whose newest message is a customer's,
    written before `written_before`: a reply that was never stored (the app stopped or failed mid-turn)."""
    newest = (
        select(Message.conversation_id, func.max(Message.id).label("newest"))
        .group_by(col(Message.conversation_id))
        .subquery()
    )
    statement = (
        select(Message.conversation_id, Message.id)
        .join(newest, col(Message.id) == newest.c.newest)
        .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
        .where(
            Message.role == Role.customer,
            col(Message.created_at) < written_before,
            col(Conversation.status).in_([ConversationStatus.bot, ConversationStatus.resolved]),
        )
        .order_by(col(Message.id))
    )
    return [(conversation_id, message_id) for conversation_id, message_id in session.exec(statement).all()]


def answer_unanswered(
    *, session: Session, conversation_id: str, message_id: int, text: str, reason: str, **details: object
) -> Message | None:
    """Answer the customer message `message_id`, left without a reply, with `text` (a failed bot message naming
    it) and flag its conversation for staff, in one transaction. None when it needs no answer any more: a newer
    message followed it, or another app replica's sweep answered it first."""
    # PostgreSQL: the conversation's row stays locked until the commit, so a second sweep waits and then sees the
    # answer. SQLite ignores the lock; there the unique recovers_message_id refuses a second answer.
    session.exec(select(Conversation.id).where(Conversation.id == conversation_id).with_for_update())
    newest = session.exec(select(func.max(Message.id)).where(Message.conversation_id == conversation_id)).one()
    if newest != message_id:
        session.rollback()
        return None
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    conversation.needs_attention = True
    conversation.attention_reason = reason[:200]
    conversation.updated_at = utcnow()
    message = Message(
        conversation_id=conversation_id, role=Role.bot, text=text, failed=True, error=reason[:500],
        recovers_message_id=message_id, **details,
    )  # fmt: skip
    session.add_all([conversation, message])
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    session.refresh(message)
    return message
