"""The support desk's JSON API under /api/staff: assignment, internal notes, canned replies, duty and teams;
for admins, the alert webhooks and the delivery log. Same sign-in and CSRF rules as serving/console/api.py."""

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field, StrictBool

from conversations import crud
from conversations.models import (
    AlertDeliveryPublic,
    CannedReplyCreate,
    CannedReplyPublic,
    DeliveryStatus,
    DeskAssign,
    DeskTicket,
    NoteCreate,
    NotePublic,
    StaffAccountPublic,
    WebhookCreate,
    WebhookPublic,
)
from serving.console import desk_actions
from serving.deps import CurrentAdmin, CurrentStaff, Cursor, RowId, ServicesDep, SessionDep

router = APIRouter(prefix="/api/staff", tags=["staff desk"])


class TicketPublic(BaseModel):
    """Who should answer a conversation and its timers."""

    conversation_id: str
    assignee_id: int | None
    team: str | None
    assigned_at: str | None
    waiting_since: str
    first_response_at: str | None
    resolved_at: str | None
    reason: str | None
    outside_hours: bool
    customer_email: str | None
    language: str | None


def _ticket(ticket: DeskTicket) -> TicketPublic:
    def moment(value: object) -> str | None:
        return value.isoformat() if value is not None else None  # type: ignore[attr-defined]

    return TicketPublic(
        conversation_id=ticket.conversation_id, assignee_id=ticket.assignee_id, team=ticket.team,
        assigned_at=moment(ticket.assigned_at), waiting_since=ticket.waiting_since.isoformat(),
        first_response_at=moment(ticket.first_response_at), resolved_at=moment(ticket.resolved_at),
        reason=ticket.reason, outside_hours=ticket.outside_hours, customer_email=ticket.customer_email,
        language=ticket.language,
    )  # fmt: skip


class FilledReply(BaseModel):
    """A canned reply's text with this conversation's details in its placeholders."""

    text: str


class Duty(BaseModel):
    """Whether a teammate is on duty (gets alerts, takes part in round-robin), and their team."""

    on_duty: StrictBool
    team: str | None = Field(default=None, max_length=64)


class WebhookUpdate(BaseModel):
    active: StrictBool


@router.put("/conversations/{conversation_id}/assignment")
def assign(conversation_id: str, body: DeskAssign, signed: CurrentStaff, session: SessionDep) -> TicketPublic:
    """Assign to a teammate (`assignee_id`), a team, both, or neither (back to the unassigned queue)."""
    return _ticket(desk_actions.assign(session, signed, conversation_id, body.assignee_id, body.team))


@router.get("/conversations/{conversation_id}/assignment")
def read_assignment(conversation_id: str, signed: CurrentStaff, session: SessionDep) -> TicketPublic | None:
    crud.get_conversation(session=session, conversation_id=conversation_id)
    ticket = crud.get_ticket(session=session, conversation_id=conversation_id)
    return _ticket(ticket) if ticket else None


@router.get("/conversations/{conversation_id}/notes")
def list_notes(conversation_id: str, signed: CurrentStaff, session: SessionDep) -> list[NotePublic]:
    """Internal notes, oldest first: for teammates only, never shown to the customer."""
    crud.get_conversation(session=session, conversation_id=conversation_id)
    return [
        NotePublic.model_validate(note) for note in crud.list_notes(session=session, conversation_id=conversation_id)
    ]


@router.post("/conversations/{conversation_id}/notes", status_code=status.HTTP_201_CREATED)
def add_note(conversation_id: str, body: NoteCreate, signed: CurrentStaff, session: SessionDep) -> NotePublic:
    return NotePublic.model_validate(desk_actions.add_note(session, signed, conversation_id, body.text))


@router.get("/canned-replies")
def list_canned(signed: CurrentStaff, session: SessionDep) -> list[CannedReplyPublic]:
    return [CannedReplyPublic.model_validate(canned) for canned in crud.list_canned(session=session)]


@router.post("/canned-replies", status_code=status.HTTP_201_CREATED)
def create_canned(body: CannedReplyCreate, signed: CurrentStaff, session: SessionDep) -> CannedReplyPublic:
    """Placeholders: {customer_name}, {customer_email}, {order_number}, {product}, {agent_name}, {company_name}."""
    return CannedReplyPublic.model_validate(desk_actions.save_canned(session, signed, body.title, body.text))


@router.put("/canned-replies/{canned_id}")
def update_canned(
    canned_id: RowId, body: CannedReplyCreate, signed: CurrentStaff, session: SessionDep
) -> CannedReplyPublic:
    return CannedReplyPublic.model_validate(desk_actions.save_canned(session, signed, body.title, body.text, canned_id))


@router.delete("/canned-replies/{canned_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_canned(canned_id: RowId, signed: CurrentStaff, session: SessionDep) -> None:
    desk_actions.delete_canned(session, signed, canned_id)


@router.get("/conversations/{conversation_id}/canned-replies/{canned_id}")
def fill_canned(
    conversation_id: str, canned_id: RowId, signed: CurrentStaff, session: SessionDep, services: ServicesDep
) -> FilledReply:
    """The canned reply filled in for this conversation, to edit and send as a reply."""
    company = services.pack.company_name
    return FilledReply(text=desk_actions.fill_canned(session, signed, conversation_id, canned_id, company))


@router.put("/accounts/{staff_id}/duty")
def set_duty(staff_id: RowId, body: Duty, signed: CurrentStaff, session: SessionDep) -> StaffAccountPublic:
    """Go on or off duty and set a team: yourself, or anyone as an admin."""
    return StaffAccountPublic.model_validate(desk_actions.set_duty(session, signed, staff_id, body.on_duty, body.team))


@router.get("/webhooks")
def list_webhooks(signed: CurrentAdmin, session: SessionDep) -> list[WebhookPublic]:
    return [WebhookPublic.model_validate(webhook) for webhook in crud.list_webhooks(session=session)]


@router.post("/webhooks", status_code=status.HTTP_201_CREATED)
def add_webhook(body: WebhookCreate, signed: CurrentAdmin, session: SessionDep) -> WebhookPublic:
    """Every alert is POSTed to `url` as JSON, signed in X-Supportbot-Signature-256 (HMAC-SHA256 of the body)."""
    return WebhookPublic.model_validate(desk_actions.add_webhook(session, signed, body.name, body.url, body.secret))


@router.patch("/webhooks/{webhook_id}")
def update_webhook(webhook_id: RowId, body: WebhookUpdate, signed: CurrentAdmin, session: SessionDep) -> WebhookPublic:
    return WebhookPublic.model_validate(
        crud.set_webhook_active(session=session, webhook_id=webhook_id, active=body.active)
    )


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: RowId, signed: CurrentAdmin, session: SessionDep) -> None:
    desk_actions.remove_webhook(session, signed, webhook_id)


@router.get("/alerts/deliveries")
def list_deliveries(
    signed: CurrentAdmin,
    session: SessionDep,
    status: DeliveryStatus | None = None,
    offset: Cursor = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertDeliveryPublic]:
    """The delivery log, newest first: every alert e-mail and webhook call, its attempts and last error."""
    found = crud.list_deliveries(session=session, status=status, offset=offset, limit=limit)
    return [AlertDeliveryPublic.model_validate(delivery) for delivery in found]
