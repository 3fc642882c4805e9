"""Every query the product makes against the conversation store; routes and the bot call these.

Functions are keyword-only and take the session first; they raise typed errors, never HTTP ones.
"""

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, case, delete, exists, func, not_, text, true, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, or_, select

from conversations.filters import ConversationFilter
from conversations.models import (
    Assignment,
    AuditLog,
    Conversation,
    ConversationReview,
    ConversationStatus,
    ConversationTag,
    CsatRating,
    Feedback,
    IntentRelabel,
    Message,
    Rating,
    Review,
    ReviewRating,
    Role,
    RunStatus,
    StaffAccount,
    StaffRole,
    StaffSession,
    Tag,
    TrainingRun,
    utcnow,
)


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
) -> Conversation:
    """Store what the dialogue manager remembers after a turn; a reason also flags it for staff."""
    conversation = get_conversation(session=session, conversation_id=conversation_id)
    conversation.status = status
    conversation.slots = dict(slots)
    conversation.misses = misses
    conversation.negative_streak = negative_streak
    conversation.pending_intent = pending_intent
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


# --- Customer web widget: live updates, reply ratings, satisfaction, ending a conversation. ---


class MessageNotFound(Exception):
    """No message with this id belongs to this conversation."""


class NotABotMessage(Exception):
    """Only the bot's replies can be rated."""


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


class RunAlreadyActive(Exception):
    """Only one retraining run may be queued or running at a time."""


class RunNotFound(Exception):
    """No retraining run has this id."""


# PostgreSQL advisory lock taken while queueing a retraining run (conversations.db uses 73_310_001).
_RUN_QUEUE_LOCK_KEY = 73_310_002


def create_training_run(*, session: Session, trigger: str) -> TrainingRun:
    """Queue a retraining run, unless one is already queued or running."""
    if session.connection().dialect.name == "postgresql":
        # App replicas check the schedule at the same moment: they take turns, so only one queues the run.
        session.connection().execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _RUN_QUEUE_LOCK_KEY})
    active = session.exec(
        select(TrainingRun).where(col(TrainingRun.status).in_([RunStatus.queued, RunStatus.running]))
    ).first()
    if active is not None:
        raise RunAlreadyActive(f"run {active.id} is {active.status}")
    run = TrainingRun(trigger=trigger)
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def get_training_run(*, session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def list_training_runs(*, session: Session, limit: int = 50) -> Sequence[TrainingRun]:
    return session.exec(select(TrainingRun).order_by(col(TrainingRun.id).desc()).limit(limit)).all()


def update_training_run(*, session: Session, run_id: int, **changes: object) -> TrainingRun:
    run = get_training_run(session=session, run_id=run_id)
    for name, value in changes.items():
        setattr(run, name, value)
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def claim_training_run(*, session: Session, worker_pid: int | None = None) -> TrainingRun | None:
    """The oldest queued run, now marked running for the calling worker; None when none is queued.

    The status check and the change are one UPDATE, so two workers never claim the same run.
    """
    queued = session.exec(
        select(TrainingRun.id).where(TrainingRun.status == RunStatus.queued).order_by(col(TrainingRun.id))
    ).all()
    for run_id in queued:
        claimed = session.exec(
            update(TrainingRun)
            .where(col(TrainingRun.id) == run_id, col(TrainingRun.status) == RunStatus.queued)
            .values(status=RunStatus.running, worker_pid=worker_pid)
        )
        session.commit()
        if claimed.rowcount == 1:
            return get_training_run(session=session, run_id=run_id)
    return None


# --- Staff console: accounts, sign-in sessions, the audit log, taking over conversations. ---


class StaffNotFound(Exception):
    """No staff account has this id or email."""


class EmailTaken(Exception):
    """Another staff account already signs in with this email."""


class LastAdmin(Exception):
    """The change would leave no active admin to manage accounts."""


class NotClaimable(Exception):
    """The conversation is resolved, or another staff member already has it."""


class NotYourConversation(Exception):
    """Only the staff member who took the conversation over may answer in it or hand it back."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_staff(
    *, session: Session, email: str, display_name: str, password_hash: str, role: StaffRole = StaffRole.staff
) -> StaffAccount:
    """Add a staff account; `password_hash` comes from the caller's password hasher, never the password."""
    email = normalize_email(email)
    if find_staff(session=session, email=email) is not None:
        raise EmailTaken(email)
    account = StaffAccount(email=email, display_name=display_name.strip(), password_hash=password_hash, role=role)
    session.add(account)
    session.commit()
    session.refresh(account)
    return account


def find_staff(*, session: Session, email: str) -> StaffAccount | None:
    statement = select(StaffAccount).where(StaffAccount.email == normalize_email(email))
    return session.exec(statement).first()


def get_staff(*, session: Session, staff_id: int) -> StaffAccount:
    account = session.get(StaffAccount, staff_id)
    if account is None:
        raise StaffNotFound(staff_id)
    return account


def list_staff(*, session: Session) -> Sequence[StaffAccount]:
    return session.exec(select(StaffAccount).order_by(StaffAccount.id)).all()


def set_password_hash(*, session: Session, staff_id: int, password_hash: str) -> None:
    """Store a new hash, e.g. one re-computed with stronger parameters at sign-in."""
    account = get_staff(session=session, staff_id=staff_id)
    account.password_hash = password_hash
    session.add(account)
    session.commit()


def _other_active_admins(session: Session, staff_id: int) -> int:
    statement = select(StaffAccount).where(
        StaffAccount.role == StaffRole.admin,
        StaffAccount.active == True,  # noqa: E712
        StaffAccount.id != staff_id,
    )
    return len(session.exec(statement).all())


def update_staff(
    *, session: Session, staff_id: int, active: bool | None = None, role: StaffRole | None = None
) -> StaffAccount:
    """Activate, deactivate or change the role of an account; a deactivated account is signed out at once."""
    account = get_staff(session=session, staff_id=staff_id)
    loses_admin = account.role == StaffRole.admin and account.active and (active is False or role == StaffRole.staff)
    if loses_admin and _other_active_admins(session, staff_id) == 0:
        raise LastAdmin(staff_id)
    if active is not None:
        account.active = active
    if role is not None:
        account.role = role
    session.add(account)
    if active is False:
        for staff_session in session.exec(select(StaffSession).where(StaffSession.staff_id == staff_id)).all():
            session.delete(staff_session)
    session.commit()
    session.refresh(account)
    return account


def create_staff_session(*, session: Session, staff_id: int, expires_at: datetime) -> tuple[StaffSession, str]:
    """Sign a staff member in; returns the session with the token for the cookie (only its hash is kept)."""
    # Sessions that ran out are otherwise only removed when their cookie comes back.
    expired = col(StaffSession.staff_id) == staff_id, col(StaffSession.expires_at) <= utcnow()
    session.exec(delete(StaffSession).where(*expired))
    token = secrets.token_urlsafe(32)
    staff_session = StaffSession(
        token_hash=hash_token(token), staff_id=staff_id, csrf_token=secrets.token_urlsafe(32), expires_at=expires_at
    )
    session.add(staff_session)
    session.commit()
    session.refresh(staff_session)
    return staff_session, token


def _aware(moment: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def open_staff_session(*, session: Session, token: str) -> tuple[StaffSession, StaffAccount] | None:
    """The live session and its active account for a cookie token; None when signed out, expired or deactivated."""
    staff_session = session.exec(select(StaffSession).where(StaffSession.token_hash == hash_token(token))).first()
    if staff_session is None:
        return None
    if _aware(staff_session.expires_at) <= utcnow():
        session.delete(staff_session)
        session.commit()
        return None
    account = session.get(StaffAccount, staff_session.staff_id)
    if account is None or not account.active:
        return None
    return staff_session, account


def end_staff_session(*, session: Session, token: str) -> None:
    staff_session = session.exec(select(StaffSession).where(StaffSession.token_hash == hash_token(token))).first()
    if staff_session is not None:
        session.delete(staff_session)
        session.commit()


def record_audit(
    *, session: Session, actor_id: int | None, action: str, target: str = "", details: dict | None = None
) -> AuditLog:
    """Append one entry to the audit log (admin actions and every takeover step)."""
    entry = AuditLog(actor_id=actor_id, action=action, target=target[:200], details=details or {})
    session.add(entry)
    session.commit()
    session.refresh(entry)
    return entry


def list_audit(
    *, session: Session, action: str | None = None, actor_id: int | None = None, limit: int = 100, offset: int = 0
) -> Sequence[AuditLog]:
    """Audit entries, newest first."""
    statement = select(AuditLog)
    if action:
        statement = statement.where(AuditLog.action == action)
    if actor_id is not None:
        statement = statement.where(AuditLog.actor_id == actor_id)
    statement = statement.order_by(AuditLog.id.desc()).offset(offset).limit(limit)  # type: ignore[union-attr]
    return session.exec(statement).all()


def audit_actions(*, session: Session) -> list[str]:
    """Every action name the audit log holds, for filtering it."""
    return list(session.exec(select(AuditLog.action).distinct().order_by(col(AuditLog.action))).all())


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
    return details


def training_conversations(*, session: Session) -> list[dict]:
    """Conversations staff marked for training, with each reply's review and each message's intent.

    Each item: {"id", "turns": [{"role": "user"|"assistant", "content", "rating", "correction", "intent"}]}.
    A staff review outranks the customer's thumbs; a relabelled intent outranks the prediction.
    """
    marked = session.exec(
        select(ConversationReview.conversation_id).where(col(ConversationReview.use_for_training).is_(True))
    ).all()
    items = []
    for conversation_id in marked:
        messages = list_messages(session=session, conversation_id=conversation_id)
        ids = [message.id for message in messages]
        reviews = {r.message_id: r for r in session.exec(select(Review).where(col(Review.message_id).in_(ids)))}
        thumbs = {f.message_id: f for f in session.exec(select(Feedback).where(col(Feedback.message_id).in_(ids)))}
        relabels = {
            r.message_id: r.new_intent
            for r in session.exec(select(IntentRelabel).where(col(IntentRelabel.message_id).in_(ids)))
        }
        turns = []
        for message in messages:
            if message.failed:
                continue
            review, thumb = reviews.get(message.id), thumbs.get(message.id)
            turns.append(
                {
                    "role": "user" if message.role == Role.customer else "assistant",
                    "content": message.text,
                    "rating": review.rating.value if review else (thumb.rating.value if thumb else None),
                    "correction": review.corrected_text if review else None,
                    "intent": relabels.get(message.id, message.intent),
                }
            )
        items.append({"id": conversation_id, "turns": turns})
    return items


def relabelled_examples(*, session: Session) -> list[tuple[str, str]]:
    """(customer message text, intent staff gave it), for retraining the intent classifier."""
    rows = session.exec(select(Message.text, IntentRelabel.new_intent).join(IntentRelabel)).all()
    return [(text, intent) for text, intent in rows]


# --- Staff review: reviews of bot replies, intent relabels, tags, conversation marks, filtered lists. ---


class ReviewConflict(Exception):
    """Someone else saved this review after the editor read it: theirs is kept and nothing of this edit is."""

    def __init__(self, what: str, expected_version: int, current_version: int) -> None:
        super().__init__(
            f"{what} was changed by someone else while you edited it (you edited version {expected_version}, "
            f"it is now at version {current_version}); reload it and apply your change again"
        )
        self.expected_version = expected_version
        self.current_version = current_version


class NotACustomerMessage(Exception):
    """Only customer messages carry an intent to relabel."""


class InvalidLabel(ValueError):
    """A tag name or intent that is empty or longer than 64 characters."""


class _StaleVersion(Exception):
    """The row was not at the expected version."""


def _label(value: str, what: str) -> str:
    label = value.strip()
    if not 1 <= len(label) <= 64:
        raise InvalidLabel(f"{what} must be 1 to 64 characters, got {value!r}")
    return label


def get_review(*, session: Session, message_id: int) -> Review | None:
    return session.exec(select(Review).where(Review.message_id == message_id)).first()


def list_reviews(*, session: Session, conversation_id: str) -> Sequence[Review]:
    statement = select(Review).where(Review.conversation_id == conversation_id).order_by(col(Review.message_id))
    return session.exec(statement).all()


def save_review(
    *,
    session: Session,
    message_id: int,
    rating: ReviewRating | str,
    corrected_text: str | None = None,
    reviewer_id: int | None = None,
    expected_version: int,
) -> Review:
    """Store a reviewer's verdict on one bot reply, whole or not at all.

    `expected_version` is the version the reviewer edited (0: there was no review yet). If anyone saved
    the review since, `ReviewConflict` is raised and the stored review stays as they left it.
    """
    rating = ReviewRating(rating)
    message = session.get(Message, message_id)
    if message is None:
        raise MessageNotFound(message_id)
    if message.role != Role.bot:
        raise NotABotMessage(message_id)
    corrected = (corrected_text or "").strip() or None
    now = utcnow()
    try:
        if expected_version == 0:
            # A second first review of the same reply fails on the unique message_id.
            session.add(
                Review(
                    message_id=message_id,
                    conversation_id=message.conversation_id,
                    rating=rating,
                    corrected_text=corrected,
                    reviewer_id=reviewer_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            session.flush()
        else:
            # Compare-and-set in one statement: of two edits of the same version only one matches.
            result = session.exec(
                update(Review)
                .where(col(Review.message_id) == message_id, col(Review.version) == expected_version)
                .values(
                    rating=rating,
                    corrected_text=corrected,
                    reviewer_id=reviewer_id,
                    updated_at=now,
                    version=col(Review.version) + 1,
                )
            )
            if result.rowcount != 1:
                raise _StaleVersion
        session.commit()
    except (IntegrityError, _StaleVersion):
        session.rollback()
        current = get_review(session=session, message_id=message_id)
        raise ReviewConflict(
            f"the review of message {message_id}", expected_version, current.version if current else 0
        ) from None
    review = get_review(session=session, message_id=message_id)
    assert review is not None
    return review


def relabel_intent(
    *, session: Session, message_id: int, new_intent: str, reviewer_id: int | None = None
) -> IntentRelabel:
    """Correct the intent predicted for one customer message; the prediction stays on the message."""
    new_intent = _label(new_intent, "an intent")
    message = session.get(Message, message_id)
    if message is None:
        raise MessageNotFound(message_id)
    if message.role != Role.customer:
        raise NotACustomerMessage(message_id)
    for _attempt in range(2):
        relabel = session.exec(select(IntentRelabel).where(IntentRelabel.message_id == message_id)).first()
        if relabel is None:
            relabel = IntentRelabel(
                message_id=message_id,
                conversation_id=message.conversation_id,
                old_intent=message.intent,
                new_intent=new_intent,
            )
        relabel.new_intent, relabel.reviewer_id, relabel.updated_at = new_intent, reviewer_id, utcnow()
        session.add(relabel)
        try:
            session.commit()
        except IntegrityError:
            # A colleague relabelled the same message first; update their row instead.
            session.rollback()
            continue
        session.refresh(relabel)
        return relabel
    raise ReviewConflict(f"the intent of message {message_id}", 0, 1)


def list_relabels(*, session: Session, conversation_id: str) -> Sequence[IntentRelabel]:
    statement = select(IntentRelabel).where(IntentRelabel.conversation_id == conversation_id)
    return session.exec(statement.order_by(col(IntentRelabel.message_id))).all()


def _get_or_create_tag(session: Session, name: str) -> Tag:
    tag = session.exec(select(Tag).where(Tag.name == name)).first()
    if tag is None:
        tag = Tag(name=name)
        session.add(tag)
        session.flush()
    return tag


def add_tag(*, session: Session, conversation_id: str, name: str, reviewer_id: int | None = None) -> Tag:
    """Tag a conversation (names are lower-cased); tagging twice with the same name changes nothing."""
    name = _label(name, "a tag name").lower()
    get_conversation(session=session, conversation_id=conversation_id)
    for attempt in range(2):
        try:
            tag = _get_or_create_tag(session, name)
            assert tag.id is not None
            if session.get(ConversationTag, (conversation_id, tag.id)) is None:
                session.add(ConversationTag(conversation_id=conversation_id, tag_id=tag.id, reviewer_id=reviewer_id))
            session.commit()
        except IntegrityError:
            # A colleague created the tag or added it here at the same moment; the second try sees theirs.
            session.rollback()
            if attempt:
                raise
            continue
        break
    session.refresh(tag)
    return tag


def remove_tag(*, session: Session, conversation_id: str, name: str) -> bool:
    """Take a tag off a conversation; False when it did not have it. The tag itself stays for reuse."""
    tag = session.exec(select(Tag).where(Tag.name == name.strip().lower())).first()
    link = session.get(ConversationTag, (conversation_id, tag.id)) if tag is not None else None
    if link is None:
        return False
    session.delete(link)
    session.commit()
    return True


def list_tags(*, session: Session, conversation_id: str) -> list[str]:
    statement = (
        select(Tag.name)
        .join(ConversationTag, col(ConversationTag.tag_id) == Tag.id)
        .where(ConversationTag.conversation_id == conversation_id)
        .order_by(Tag.name)
    )
    return list(session.exec(statement).all())


def list_all_tags(*, session: Session) -> Sequence[Tag]:
    return session.exec(select(Tag).order_by(Tag.name)).all()


def get_conversation_review(*, session: Session, conversation_id: str) -> ConversationReview | None:
    statement = select(ConversationReview).where(ConversationReview.conversation_id == conversation_id)
    return session.exec(statement).first()


def mark_conversation(
    *,
    session: Session,
    conversation_id: str,
    reviewed: bool,
    use_for_training: bool,
    reviewer_id: int | None = None,
    expected_version: int,
) -> ConversationReview:
    """Mark a whole conversation reviewed and/or usable for training; versioned like `save_review`."""
    get_conversation(session=session, conversation_id=conversation_id)
    now = utcnow()
    try:
        if expected_version == 0:
            session.add(
                ConversationReview(
                    conversation_id=conversation_id,
                    reviewed=reviewed,
                    use_for_training=use_for_training,
                    reviewer_id=reviewer_id,
                    updated_at=now,
                )
            )
            session.flush()
        else:
            result = session.exec(
                update(ConversationReview)
                .where(
                    col(ConversationReview.conversation_id) == conversation_id,
                    col(ConversationReview.version) == expected_version,
                )
                .values(
                    reviewed=reviewed,
                    use_for_training=use_for_training,
                    reviewer_id=reviewer_id,
                    updated_at=now,
                    version=col(ConversationReview.version) + 1,
                )
            )
            if result.rowcount != 1:
                raise _StaleVersion
        session.commit()
    except (IntegrityError, _StaleVersion):
        session.rollback()
        current = get_conversation_review(session=session, conversation_id=conversation_id)
        raise ReviewConflict(
            f"the review mark of conversation {conversation_id}", expected_version, current.version if current else 0
        ) from None
    mark = get_conversation_review(session=session, conversation_id=conversation_id)
    assert mark is not None
    return mark


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
