"""What staff read: inbox rows and full transcripts (with each turn's routing trace, ratings and reviews).

Built once here for both the console pages and the JSON API, so both always show the same thing.
"""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlmodel import Session

from bot.slots import masked_slots
from conversations import crud
from conversations.filters import ConversationFilter, InvalidFilter
from conversations.models import (
    CannedReply,
    Conversation,
    ConversationReviewPublic,
    ConversationStatus,
    CsatPublic,
    DeskTicket,
    IntentRelabelPublic,
    Note,
    Rating,
    ReviewPublic,
    Role,
    StaffAccount,
)
from core.settings import Settings
from serving.errors import ApiError

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Query parameters the inbox understands; anything else is ignored, and empty ones mean "any".
FILTER_FIELDS = (
    "status", "created_from", "created_to", "intent", "rating", "feedback", "handed_off", "low_confidence",
    "reviewed", "use_for_training", "tag", "search", "channel", "queue", "team",
)  # fmt: skip
# The desk's queues: `queue=unassigned` (waiting, nobody assigned) or `queue=mine` (assigned to the signed-in one).
QUEUES = ("unassigned", "mine")


@dataclass(frozen=True)
class DeskTargets:
    """How long a customer may wait for a first answer, and a handed-off conversation may stay open."""

    first_response_s: float = 15 * 60
    resolution_s: float = 24 * 3600

    @classmethod
    def of(cls, settings: Settings) -> "DeskTargets":
        return cls(settings.desk_first_response_minutes * 60, settings.desk_resolution_hours * 3600)


class InboxRow(BaseModel):
    """One conversation in the inbox."""

    id: str
    channel: str
    status: ConversationStatus
    needs_attention: bool
    attention_reason: str | None
    # Waiting for a human who has not taken it over yet.
    needs_human: bool
    created_at: datetime
    updated_at: datetime
    messages: int
    last_text: str | None
    owner: str | None
    tags: list[str]
    reviewed: bool
    use_for_training: bool
    # The desk: who should answer, and the timers since the customer was handed to people.
    assignee: str | None = None
    team: str | None = None
    waiting_since: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    # Seconds until the first staff answer (so far, while none came), and since the handoff while still open.
    first_response_s: float | None = None
    open_s: float | None = None
    first_response_overdue: bool = False
    resolution_overdue: bool = False


class InboxPage(BaseModel):
    """A page of the inbox: conversations waiting for a human first, then flagged ones, then the newest."""

    conversations: list[InboxRow]
    offset: int
    limit: int
    has_more: bool


class StaffConversation(BaseModel):
    """A conversation as staff see it, with who has taken it over."""

    id: str
    channel: str
    status: ConversationStatus
    needs_attention: bool
    attention_reason: str | None
    created_at: datetime
    updated_at: datetime
    owner_id: int | None
    owner: str | None
    slots: dict


class StaffMessage(BaseModel):
    """One turn with everything behind it: the bot's intent, confidence, decision, adapter and trace."""

    id: int
    role: Role
    text: str
    author: str | None
    created_at: datetime
    intent: str | None
    confidence: float | None
    decision: str | None
    model: str | None
    failed: bool
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    first_token_ms: float | None
    latency_ms: float | None
    trace: dict | None
    # The customer's thumbs up/down on this bot reply.
    feedback: Rating | None = None
    review: ReviewPublic | None = None
    relabel: IntentRelabelPublic | None = None


class StaffTranscript(BaseModel):
    """A whole conversation for review: every turn, the customer's ratings, tags and the review mark."""

    conversation: StaffConversation
    messages: list[StaffMessage]
    csat: CsatPublic | None
    tags: list[str]
    mark: ConversationReviewPublic | None


def inbox_filter(
    params: dict[str, str], offset: int = 0, limit: int = PAGE_SIZE, staff_id: int | None = None
) -> ConversationFilter:
    """The store's filter from query parameters; a bad value is a 422 naming the field."""
    given: dict[str, object] = {
        name: value.strip() for name, value in params.items() if name in FILTER_FIELDS and value.strip()
    }
    queue = given.pop("queue", None)
    if queue == "unassigned":
        given["unassigned"] = True
    elif queue == "mine" and staff_id is not None:
        given["assignee_id"] = staff_id
    elif queue is not None and queue not in QUEUES:
        raise ApiError(422, "invalid_filter", f"invalid conversation filter: queue: one of {', '.join(QUEUES)}")
    try:
        return ConversationFilter(**given, offset=max(offset, 0), limit=min(max(limit, 1), MAX_PAGE_SIZE) + 1)
    except InvalidFilter as error:
        raise ApiError(422, "invalid_filter", str(error)) from error


def needs_human(conversation: Conversation) -> bool:
    if conversation.status == ConversationStatus.pending_human:
        return True
    return conversation.needs_attention and conversation.status == ConversationStatus.bot


def inbox_page(session: Session, filters: ConversationFilter, targets: DeskTargets | None = None) -> InboxPage:
    """One page of conversations; `filters.limit` asks for one more than shown, to know if there are more."""
    assert filters.limit is not None
    found = crud.list_conversations(session=session, filters=filters)
    shown = list(found[: filters.limit - 1])
    details = crud.inbox_details(session=session, conversation_ids=[c.id for c in shown])
    rows = [_timed(_row(conversation, details[conversation.id]), targets or DeskTargets()) for conversation in shown]
    return InboxPage(
        conversations=rows, offset=filters.offset, limit=filters.limit - 1, has_more=len(found) >= filters.limit
    )


def _row(conversation: Conversation, details: crud.InboxDetails) -> InboxRow:
    return InboxRow(
        id=conversation.id,
        channel=conversation.channel,
        status=conversation.status,
        needs_attention=conversation.needs_attention,
        attention_reason=conversation.attention_reason,
        needs_human=needs_human(conversation),
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        **asdict(details),
    )


def _utc(moment: datetime) -> datetime:
    # SQLite gives stored UTC times back without their zone.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _timed(row: InboxRow, targets: DeskTargets, now: datetime | None = None) -> InboxRow:
    """The row with its first-response and resolution timers, and whether they are past the targets."""
    if row.waiting_since is None:
        return row
    now = now or datetime.now(UTC)
    since = _utc(row.waiting_since)
    still_open = row.resolved_at is None and row.status in (ConversationStatus.pending_human, ConversationStatus.human)
    if row.first_response_at is not None:
        row.first_response_s = (_utc(row.first_response_at) - since).total_seconds()
    elif still_open:
        row.first_response_s = (now - since).total_seconds()
        row.first_response_overdue = row.first_response_s > targets.first_response_s
    if still_open:
        row.open_s = (now - since).total_seconds()
        row.resolution_overdue = row.open_s > targets.resolution_s
    return row


def staff_conversation(session: Session, conversation: Conversation) -> StaffConversation:
    assignment = crud.get_assignment(session=session, conversation_id=conversation.id)
    owner = crud.get_staff(session=session, staff_id=assignment.staff_id) if assignment else None
    return StaffConversation(
        id=conversation.id, channel=conversation.channel, status=conversation.status,
        needs_attention=conversation.needs_attention, attention_reason=conversation.attention_reason,
        created_at=conversation.created_at, updated_at=conversation.updated_at,
        owner_id=owner.id if owner else None, owner=owner.display_name if owner else None,
        slots=masked_slots(conversation.slots or {}),
    )  # fmt: skip


def staff_messages(session: Session, conversation_id: str, after_id: int = 0) -> list[StaffMessage]:
    """The conversation's turns (those after `after_id`), each with its ratings, review and relabel."""
    if after_id:
        messages = crud.list_messages_after(session=session, conversation_id=conversation_id, after_id=after_id)
    else:
        messages = crud.list_messages(session=session, conversation_id=conversation_id)
    of_conversation = {"session": session, "conversation_id": conversation_id}
    feedback = {item.message_id: item.rating for item in crud.list_feedback(**of_conversation)}
    reviews = {item.message_id: item for item in crud.list_reviews(**of_conversation)}
    relabels = {item.message_id: item for item in crud.list_relabels(**of_conversation)}
    views = []
    for message in messages:
        assert message.id is not None
        view = StaffMessage.model_validate(message, from_attributes=True)
        if view.trace and view.trace.get("slots"):
            # Traces stored before slots were masked in them still show the customer's details: mask them here.
            view.trace = {**view.trace, "slots": masked_slots(view.trace["slots"])}
        view.feedback = feedback.get(message.id)
        if message.id in reviews:
            view.review = ReviewPublic.model_validate(reviews[message.id], from_attributes=True)
        if message.id in relabels:
            view.relabel = IntentRelabelPublic.model_validate(relabels[message.id], from_attributes=True)
        views.append(view)
    return views


def transcript(session: Session, conversation_id: str) -> StaffTranscript:
    conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
    csat = crud.get_csat(session=session, conversation_id=conversation_id)
    mark = crud.get_conversation_review(session=session, conversation_id=conversation_id)
    return StaffTranscript(
        conversation=staff_conversation(session, conversation),
        messages=staff_messages(session, conversation_id),
        csat=CsatPublic.model_validate(csat, from_attributes=True) if csat else None,
        tags=crud.list_tags(session=session, conversation_id=conversation_id),
        mark=ConversationReviewPublic.model_validate(mark, from_attributes=True) if mark else None,
    )


@dataclass
class DeskView:
    """The desk's side of one conversation on its console page."""

    ticket: DeskTicket | None
    assignee: str | None
    notes: list[Note]
    teammates: list[StaffAccount]
    canned: list[CannedReply]


def desk_view(session: Session, conversation_id: str) -> DeskView:
    crud.get_conversation(session=session, conversation_id=conversation_id)
    ticket = crud.get_ticket(session=session, conversation_id=conversation_id)
    assignee = crud.get_staff(session=session, staff_id=ticket.assignee_id) if ticket and ticket.assignee_id else None
    return DeskView(
        ticket=ticket, assignee=assignee.display_name if assignee else None,
        notes=list(crud.list_notes(session=session, conversation_id=conversation_id)),
        teammates=[account for account in crud.list_staff(session=session) if account.active],
        canned=list(crud.list_canned(session=session)),
    )  # fmt: skip
