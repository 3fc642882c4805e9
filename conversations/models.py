"""SQLModel tables and API shapes for conversations and their messages.

Families follow Base (shared fields) / Create (input) / Public (output) / table=True (storage).
"""

import re
from datetime import UTC, datetime
from enum import StrEnum
from uuid import uuid4

from pydantic import StrictBool, field_validator
from sqlalchemy import JSON, BigInteger, Column, LargeBinary
from sqlmodel import Field, SQLModel

from conversations.text import PlainText


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


# Channels only the product itself opens conversations on: a customer naming one is refused.
RESERVED_CHANNELS = frozenset({"import"})
CHANNEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


# What a client may send to open a conversation: a short lower-case channel name ("web", "api", "mobile").
class ConversationCreate(ConversationBase):
    channel: str = Field(default="api", schema_extra={"pattern": f"^{CHANNEL_NAME.pattern}$"})

    @field_validator("channel")
    @classmethod
    def _customer_channel(cls, channel: str) -> str:
        if not CHANNEL_NAME.fullmatch(channel):
            raise ValueError("a channel is 1 to 32 lower-case letters, digits, '-' or '_', starting with a letter")
        if channel in RESERVED_CHANNELS:
            raise ValueError(f"the channel {channel!r} is reserved for conversations the product opens itself")
        return channel


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
    # Wrong order-number/e-mail pairs tried in this conversation (guessing is limited).
    identity_failures: int = 0
    # The customer as the embedding site vouched for them with a signed identity (serving/identity.py).
    verified_user_id: str | None = Field(default=None, max_length=128)
    verified_email: str | None = Field(default=None, max_length=254)
    # A change to an order the bot asked the customer to confirm (bot/actions.py); null when none waits.
    pending_action: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Rolling LLM summary of evicted turns, covering messages up to summarized_upto.
    summary: str = ""
    summarized_upto: int | None = None


# Fields every message shape shares.
class MessageBase(SQLModel):
    role: Role
    text: str


# What a customer sends.
class MessageCreate(SQLModel):
    text: PlainText


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
    # A recovery apology: the customer message, left without a reply, that it answers. Unique, so however many
    # app replicas sweep at once, a message gets one apology (the second insert fails).
    recovers_message_id: int | None = Field(default=None, unique=True, index=True)


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
    comment: PlainText | None = Field(default=None, max_length=1000)


# A conversation's satisfaction rating as the customer API shows it.
class CsatPublic(CsatCreate):
    created_at: datetime


# Stored satisfaction rating, one per conversation; rating again replaces it.
class CsatRating(CsatCreate, table=True):
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", unique=True, index=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)


# --- Staff console: accounts, server-side sign-in sessions, takeovers and the audit log. ---


class StaffRole(StrEnum):
    """What a staff account may do: staff review and take over; admins also manage accounts and models."""

    admin = "admin"
    staff = "staff"


# Fields every staff account shape shares.
class StaffAccountBase(SQLModel):
    email: str = Field(max_length=254)
    display_name: str = Field(min_length=1, max_length=120)
    role: StaffRole = StaffRole.staff
    # The team the account answers for ("billing", "returns"); conversations can be assigned to a team.
    team: str | None = Field(default=None, max_length=64)
    # On-duty staff get the e-mail alerts and take part in round-robin assignment.
    on_duty: bool = True


# What an admin sends to create a staff account.
class StaffAccountCreate(StaffAccountBase):
    password: str = Field(min_length=12, max_length=256)


# A staff account as the console shows it; the password hash never leaves the store.
class StaffAccountPublic(StaffAccountBase):
    id: int
    active: bool
    created_at: datetime


# Stored staff account; only a slow salted hash of the password is kept.
class StaffAccount(StaffAccountBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


# A signed-in browser; kept server-side so signing out or deactivating an account ends it at once.
class StaffSession(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    staff_id: int = Field(foreign_key="staffaccount.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


# Who owns a conversation a human has taken over; the row goes when it is handed back or resolved.
class Assignment(SQLModel, table=True):
    conversation_id: str = Field(foreign_key="conversation.id", primary_key=True, max_length=32)
    staff_id: int = Field(foreign_key="staffaccount.id", index=True)
    claimed_at: datetime = Field(default_factory=utcnow)


# Fields every shape of an action call shares: who, what, when and how it ended, personal data masked.
class ActionCallBase(SQLModel):
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    message_id: int | None = Field(default=None, foreign_key="message.id")
    action: str = Field(max_length=64, index=True)
    changes: bool = Field(default=False, index=True)
    # "signed <user id>" when the embedding site vouched for the customer, else "e-mail" (the order's e-mail given).
    identity: str = Field(default="e-mail", max_length=160)
    inputs: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcome: str = Field(max_length=64, index=True)
    failed: bool = Field(default=False, index=True)
    status_code: int | None = None
    attempts: int = 0
    ms: float = 0.0
    # The system's reason for refusing a change, or what went wrong.
    reason: str | None = Field(default=None, max_length=300)
    idempotency_key: str | None = Field(default=None, max_length=64)
    at: datetime = Field(default_factory=utcnow, index=True)


# An action call as staff and admins see it.
class ActionCallPublic(ActionCallBase):
    id: int


# One call the bot made to the company's systems (actions.yaml), or a change the customer declined.
class ActionCall(ActionCallBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


# Fields every audit entry shape shares.
class AuditLogBase(SQLModel):
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=200)
    details: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# An audit entry as the console shows it.
class AuditLogPublic(AuditLogBase):
    id: int
    actor_id: int | None
    at: datetime


# One admin action or takeover step; `actor_id` is empty for actions taken from the command line.
class AuditLog(AuditLogBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    actor_id: int | None = Field(default=None, foreign_key="staffaccount.id", index=True)
    at: datetime = Field(default_factory=utcnow, index=True)


class RunStatus(StrEnum):
    """Where a retraining run stands."""

    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    interrupted = "interrupted"
    cancelled = "cancelled"


# A retraining run as admins see it.
class TrainingRunPublic(SQLModel):
    id: int
    status: RunStatus
    trigger: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    adapter: str | None
    classifier: str | None
    dataset_hash: str | None
    progress: dict
    card: dict | None
    report: dict | None
    promoted: bool
    cancel_requested: bool
    error: str | None


# Stored retraining run: persisted so a restart shows an interrupted run that can be resumed.
class TrainingRun(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    status: RunStatus = Field(default=RunStatus.queued, index=True)
    trigger: str = Field(default="manual", max_length=32)  # manual, schedule, cli
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_pid: int | None = None
    adapter: str | None = Field(default=None, max_length=64)
    classifier: str | None = Field(default=None, max_length=64)
    dataset_hash: str | None = Field(default=None, max_length=64)
    # Live progress: stage, step, total, loss, eta_s, and the loss curve for the console plot.
    progress: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    card: dict | None = Field(default=None, sa_column=Column(JSON))
    report: dict | None = Field(default=None, sa_column=Column(JSON))
    promoted: bool = False
    cancel_requested: bool = False
    error: str | None = Field(default=None, max_length=2000)


# --- Staff review: verdicts and corrections of bot replies, intent relabels, tags, conversation marks. ---


class ReviewRating(StrEnum):
    """A staff member's verdict on one bot reply."""

    good = "good"
    bad = "bad"


# Fields every review of a bot reply shares.
class ReviewBase(SQLModel):
    rating: ReviewRating
    # The reply the bot should have given; training uses it instead of the original.
    corrected_text: str | None = None


# What a reviewer sends; expected_version is the version they saw (0: none yet), so edits never cross.
class ReviewCreate(ReviewBase):
    corrected_text: PlainText | None = Field(default=None, max_length=4000)
    expected_version: int = Field(default=0, ge=0)


# A review as the staff console shows it.
class ReviewPublic(ReviewBase):
    message_id: int
    conversation_id: str
    reviewer_id: int | None
    updated_at: datetime
    version: int


# Stored review, one per bot reply; every saved edit raises its version by one.
class Review(ReviewBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True, index=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    # A staff account id; no foreign key, so the store does not depend on how accounts are kept.
    reviewer_id: int | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)
    version: int = 1


# What a reviewer sends to correct the intent predicted for one customer message.
class IntentRelabelCreate(SQLModel):
    new_intent: str = Field(min_length=1, max_length=64)


# An intent correction as the staff console shows it.
class IntentRelabelPublic(IntentRelabelCreate):
    message_id: int
    old_intent: str | None
    reviewer_id: int | None
    updated_at: datetime


# Stored intent correction, one per customer message; old_intent keeps the classifier's prediction.
class IntentRelabel(IntentRelabelCreate, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True, index=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    old_intent: str | None = Field(default=None, max_length=64)
    new_intent: str = Field(max_length=64, index=True)
    reviewer_id: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)


# Fields every tag shape shares: a short lower-case label such as "refund" or "angry-customer".
class TagBase(SQLModel):
    name: str = Field(min_length=1, max_length=64)


# What a reviewer sends to tag a conversation.
class TagCreate(TagBase):
    pass


# A tag as the staff console shows it.
class TagPublic(TagBase):
    id: int


# Stored tag; names are unique and kept lower-case.
class Tag(TagBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)


# Stored link of one tag to one conversation.
class ConversationTag(SQLModel, table=True):
    conversation_id: str = Field(foreign_key="conversation.id", primary_key=True, max_length=32)
    tag_id: int = Field(foreign_key="tag.id", primary_key=True, index=True)
    reviewer_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


# Fields every conversation-level review mark shares.
class ConversationReviewBase(SQLModel):
    reviewed: bool = False
    # Only conversations a reviewer marked for training are used to retrain the bot.
    use_for_training: bool = False


# What a reviewer sends to mark a whole conversation; expected_version works as in ReviewCreate.
# The marks are strict booleans: `0` or "yes" is refused rather than read as a decision.
class ConversationReviewCreate(ConversationReviewBase):
    reviewed: StrictBool = False
    use_for_training: StrictBool = False
    expected_version: int = Field(default=0, ge=0)


# A conversation's review mark as the staff console shows it.
class ConversationReviewPublic(ConversationReviewBase):
    conversation_id: str
    reviewer_id: int | None
    updated_at: datetime
    version: int


# Stored review mark, one per conversation; versioned like Review.
class ConversationReview(ConversationReviewBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", unique=True, index=True, max_length=32)
    reviewed: bool = Field(default=False, index=True)
    use_for_training: bool = Field(default=False, index=True)
    reviewer_id: int | None = None
    updated_at: datetime = Field(default_factory=utcnow, index=True)
    version: int = 1


class ArticleChange(StrEnum):
    """What one saved version of a help article did."""

    created = "created"
    edited = "edited"
    retired = "retired"
    restored = "restored"


# Fields every help-article shape shares.
class HelpArticleBase(SQLModel):
    slug: str = Field(min_length=1, max_length=80)
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)  # Markdown


# A help article as the console and `supportbot kb list` show it.
class HelpArticlePublic(HelpArticleBase):
    id: int
    version: int
    retired: bool
    updated_at: datetime
    updated_by: str


# Stored help article of the knowledge base: the current version of one topic; history in HelpArticleVersion.
class HelpArticle(HelpArticleBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=80, unique=True, index=True)
    version: int = 1
    # Retired articles stay for their history but are no longer searched or quoted.
    retired: bool = Field(default=False, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(default="", max_length=254)


# One saved change to a help article, never altered: the text it got, who and when. The largest id
# is the knowledge base's revision, which every app replica polls to rebuild its index.
class HelpArticleVersion(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(foreign_key="helparticle.id", index=True)
    version: int
    change: ArticleChange
    title: str = Field(max_length=200)
    text: str
    retired: bool = False
    source: str = Field(default="", max_length=300)  # the file imported, "console" or "domain pack"
    changed_by: str = Field(default="", max_length=254)  # a staff e-mail, or the system user for the CLI
    staff_id: int | None = Field(default=None, foreign_key="staffaccount.id")
    at: datetime = Field(default_factory=utcnow, index=True)


# What an admin made of a question the bot could not answer and a teammate then did (conversations/crud/gaps.py):
# a help snippet, named by its article's slug, or nothing (None: "Not a snippet"). One per customer question; it goes
# when the conversation is erased, the snippet stays.
class GapDecision(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True, index=True)  # the customer's question
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    article_slug: str | None = Field(default=None, max_length=80)
    staff_id: int | None = None  # no foreign key, as for reviews
    decided_at: datetime = Field(default_factory=utcnow)


# --- Knowledge embeddings shared by every app replica. ---


# One text's embedding by one encoder, computed once by whichever process met the text first and read by every
# other; keyed by the encoder's id and the text's sha256 (the text itself is not kept), the vector as float32 bytes.
class StoredEmbedding(SQLModel, table=True):
    encoder: str = Field(primary_key=True, max_length=200)
    text_hash: str = Field(primary_key=True, max_length=64)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


# --- Abuse limits shared by every app replica. ---


# Hits of one rate limit's key in one fixed window (whole seconds since the epoch at which it starts);
# kept in the database so every replica counts against the same limits.
class RateCount(SQLModel, table=True):
    key: str = Field(primary_key=True, max_length=200)
    window_start: int = Field(sa_column=Column(BigInteger, primary_key=True))
    hits: int = 0


# --- Jobs one app replica does for all of them. ---


# A job that one app process does for all of them (retention): when it last started and where. A process runs
# it only after moving `claimed_at` to now in one conditional UPDATE, so app replicas take turns.
class PeriodicJob(SQLModel, table=True):
    name: str = Field(primary_key=True, max_length=64)
    claimed_at: datetime | None = None
    holder: str | None = Field(default=None, max_length=200)  # "host:pid" of the process that claimed it


# --- The support desk: assignment, notes, canned replies, alerts (webhooks and e-mail deliveries). ---


# Who should answer a conversation waiting for a human, and the timers the inbox shows; one row per
# conversation that was ever handed to people (the takeover itself stays in Assignment).
class DeskTicket(SQLModel, table=True):
    conversation_id: str = Field(foreign_key="conversation.id", primary_key=True, max_length=32)
    # A teammate, a team (a name staff accounts carry), both, or neither (the unassigned queue).
    assignee_id: int | None = Field(default=None, foreign_key="staffaccount.id", index=True)
    team: str | None = Field(default=None, max_length=64, index=True)
    assigned_at: datetime | None = None
    # Since when the customer has waited for a human (the handoff), the first staff reply, and the close.
    waiting_since: datetime = Field(default_factory=utcnow, index=True)
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    # Why it went to a human ("handoff: ...") and whether it happened outside business hours.
    reason: str | None = Field(default=None, max_length=200)
    outside_hours: bool = False
    # Where staff replies are also e-mailed (asked for outside business hours); None: only in the widget.
    customer_email: str | None = Field(default=None, max_length=254)
    # The language detected in the customer's messages (ISO 639-1), when there was enough text.
    language: str | None = Field(default=None, max_length=8)


# What staff send to assign a conversation: a teammate, a team, or neither (back to the unassigned queue).
class DeskAssign(SQLModel):
    assignee_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    team: str | None = Field(default=None, max_length=64)


# Fields every internal note shape shares.
class NoteBase(SQLModel):
    text: str = Field(min_length=1, max_length=4000)


# What staff send to add an internal note.
class NoteCreate(NoteBase):
    text: PlainText = Field(min_length=1, max_length=4000)


# An internal note as the console shows it; never part of anything a customer reads.
class NotePublic(NoteBase):
    id: int
    conversation_id: str
    staff_id: int | None
    author: str
    created_at: datetime


# Stored internal note on a conversation, for teammates only.
class Note(NoteBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True, max_length=32)
    staff_id: int | None = Field(default=None, foreign_key="staffaccount.id")
    author: str = Field(default="", max_length=120)
    created_at: datetime = Field(default_factory=utcnow)


# Fields every canned reply shape shares: a short title to pick it by and the text with {placeholders}.
class CannedReplyBase(SQLModel):
    title: str = Field(min_length=1, max_length=120)
    text: str = Field(min_length=1, max_length=4000)


# What staff send to save a canned reply.
class CannedReplyCreate(CannedReplyBase):
    text: PlainText = Field(min_length=1, max_length=4000)


# A canned reply as the console shows it.
class CannedReplyPublic(CannedReplyBase):
    id: int
    updated_at: datetime


# Stored canned reply; titles are unique.
class CannedReply(CannedReplyBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=120, unique=True, index=True)
    created_by: int | None = Field(default=None, foreign_key="staffaccount.id")
    updated_at: datetime = Field(default_factory=utcnow)


# Fields every webhook shape shares.
class WebhookBase(SQLModel):
    name: str = Field(min_length=1, max_length=120)
    url: str = Field(min_length=1, max_length=1000)
    active: bool = True


# What an admin sends to add a webhook; the secret signs every delivery (HMAC-SHA256).
class WebhookCreate(WebhookBase):
    secret: str = Field(min_length=16, max_length=200)
    active: StrictBool = True


# A webhook as admins see it; the secret is never shown again.
class WebhookPublic(WebhookBase):
    id: int
    created_at: datetime


# Stored webhook: every alert event is POSTed to it as JSON (Slack and Teams take these through a relay).
class Webhook(WebhookBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    secret: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class DeliveryStatus(StrEnum):
    """Where one alert delivery stands."""

    pending = "pending"
    sent = "sent"
    failed = "failed"


# An alert delivery as admins see it in the delivery log.
class AlertDeliveryPublic(SQLModel):
    id: int
    kind: str
    target: str
    event: str
    conversation_id: str | None
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None


# One e-mail or webhook call waiting to go out, or its outcome: stored before it is tried, so a restart
# loses none, and kept as the delivery log.
class AlertDelivery(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # "email" or "webhook"
    # An e-mail address, or the webhook's id as text.
    target: str = Field(max_length=1000)
    event: str = Field(max_length=64, index=True)
    conversation_id: str | None = Field(default=None, foreign_key="conversation.id", index=True, max_length=32)
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: DeliveryStatus = Field(default=DeliveryStatus.pending, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    # A sender working on it holds it until then; past it, another sender (after a crash) may take it.
    locked_until: datetime | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    sent_at: datetime | None = None
