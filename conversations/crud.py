"""Every query the product makes against the conversation store; routes and the bot call these.

Functions are keyword-only and take the session first; they raise typed errors, never HTTP ones.
"""

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlmodel import Session, select

from conversations.models import Conversation, Message, Role, utcnow


class ConversationNotFound(Exception):
    """No conversation has this id."""


class ConversationAccessDenied(Exception):
    """The token given does not open this conversation."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_conversation(*, session: Session, channel: str = "api") -> tuple[Conversation, str]:
    """Open a conversation; returns it with the token that alone can read and write it."""
    token = secrets.token_urlsafe(32)
    conversation = Conversation(channel=channel, token_hash=hash_token(token))
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


def add_message(
    *, session: Session, conversation_id: str, role: Role, text: str, **details: object
) -> Message:
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
