"""SQLModel tables and API shapes for conversations and their messages.

Families follow Base (shared fields) / Create (input) / Public (output) / table=True (storage).
"""

from datetime import UTC, datetime
from enum import StrEnum
from uuid import uuid4

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class ConversationStatus(StrEnum):
    """Who owns the conversation now."""

    bot = "bot"
    pending_human = "pending_human"
    human = "human"
    resolved = "resolved"


class Role(StrEnum):
    """Who wrote a message."""

    customer = "customer"
    bot = "bot"
    staff = "staff"


# Fields every conversation shape shares.
class ConversationBase(SQLModel):
    channel: str = Field(default="api", max_length=32)


# What a client may send to open a conversation.
class ConversationCreate(ConversationBase):
    pass


# A conversation as the customer API shows it.
class ConversationPublic(ConversationBase):
    id: str
    status: ConversationStatus
    needs_attention: bool
    created_at: datetime


# Stored conversation; the customer's token is kept only as a hash.
class Conversation(ConversationBase, table=True):
    id: str = Field(default_factory=lambda: uuid4().hex, primary_key=True, max_length=32)
    token_hash: str = Field(max_length=64)
    status: ConversationStatus = Field(default=ConversationStatus.bot, index=True)
    needs_attention: bool = Field(default=False, index=True)
    attention_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    # Dialogue state kept between turns: facts the customer gave survive context eviction.
    slots: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    misses: int = 0
    negative_streak: int = 0
    pending_intent: str | None = Field(default=None, max_length=64)
    # Rolling LLM summary of evicted turns, covering messages up to summarized_upto.
    summary: str = ""
    summarized_upto: int | None = None


# Fields every message shape shares.
class MessageBase(SQLModel):
    role: Role
    text: str


# What a customer sends.
class MessageCreate(SQLModel):
    text: str


# A message as the customer API shows it.
class MessagePublic(MessageBase):
    id: int
    created_at: datetime
    author: str | None = None
    model: str | None = None
    decision: str | None = None
    failed: bool = False


# Stored message with what the bot needs to explain itself later.
class Message(MessageBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # Display name of the staff member who wrote it; customers see who is answering.
    author: str | None = Field(default=None, max_length=120)
    model: str | None = Field(default=None, max_length=120)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_ms: float | None = None
    latency_ms: float | None = None
    failed: bool = False
    error: str | None = Field(default=None, max_length=500)
    # Customer turns: the predicted intent. Bot turns: the routing decision and its full trace.
    intent: str | None = Field(default=None, max_length=64, index=True)
    confidence: float | None = None
    decision: str | None = Field(default=None, max_length=32)
    trace: dict | None = Field(default=None, sa_column=Column(JSON))


class Rating(StrEnum):
    """A customer's verdict on one bot reply."""

    up = "up"
    down = "down"


# What a customer sends to rate one bot reply.
class FeedbackCreate(SQLModel):
    rating: Rating


# A reply's rating as the customer API shows it.
class FeedbackPublic(FeedbackCreate):
    message_id: int
    created_at: datetime


# Stored rating of one bot reply; rating the same reply again replaces it.
class Feedback(FeedbackCreate, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True, index=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)


# What a customer sends to rate a whole conversation when it ends (customer satisfaction, 1 to 5).
class CsatCreate(SQLModel):
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=1000)


# A conversation's satisfaction rating as the customer API shows it.
class CsatPublic(CsatCreate):
    created_at: datetime


# Stored satisfaction rating, one per conversation; rating again replaces it.
class CsatRating(CsatCreate, table=True):
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", unique=True, index=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
