"""Staff taking conversations over from the bot, answering in them, handing back, and the inbox."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from conversations.crud.conversations import add_message, get_conversation
from conversations.crud.errors import NotClaimable, NotYourConversation
from conversations.crud.staff import get_staff
from conversations.models import (
    Assignment,
    Conversation,
    ConversationReview,
    ConversationStatus,
    ConversationTag,
    DeskTicket,
    Message,
    Role,
    StaffAccount,
    Tag,
    utcnow,
)


def get_assignment(*, session: Session, conversation_id: str) -> Assignment | None:
    return session.get(Assignment, conversation_id)


def list_assignments(*, session: Session, conversation_ids: Sequence[str]) -> dict[str, StaffAccount]:
    """Who owns each of these conversations, for those a human has taken over."""
    if not conversation_ids:
        return {}
    statement = (
        select(Assignment, StaffAccount)
        .join(StaffAccount, StaffAccount.id == Assignment.staff_id)  # type: ignore[arg-type]
        .where(Assignment.conversation_id.in_(conversation_ids))  # type: ignore[attr-defined]
    )
    return {assignment.conversation_id: account for assignment, account in session.exec(statement).all()}


def claim_conversation(*, session: Session, conversation_id: str, staff_id: int, force: bool = False) -> Conversation:
    """A staff member takes over a conversation that is pending or live with the bot; the bot falls silent.

    One a colleague already has stays theirs, unless their account was deactivated or `force` is given
    (an admin stepping in).
    """
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    assignment = get_assignment(session=session, conversation_id=conversation_id)
    if conversation.status == ConversationStatus.resolved:
        raise NotClaimable(conversation_id)
    if conversation.status == ConversationStatus.human and assignment is not None:
        if assignment.staff_id == staff_id:
            return conversation
        owner = session.get(StaffAccount, assignment.staff_id)
        if not force and owner is not None and owner.active:
            raise NotClaimable(conversation_id)
    if assignment is None:
        assignment = Assignment(conversation_id=conversation_id, staff_id=staff_id)
    else:
        assignment.staff_id, assignment.claimed_at = staff_id, utcnow()
    conversation.status = ConversationStatus.human
    conversation.updated_at = utcnow()
    session.add(assignment)
    session.add(conversation)
    try:
        session.commit()
    except IntegrityError:
        # A colleague claimed it at the same moment and was first.
        session.rollback()
        raise NotClaimable(conversation_id) from None
    session.refresh(conversation)
    return conversation


def _owned(session: Session, conversation_id: str, staff_id: int) -> Conversation:
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    assignment = get_assignment(session=session, conversation_id=conversation_id)
    if conversation.status != ConversationStatus.human or assignment is None or assignment.staff_id != staff_id:
        raise NotYourConversation(conversation_id)
    return conversation


def post_staff_message(*, session: Session, conversation_id: str, staff_id: int, text: str) -> Message:
    """Store a staff reply under the staff member's display name; the customer's widget picks it up."""
    _owned(session, conversation_id, staff_id)
    account = get_staff(session=session, staff_id=staff_id)
    return add_message(
        session=session, conversation_id=conversation_id, role=Role.staff, text=text, author=account.display_name
    )


def _release(session: Session, conversation: Conversation, status: ConversationStatus) -> Conversation:
    assignment = get_assignment(session=session, conversation_id=conversation.id)
    if assignment is not None:
        session.delete(assignment)
    conversation.status = status
    conversation.needs_attention = False
    conversation.attention_reason = None
    # A fresh start for the handoff rules, so the bot does not hand straight back on the next turn.
    conversation.misses = 0
    conversation.negative_streak = 0
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.commit()
    session.refresh(conversation)
    return conversation


def hand_back(*, session: Session, conversation_id: str, staff_id: int) -> Conversation:
    """The staff member who took the conversation over gives it back to the bot."""
    conversation = _owned(session, conversation_id, staff_id)
    return _release(session, conversation, ConversationStatus.bot)


def resolve_conversation(*, session: Session, conversation_id: str, staff_id: int) -> Conversation:
    """Close a conversation; one a colleague has taken over is theirs to close."""
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    assignment = get_assignment(session=session, conversation_id=conversation_id)
    if assignment is not None and assignment.staff_id != staff_id and conversation.status == ConversationStatus.human:
        raise NotYourConversation(conversation_id)
    return _release(session, conversation, ConversationStatus.resolved)


@dataclass
class InboxDetails:
    """What the staff inbox shows beside each conversation."""

    messages: int = 0
    last_text: str | None = None
    owner: str | None = None
    tags: list[str] = field(default_factory=list)
    reviewed: bool = False
    use_for_training: bool = False
    # The desk: who should answer, and since when the customer waits for a human (None: never handed off).
    assignee: str | None = None
    team: str | None = None
    waiting_since: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None


def inbox_details(*, session: Session, conversation_ids: Sequence[str]) -> dict[str, InboxDetails]:
    """Message count, latest message, owner, tags and review mark of each conversation, in a few queries."""
    details = {conversation_id: InboxDetails() for conversation_id in conversation_ids}
    if not details:
        return details
    ids = list(details)
    in_ids = col(Message.conversation_id).in_(ids)
    counts = select(Message.conversation_id, func.count(), func.max(Message.id)).where(in_ids)
    latest: list[int] = []
    for conversation_id, count, last_id in session.exec(counts.group_by(col(Message.conversation_id))).all():
        details[conversation_id].messages = count
        latest.append(last_id)
    for message in session.exec(select(Message).where(col(Message.id).in_(latest))).all():
        details[message.conversation_id].last_text = message.text
    for conversation_id, account in list_assignments(session=session, conversation_ids=ids).items():
        details[conversation_id].owner = account.display_name
    tags = (
        select(ConversationTag.conversation_id, Tag.name)
        .join(Tag, col(Tag.id) == col(ConversationTag.tag_id))
        .where(col(ConversationTag.conversation_id).in_(ids))
        .order_by(col(Tag.name))
    )
    for conversation_id, name in session.exec(tags).all():
        details[conversation_id].tags.append(name)
    for mark in session.exec(select(ConversationReview).where(col(ConversationReview.conversation_id).in_(ids))).all():
        details[mark.conversation_id].reviewed = mark.reviewed
        details[mark.conversation_id].use_for_training = mark.use_for_training
    tickets = (
        select(DeskTicket, StaffAccount.display_name)
        .outerjoin(StaffAccount, col(StaffAccount.id) == col(DeskTicket.assignee_id))
        .where(col(DeskTicket.conversation_id).in_(ids))
    )
    for ticket, assignee in session.exec(tickets).all():
        row = details[ticket.conversation_id]
        row.assignee, row.team, row.waiting_since = assignee, ticket.team, ticket.waiting_since
        row.first_response_at, row.resolved_at = ticket.first_response_at, ticket.resolved_at
    return details
