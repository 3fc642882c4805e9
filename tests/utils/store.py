"""Factories for store tests: conversations with messages, written straight through the store's queries."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import Session

from conversations import crud
from conversations.models import Conversation, ConversationStatus, Message, Role


@dataclass
class Turn:
    """One message to store: who wrote it, the text, and for a customer message its predicted intent."""

    role: Role
    text: str
    intent: str | None = None
    confidence: float | None = None
    author: str | None = None
    extra: dict = field(default_factory=dict)


def customer(text: str, intent: str | None = None, confidence: float | None = None) -> Turn:
    return Turn(Role.customer, text, intent, confidence)


def bot(text: str, **extra: object) -> Turn:
    return Turn(Role.bot, text, extra=dict(extra))


def staff(text: str, author: str = "Ana") -> Turn:
    return Turn(Role.staff, text, author=author)


def make_conversation(
    session: Session,
    *turns: Turn,
    status: ConversationStatus = ConversationStatus.bot,
    channel: str = "widget",
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    needs_attention: bool = False,
) -> tuple[Conversation, list[Message]]:
    """A stored conversation with `turns`; times given are kept (the store itself always writes now)."""
    conversation, _token = crud.create_conversation(session=session, channel=channel)
    messages = [
        crud.add_message(
            session=session,
            conversation_id=conversation.id,
            role=turn.role,
            text=turn.text,
            intent=turn.intent,
            confidence=turn.confidence,
            author=turn.author,
            **turn.extra,
        )
        for turn in turns
    ]
    conversation = crud.get_conversation(session=session, conversation_id=conversation.id)
    conversation.status = status
    conversation.needs_attention = needs_attention
    if created_at is not None:
        conversation.created_at = created_at
        for message in messages:
            message.created_at = created_at
            session.add(message)
    conversation.updated_at = updated_at or created_at or datetime.now(UTC)
    session.add(conversation)
    session.commit()
    session.refresh(conversation)
    for message in messages:
        session.refresh(message)
    return conversation, messages
