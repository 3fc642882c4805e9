"""What staff do at the support desk, shared by the console's forms and the JSON API: assign, note, answer
with a canned reply, set duty, manage webhooks. Each step is stored and audited where it must be."""

from sqlmodel import Session

from conversations import crud
from conversations.models import CannedReply, DeskTicket, Note, StaffAccount, Webhook
from serving.auth import SignedIn
from serving.chat import clean_text
from serving.errors import ApiError

# Notes and canned replies are at most this long (the columns' size).
NOTE_CHARS = 4000


def _target(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


def assign(
    session: Session, signed: SignedIn, conversation_id: str, assignee_id: int | None, team: str | None
) -> DeskTicket:
    """Give the conversation to a teammate or a team, or put it back in the unassigned queue."""
    before = crud.get_ticket(session=session, conversation_id=conversation_id)
    if team is not None and len(team.strip()) > 64:
        raise ApiError(422, "invalid_team", "A team name is at most 64 characters.")
    ticket = crud.assign_ticket(session=session, conversation_id=conversation_id, assignee_id=assignee_id, team=team)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="desk.assign", target=_target(conversation_id),
        details={"from_staff": before.assignee_id if before else None, "to_staff": assignee_id, "team": ticket.team},
    )  # fmt: skip
    return ticket


def add_note(session: Session, signed: SignedIn, conversation_id: str, text: str) -> Note:
    """An internal note for teammates; customers never see it."""
    assert signed.staff.id is not None
    return crud.add_note(
        session=session, conversation_id=conversation_id, staff_id=signed.staff.id,
        author=signed.staff.display_name, text=clean_text(text, NOTE_CHARS),
    )  # fmt: skip


def save_canned(session: Session, signed: SignedIn, title: str, text: str, canned_id: int | None = None) -> CannedReply:
    title = " ".join(title.split())
    if not title or len(title) > 120:
        raise ApiError(422, "invalid_title", "A canned reply needs a title of 1 to 120 characters.")
    canned = crud.save_canned(
        session=session, title=title, text=clean_text(text, NOTE_CHARS), staff_id=signed.staff.id, canned_id=canned_id
    )
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="desk.canned_save", target=f"canned:{canned.id}",
        details={"title": canned.title},
    )  # fmt: skip
    return canned


def delete_canned(session: Session, signed: SignedIn, canned_id: int) -> None:
    crud.delete_canned(session=session, canned_id=canned_id)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="desk.canned_delete", target=f"canned:{canned_id}"
    )


def placeholder_values(session: Session, signed: SignedIn, conversation_id: str, company: str) -> dict[str, str | None]:
    """What a canned reply's placeholders stand for in this conversation: {customer_name}, {customer_email},
    {order_number}, {product} (details the customer gave), {agent_name}, {company_name}."""
    conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
    slots = dict(conversation.slots or {})
    ticket = crud.get_ticket(session=session, conversation_id=conversation_id)
    return {
        "customer_name": slots.get("customer_name"),
        "customer_email": (ticket.customer_email if ticket else None) or slots.get("email"),
        "order_number": slots.get("order_number"),
        "product": slots.get("product"),
        "agent_name": signed.staff.display_name,
        "company_name": company,
    }


def fill_canned(session: Session, signed: SignedIn, conversation_id: str, canned_id: int, company: str) -> str:
    """The canned reply's text for this conversation; placeholders without a value stay for the teammate to fill."""
    canned = crud.get_canned(session=session, canned_id=canned_id)
    values = placeholder_values(session, signed, conversation_id, company)
    return crud.fill_placeholders(canned.text, values)


def set_duty(session: Session, signed: SignedIn, staff_id: int, on_duty: bool, team: str | None) -> StaffAccount:
    """Staff set their own duty and team; admins set anyone's."""
    if staff_id != signed.staff.id and not signed.is_admin:
        raise ApiError(403, "admins_only", "Only admins may change a colleague's duty or team.")
    if team is not None and len(team.strip()) > 64:
        raise ApiError(422, "invalid_team", "A team name is at most 64 characters.")
    account = crud.update_duty(session=session, staff_id=staff_id, on_duty=on_duty, team=team)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="desk.duty", target=f"staff:{staff_id}",
        details={"on_duty": on_duty, "team": account.team},
    )  # fmt: skip
    return account


def add_webhook(session: Session, signed: SignedIn, name: str, url: str, secret: str) -> Webhook:
    if not url.startswith(("http://", "https://")):
        raise ApiError(422, "invalid_url", "A webhook URL starts with http:// or https://.")
    if len(secret) < 16:
        raise ApiError(422, "weak_secret", "The signing secret needs at least 16 characters.")
    webhook = crud.create_webhook(session=session, name=name, url=url, secret=secret)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="desk.webhook_add", target=f"webhook:{webhook.id}",
        details={"name": webhook.name, "url": webhook.url},
    )  # fmt: skip
    return webhook


def remove_webhook(session: Session, signed: SignedIn, webhook_id: int) -> None:
    crud.delete_webhook(session=session, webhook_id=webhook_id)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="desk.webhook_delete", target=f"webhook:{webhook_id}"
    )
