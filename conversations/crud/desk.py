"""The support desk around takeovers: who should answer (teammate, team or the unassigned queue) and the
first-response and resolution timers, internal notes, canned replies, webhooks and the alert delivery queue."""

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, or_, select

from conversations.crud.conversations import get_conversation
from conversations.crud.errors import CannedReplyNotFound, StaffNotFound, TitleTaken, WebhookNotFound
from conversations.models import (
    AlertDelivery,
    CannedReply,
    Conversation,
    ConversationStatus,
    DeliveryStatus,
    DeskTicket,
    Note,
    StaffAccount,
    Webhook,
    utcnow,
)

# --- Tickets: assignment and timers ---


def get_ticket(*, session: Session, conversation_id: str) -> DeskTicket | None:
    return session.get(DeskTicket, conversation_id)


def list_tickets(*, session: Session, conversation_ids: Sequence[str]) -> dict[str, DeskTicket]:
    if not conversation_ids:
        return {}
    statement = select(DeskTicket).where(col(DeskTicket.conversation_id).in_(conversation_ids))
    return {ticket.conversation_id: ticket for ticket in session.exec(statement).all()}


def open_ticket(
    *, session: Session, conversation_id: str, reason: str | None, outside_hours: bool = False,
    language: str | None = None, now: datetime | None = None,
) -> DeskTicket:  # fmt: skip
    """The conversation now waits for a human: its timers start again (a reopened one is a new wait); the
    assignment, the customer's e-mail and the language are kept."""
    get_conversation(session=session, conversation_id=conversation_id)
    ticket = get_ticket(session=session, conversation_id=conversation_id) or DeskTicket(conversation_id=conversation_id)
    ticket.waiting_since = now or utcnow()
    ticket.first_response_at = None
    ticket.resolved_at = None
    ticket.reason = reason[:200] if reason else None
    ticket.outside_hours = outside_hours
    ticket.language = language or ticket.language
    session.add(ticket)
    session.commit()
    session.refresh(ticket)
    return ticket


def _ticket(session: Session, conversation_id: str) -> DeskTicket:
    get_conversation(session=session, conversation_id=conversation_id)
    return get_ticket(session=session, conversation_id=conversation_id) or DeskTicket(conversation_id=conversation_id)


def assign_ticket(
    *, session: Session, conversation_id: str, assignee_id: int | None, team: str | None, now: datetime | None = None
) -> DeskTicket:
    """Give the conversation to a teammate, a team, both, or neither (back to the unassigned queue)."""
    if assignee_id is not None:
        account = session.get(StaffAccount, assignee_id)
        if account is None or not account.active:
            raise StaffNotFound(assignee_id)
    ticket = _ticket(session, conversation_id)
    ticket.assignee_id = assignee_id
    ticket.team = team.strip().lower() if team and team.strip() else None
    ticket.assigned_at = (now or utcnow()) if (assignee_id is not None or ticket.team) else None
    session.add(ticket)
    session.commit()
    session.refresh(ticket)
    return ticket


def next_in_turn(*, session: Session, team: str | None = None, skip: int | None = None) -> StaffAccount | None:
    """The active, on-duty teammate (of `team`, when given) whose last assignment is the oldest: round-robin
    that keeps its place across restarts and app replicas, since it is read from the tickets themselves."""
    last_assigned = (
        select(DeskTicket.assignee_id, func.max(DeskTicket.assigned_at).label("last"))
        .where(col(DeskTicket.assignee_id).is_not(None))
        .group_by(col(DeskTicket.assignee_id))
        .subquery()
    )
    statement = (
        select(StaffAccount)
        .outerjoin(last_assigned, last_assigned.c.assignee_id == col(StaffAccount.id))
        .where(col(StaffAccount.active), col(StaffAccount.on_duty))
    )
    if team:
        statement = statement.where(col(StaffAccount.team) == team)
    if skip is not None:
        statement = statement.where(col(StaffAccount.id) != skip)
    # Never assigned first, then the longest since their last one.
    statement = statement.order_by(last_assigned.c.last.is_not(None), last_assigned.c.last, col(StaffAccount.id))
    return session.exec(statement.limit(1)).first()


def unanswered_assigned(*, session: Session, assigned_before: datetime) -> Sequence[DeskTicket]:
    """Tickets assigned to a teammate before `assigned_before` whose customer still waits for a first answer."""
    statement = (
        select(DeskTicket)
        .join(Conversation, col(Conversation.id) == col(DeskTicket.conversation_id))
        .where(
            col(DeskTicket.assignee_id).is_not(None),
            col(DeskTicket.assigned_at) < assigned_before,
            col(DeskTicket.first_response_at).is_(None),
            col(DeskTicket.resolved_at).is_(None),
            col(Conversation.status) == ConversationStatus.pending_human,
        )
        .order_by(col(DeskTicket.assigned_at))
    )
    return session.exec(statement).all()


def reassign_ticket(
    *, session: Session, conversation_id: str, previous_id: int, assignee_id: int, assigned_before: datetime,
    now: datetime | None = None,
) -> DeskTicket | None:  # fmt: skip
    """Move a ticket nobody answered from `previous_id` to `assignee_id`, if it is still as `unanswered_assigned`
    found it: theirs since before `assigned_before`, unanswered, waiting. One conditional UPDATE, so when app
    replicas sweep at once one of them moves it and the others get None."""
    waiting = select(Conversation.id).where(col(Conversation.status) == ConversationStatus.pending_human)
    moved = session.exec(  # type: ignore[call-overload]
        update(DeskTicket)
        .where(
            col(DeskTicket.conversation_id) == conversation_id,
            col(DeskTicket.assignee_id) == previous_id,
            col(DeskTicket.assigned_at) < assigned_before,
            col(DeskTicket.first_response_at).is_(None),
            col(DeskTicket.resolved_at).is_(None),
            col(DeskTicket.conversation_id).in_(waiting),
        )
        .values(assignee_id=assignee_id, assigned_at=now or utcnow())
    )
    session.commit()
    if not moved.rowcount:
        return None
    return get_ticket(session=session, conversation_id=conversation_id)


def record_first_response(*, session: Session, conversation_id: str, now: datetime | None = None) -> None:
    """A teammate answered: the first-response timer stops (later answers leave it alone)."""
    ticket = _ticket(session, conversation_id)
    if ticket.first_response_at is None:
        ticket.first_response_at = now or utcnow()
        session.add(ticket)
        session.commit()


def record_resolution(*, session: Session, conversation_id: str, now: datetime | None = None) -> None:
    ticket = get_ticket(session=session, conversation_id=conversation_id)
    if ticket is not None and ticket.resolved_at is None:
        ticket.resolved_at = now or utcnow()
        session.add(ticket)
        session.commit()


def set_customer_email(*, session: Session, conversation_id: str, email: str | None) -> DeskTicket:
    """Where staff replies are also e-mailed; None stops that."""
    ticket = _ticket(session, conversation_id)
    ticket.customer_email = email
    session.add(ticket)
    session.commit()
    session.refresh(ticket)
    return ticket


def on_duty_emails(*, session: Session, team: str | None = None, staff_id: int | None = None) -> list[str]:
    """Who gets an alert: one teammate (when `staff_id` names an active account), else the on-duty staff of
    `team`, else every on-duty staff member."""
    if staff_id is not None:
        account = session.get(StaffAccount, staff_id)
        if account is not None and account.active:
            return [account.email]
    statement = select(StaffAccount.email).where(col(StaffAccount.active), col(StaffAccount.on_duty))
    if team:
        in_team = list(session.exec(statement.where(col(StaffAccount.team) == team)).all())
        if in_team:
            return in_team
    return list(session.exec(statement.order_by(col(StaffAccount.id))).all())


def update_duty(*, session: Session, staff_id: int, on_duty: bool, team: str | None) -> StaffAccount:
    """Set a teammate on or off duty and their team (empty: none)."""
    account = session.get(StaffAccount, staff_id)
    if account is None:
        raise StaffNotFound(staff_id)
    account.on_duty = on_duty
    account.team = team.strip().lower() if team and team.strip() else None
    session.add(account)
    session.commit()
    session.refresh(account)
    return account


# --- Internal notes ---


def add_note(*, session: Session, conversation_id: str, staff_id: int, author: str, text: str) -> Note:
    get_conversation(session=session, conversation_id=conversation_id)
    note = Note(conversation_id=conversation_id, staff_id=staff_id, author=author, text=text)
    session.add(note)
    session.commit()
    session.refresh(note)
    return note


def list_notes(*, session: Session, conversation_id: str) -> Sequence[Note]:
    statement = select(Note).where(Note.conversation_id == conversation_id).order_by(col(Note.id))
    return session.exec(statement).all()


# --- Canned replies ---

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def list_canned(*, session: Session) -> Sequence[CannedReply]:
    return session.exec(select(CannedReply).order_by(col(CannedReply.title))).all()


def get_canned(*, session: Session, canned_id: int) -> CannedReply:
    canned = session.get(CannedReply, canned_id)
    if canned is None:
        raise CannedReplyNotFound(canned_id)
    return canned


def save_canned(
    *, session: Session, title: str, text: str, staff_id: int | None, canned_id: int | None = None
) -> CannedReply:
    """Add a canned reply, or change the one with `canned_id`; titles are unique."""
    canned = get_canned(session=session, canned_id=canned_id) if canned_id is not None else CannedReply(title=title)
    canned.title, canned.text, canned.updated_at = title.strip(), text, utcnow()
    if canned.created_by is None:
        canned.created_by = staff_id
    session.add(canned)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise TitleTaken(title) from None
    session.refresh(canned)
    return canned


def delete_canned(*, session: Session, canned_id: int) -> None:
    session.delete(get_canned(session=session, canned_id=canned_id))
    session.commit()


def fill_placeholders(text: str, values: Mapping[str, str | None]) -> str:
    """`text` with each {name} replaced by its value; a placeholder without a value is kept as written, so
    the teammate sees what is still to fill in before sending."""
    return PLACEHOLDER.sub(lambda match: values.get(match.group(1)) or match.group(0), text)


# --- Webhooks ---


def list_webhooks(*, session: Session, active_only: bool = False) -> Sequence[Webhook]:
    statement = select(Webhook).order_by(col(Webhook.id))
    if active_only:
        statement = statement.where(col(Webhook.active))
    return session.exec(statement).all()


def get_webhook(*, session: Session, webhook_id: int) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None:
        raise WebhookNotFound(webhook_id)
    return webhook


def create_webhook(*, session: Session, name: str, url: str, secret: str, active: bool = True) -> Webhook:
    webhook = Webhook(name=name.strip(), url=url.strip(), secret=secret, active=active)
    session.add(webhook)
    session.commit()
    session.refresh(webhook)
    return webhook


def set_webhook_active(*, session: Session, webhook_id: int, active: bool) -> Webhook:
    webhook = get_webhook(session=session, webhook_id=webhook_id)
    webhook.active = active
    session.add(webhook)
    session.commit()
    session.refresh(webhook)
    return webhook


def delete_webhook(*, session: Session, webhook_id: int) -> None:
    session.delete(get_webhook(session=session, webhook_id=webhook_id))
    session.commit()


# --- Alert deliveries: a queue in the database, so a restart loses none ---


def enqueue_alert(
    *, session: Session, event: str, conversation_id: str | None, payload: dict, emails: Sequence[str] = (),
    webhooks: bool = True,
) -> list[AlertDelivery]:  # fmt: skip
    """One delivery per e-mail recipient and per active webhook, stored (and committed) before any is tried."""
    rows = [AlertDelivery(kind="email", target=email, event=event, conversation_id=conversation_id,
                          payload=payload) for email in dict.fromkeys(emails)]  # fmt: skip
    if webhooks:
        rows += [
            AlertDelivery(kind="webhook", target=str(hook.id), event=event, conversation_id=conversation_id,
                          payload=payload)
            for hook in list_webhooks(session=session, active_only=True)
        ]  # fmt: skip
    session.add_all(rows)
    session.commit()
    for row in rows:
        session.refresh(row)
    return rows


def claim_due_deliveries(
    *, session: Session, now: datetime | None = None, hold_for: timedelta = timedelta(minutes=5), limit: int = 20
) -> list[AlertDelivery]:
    """Pending deliveries that are due and held by no other sender, now held by this one until `hold_for` from
    now. Each is taken with a conditional update, so two senders (app replicas) never send the same one."""
    now = now or utcnow()
    due = session.exec(
        select(AlertDelivery.id)
        .where(
            col(AlertDelivery.status) == DeliveryStatus.pending,
            col(AlertDelivery.next_attempt_at) <= now,
            or_(col(AlertDelivery.locked_until).is_(None), col(AlertDelivery.locked_until) < now),
        )
        .order_by(col(AlertDelivery.next_attempt_at), col(AlertDelivery.id))
        .limit(limit)
    ).all()
    claimed = []
    for delivery_id in due:
        taken = session.exec(  # type: ignore[call-overload]
            update(AlertDelivery)
            .where(
                col(AlertDelivery.id) == delivery_id,
                col(AlertDelivery.status) == DeliveryStatus.pending,
                or_(col(AlertDelivery.locked_until).is_(None), col(AlertDelivery.locked_until) < now),
            )
            .values(locked_until=now + hold_for)
        )
        session.commit()
        if taken.rowcount:
            claimed.append(delivery_id)
    if not claimed:
        return []
    return list(session.exec(select(AlertDelivery).where(col(AlertDelivery.id).in_(claimed))).all())


def finish_delivery(
    *, session: Session, delivery_id: int, error: str | None, max_attempts: int, retry_base_s: float,
    now: datetime | None = None,
) -> AlertDelivery:  # fmt: skip
    """Record one attempt: sent, or due again after a back-off that doubles each time, or failed for good."""
    now = now or utcnow()
    delivery = session.get(AlertDelivery, delivery_id)
    assert delivery is not None
    delivery.attempts += 1
    delivery.locked_until = None
    if error is None:
        delivery.status, delivery.sent_at, delivery.last_error = DeliveryStatus.sent, now, None
    else:
        delivery.last_error = error[:500]
        if delivery.attempts >= max_attempts:
            delivery.status = DeliveryStatus.failed
        else:
            delivery.next_attempt_at = now + timedelta(seconds=retry_base_s * 2 ** (delivery.attempts - 1))
    session.add(delivery)
    session.commit()
    session.refresh(delivery)
    return delivery


def next_delivery_due(*, session: Session) -> datetime | None:
    """When the next pending delivery falls due, so a sender can sleep until then."""
    return session.exec(
        select(func.min(AlertDelivery.next_attempt_at)).where(col(AlertDelivery.status) == DeliveryStatus.pending)
    ).one()


def list_deliveries(
    *, session: Session, status: DeliveryStatus | None = None, offset: int = 0, limit: int = 100
) -> Sequence[AlertDelivery]:
    """The delivery log, newest first."""
    statement = select(AlertDelivery)
    if status is not None:
        statement = statement.where(col(AlertDelivery.status) == status)
    return session.exec(statement.order_by(col(AlertDelivery.id).desc()).offset(offset).limit(limit)).all()
