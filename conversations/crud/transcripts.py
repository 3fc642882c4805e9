"""Filtered conversation lists and whole transcripts: the inbox filters, export, import and retention."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, delete, exists, func, not_, true
from sqlmodel import Session, SQLModel, col, or_, select

from conversations.crud.review import _get_or_create_tag, _label
from conversations.filters import ConversationFilter
from conversations.models import (
    Conversation,
    ConversationReview,
    ConversationStatus,
    ConversationTag,
    CsatRating,
    DeskTicket,
    Feedback,
    IntentRelabel,
    Message,
    Review,
    Role,
    Tag,
)

_HANDED_OFF = (ConversationStatus.pending_human, ConversationStatus.human)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conversation_conditions(filters: ConversationFilter) -> list[ColumnElement[bool]]:
    """The filter as SQL conditions on Conversation; per-message conditions are EXISTS subqueries."""
    conditions: list[ColumnElement[bool]] = []
    conversation_id = col(Conversation.id)

    def any_message(*where: ColumnElement[bool]) -> ColumnElement[bool]:
        return exists().where(col(Message.conversation_id) == conversation_id, *where)

    if filters.status is not None:
        conditions.append(col(Conversation.status) == filters.status)
    if filters.channel is not None:
        conditions.append(col(Conversation.channel) == filters.channel)
    if filters.since is not None:
        conditions.append(col(Conversation.created_at) >= filters.since)
    if filters.until is not None:
        conditions.append(col(Conversation.created_at) < filters.until)
    if filters.intent is not None:
        # A staff relabel overrides the classifier's prediction.
        relabelled = select(IntentRelabel.new_intent).where(col(IntentRelabel.message_id) == col(Message.id))
        effective = func.coalesce(relabelled.scalar_subquery(), col(Message.intent))
        conditions.append(any_message(col(Message.role) == Role.customer, effective == filters.intent))
    if filters.rating is not None:
        conditions.append(
            exists().where(col(Review.conversation_id) == conversation_id, col(Review.rating) == filters.rating)
        )
    if filters.feedback is not None:
        conditions.append(
            exists().where(col(Feedback.conversation_id) == conversation_id, col(Feedback.rating) == filters.feedback)
        )
    if filters.handed_off is not None:
        handed_off = or_(col(Conversation.status).in_(_HANDED_OFF), col(Conversation.needs_attention) == true())
        conditions.append(handed_off if filters.handed_off else not_(handed_off))
    if filters.low_confidence is not None:
        conditions.append(
            any_message(col(Message.role) == Role.customer, col(Message.confidence) < filters.low_confidence)
        )
    for flag, column in (
        (filters.reviewed, ConversationReview.reviewed),
        (filters.use_for_training, ConversationReview.use_for_training),
    ):
        if flag is not None:
            marked = exists().where(col(ConversationReview.conversation_id) == conversation_id, col(column) == true())
            conditions.append(marked if flag else not_(marked))
    if filters.tag is not None:
        conditions.append(
            exists()
            .where(col(ConversationTag.conversation_id) == conversation_id)
            .where(col(ConversationTag.tag_id) == col(Tag.id), col(Tag.name) == filters.tag)
        )
    assigned = select(DeskTicket.conversation_id)
    if filters.unassigned is not None:
        waiting = col(Conversation.status) == ConversationStatus.pending_human
        taken = col(Conversation.id).in_(
            assigned.where(or_(col(DeskTicket.assignee_id).is_not(None), col(DeskTicket.team).is_not(None)))
        )
        conditions.append(and_(waiting, not_(taken)) if filters.unassigned else or_(not_(waiting), taken))
    if filters.assignee_id is not None:
        conditions.append(col(Conversation.id).in_(assigned.where(col(DeskTicket.assignee_id) == filters.assignee_id)))
    if filters.team is not None:
        conditions.append(col(Conversation.id).in_(assigned.where(col(DeskTicket.team) == filters.team)))
    if filters.search is not None:
        pattern = f"%{_escape_like(filters.search)}%"
        # ILIKE on PostgreSQL, lower() LIKE lower() on SQLite.
        conditions.append(any_message(col(Message.text).ilike(pattern, escape="\\")))
    return conditions


def list_conversations(*, session: Session, filters: ConversationFilter) -> Sequence[Conversation]:
    """One page of the conversations matching `filters`: waiting for a human first, then flagged, then newest."""
    urgency = case(
        (col(Conversation.status) == ConversationStatus.pending_human, 0),
        (col(Conversation.needs_attention) == true(), 1),
        else_=2,
    )
    statement = (
        select(Conversation)
        .where(*_conversation_conditions(filters))
        .order_by(urgency, col(Conversation.updated_at).desc(), col(Conversation.id).desc())
        .offset(filters.offset)
    )
    if filters.limit is not None:
        statement = statement.limit(filters.limit)
    return session.exec(statement).all()


def count_conversations(*, session: Session, filters: ConversationFilter) -> int:
    """How many conversations match `filters` (within its offset and limit)."""
    statement = select(func.count()).select_from(Conversation).where(*_conversation_conditions(filters))
    total = max(0, session.exec(statement).one() - filters.offset)
    return total if filters.limit is None else min(total, filters.limit)


def count_filtered_messages(*, session: Session, filters: ConversationFilter) -> int:
    """How many messages the conversations matching `filters` hold (an upper bound when paginated)."""
    matching = select(Conversation.id).where(*_conversation_conditions(filters))
    statement = select(func.count()).select_from(Message).where(col(Message.conversation_id).in_(matching))
    return session.exec(statement).one()


@dataclass
class Transcript:
    """A conversation with everything customers and staff added to it, as exports need it."""

    conversation: Conversation
    messages: list[Message]
    reviews: dict[int, Review] = field(default_factory=dict)  # by message id
    relabels: dict[int, IntentRelabel] = field(default_factory=dict)  # by message id
    feedback: dict[int, Feedback] = field(default_factory=dict)  # by message id
    tags: list[str] = field(default_factory=list)
    csat: CsatRating | None = None
    mark: ConversationReview | None = None


def load_transcripts(*, session: Session, conversations: Sequence[Conversation]) -> list[Transcript]:
    """The conversations with their messages, reviews, relabels, ratings, tags and marks, in a few queries."""
    ids = [conversation.id for conversation in conversations]
    transcripts = {c.id: Transcript(conversation=c, messages=[]) for c in conversations}
    for message in session.exec(select(Message).where(col(Message.conversation_id).in_(ids)).order_by(col(Message.id))):
        transcripts[message.conversation_id].messages.append(message)
    for review in session.exec(select(Review).where(col(Review.conversation_id).in_(ids))):
        transcripts[review.conversation_id].reviews[review.message_id] = review
    for relabel in session.exec(select(IntentRelabel).where(col(IntentRelabel.conversation_id).in_(ids))):
        transcripts[relabel.conversation_id].relabels[relabel.message_id] = relabel
    for feedback in session.exec(select(Feedback).where(col(Feedback.conversation_id).in_(ids))):
        transcripts[feedback.conversation_id].feedback[feedback.message_id] = feedback
    tagged = (
        select(ConversationTag.conversation_id, Tag.name)
        .join(Tag, col(Tag.id) == col(ConversationTag.tag_id))
        .where(col(ConversationTag.conversation_id).in_(ids))
        .order_by(col(Tag.name))
    )
    for conversation_id, name in session.exec(tagged):
        transcripts[conversation_id].tags.append(name)
    for csat in session.exec(select(CsatRating).where(col(CsatRating.conversation_id).in_(ids))):
        transcripts[csat.conversation_id].csat = csat
    for mark in session.exec(select(ConversationReview).where(col(ConversationReview.conversation_id).in_(ids))):
        transcripts[mark.conversation_id].mark = mark
    return [transcripts[conversation_id] for conversation_id in ids]


def iter_transcripts(*, session: Session, filters: ConversationFilter, batch_size: int = 100) -> Iterator[Transcript]:
    """Every conversation matching `filters`, oldest first, read `batch_size` conversations at a time.

    Pages are taken by (created_at, id) rather than by offset, so a long export stays fast and neither
    skips nor repeats a conversation when new ones arrive meanwhile.
    """
    conditions = _conversation_conditions(filters)
    remaining = filters.limit
    offset = filters.offset
    after: tuple[datetime, str] | None = None
    while remaining is None or remaining > 0:
        size = batch_size if remaining is None else min(batch_size, remaining)
        statement = select(Conversation).where(*conditions)
        if after is not None:
            created_at, conversation_id = after
            statement = statement.where(
                or_(
                    col(Conversation.created_at) > created_at,
                    and_(col(Conversation.created_at) == created_at, col(Conversation.id) > conversation_id),
                )
            )
        statement = statement.order_by(col(Conversation.created_at), col(Conversation.id)).offset(offset).limit(size)
        batch = session.exec(statement).all()
        if not batch:
            return
        offset = 0
        after = (batch[-1].created_at, batch[-1].id)
        if remaining is not None:
            remaining -= len(batch)
        yield from load_transcripts(session=session, conversations=batch)
        if len(batch) < size:
            return


def import_transcript(
    *,
    session: Session,
    conversation: Conversation,
    messages: Sequence[Message],
    attached: Sequence[tuple[int, Review | IntentRelabel | Feedback]],
    tags: Sequence[str],
    csat: CsatRating | None,
    mark: ConversationReview | None,
) -> None:
    """Add one imported conversation to the session without committing; the caller commits the whole file.

    `attached` pairs each review, relabel and rating with the position of its message in `messages`.
    """
    session.add(conversation)
    for message in messages:
        message.conversation_id = conversation.id
    session.add_all(messages)
    session.flush()  # hands out the message ids the reviews point at
    for position, row in attached:
        row.message_id, row.conversation_id = messages[position].id, conversation.id  # type: ignore[assignment]
        session.add(row)
    for name in tags:
        tag = _get_or_create_tag(session, _label(name, "a tag name").lower())
        session.add(ConversationTag(conversation_id=conversation.id, tag_id=tag.id))  # type: ignore[arg-type]
    for extra in (csat, mark):
        if extra is not None:
            extra.conversation_id = conversation.id
            session.add(extra)
    session.flush()


def delete_conversations(*, session: Session, conversation_ids: Sequence[str]) -> tuple[int, int]:
    """Delete conversations with their messages and every row that points at them, in any table.

    Tables are found through their foreign keys, so ones added later (feedback, assignments) go too.
    Returns how many conversations and messages went; does not commit.
    """
    if not conversation_ids:
        return 0, 0
    conversation_table, message_table = Conversation.__table__, Message.__table__  # type: ignore[attr-defined]
    message_ids = select(message_table.c.id).where(message_table.c.conversation_id.in_(conversation_ids))
    for table in reversed(SQLModel.metadata.sorted_tables):
        if table is conversation_table or table is message_table:
            continue
        for foreign_key in table.foreign_keys:
            if foreign_key.column.table is message_table:
                session.exec(delete(table).where(foreign_key.parent.in_(message_ids)))
            elif foreign_key.column.table is conversation_table:
                session.exec(delete(table).where(foreign_key.parent.in_(conversation_ids)))
    messages = session.exec(delete(message_table).where(message_table.c.conversation_id.in_(conversation_ids)))
    result = session.exec(delete(conversation_table).where(conversation_table.c.id.in_(conversation_ids)))
    return result.rowcount, messages.rowcount


def conversations_inactive_since(
    *, session: Session, cutoff: datetime, skip_token_hash: str | None = None, limit: int = 500
) -> Sequence[Conversation]:
    """Up to `limit` conversations with no activity since `cutoff`, oldest first."""
    statement = select(Conversation).where(col(Conversation.updated_at) < cutoff)
    if skip_token_hash is not None:
        statement = statement.where(col(Conversation.token_hash) != skip_token_hash)
    return session.exec(statement.order_by(col(Conversation.updated_at), col(Conversation.id)).limit(limit)).all()
