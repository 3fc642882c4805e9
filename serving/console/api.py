"""The staff JSON API under /api/staff: what the console does, for tests and tools.

It opens only with a staff session cookie (sign in with POST /api/staff/session); state-changing calls
also send the session's CSRF token in the `X-CSRF-Token` header. Account and audit routes are for admins.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field, StrictBool

from conversations import crud
from conversations.models import (
    ActionCallPublic,
    AuditLogPublic,
    ConversationReviewCreate,
    ConversationReviewPublic,
    IntentRelabelCreate,
    IntentRelabelPublic,
    MessageCreate,
    ReviewCreate,
    ReviewPublic,
    StaffAccountCreate,
    StaffAccountPublic,
    StaffRole,
    TagCreate,
)
from serving.auth import sign_in, sign_out
from serving.console import actions, views
from serving.console.signin import check_credentials
from serving.deps import CurrentAdmin, CurrentStaff, Cursor, RowId, ServicesDep, SessionDep

router = APIRouter(prefix="/api/staff", tags=["staff"])


class Credentials(BaseModel):
    """A staff member's sign-in."""

    email: str = Field(max_length=254)
    password: str = Field(max_length=256)


class StaffSessionPublic(BaseModel):
    """Who is signed in, and the CSRF token to send with every state-changing call."""

    staff: StaffAccountPublic
    csrf_token: str


class Tags(BaseModel):
    """A conversation's tags, in name order."""

    tags: list[str]


class StaffAccountUpdate(BaseModel):
    """What an admin may change on an account."""

    # Strict: `0` or "no" must not quietly deactivate someone (found by tests/serving/test_fuzz.py).
    active: StrictBool | None = None
    role: StaffRole | None = None


@router.post("/session")
def start_session(
    body: Credentials, request: Request, response: Response, session: SessionDep, services: ServicesDep
) -> StaffSessionPublic:
    """Sign in: sets the HttpOnly session cookie and returns the CSRF token."""
    account = check_credentials(session, request, body.email, body.password)
    staff_session = sign_in(session, account, response, services.settings)
    return StaffSessionPublic(staff=StaffAccountPublic.model_validate(account), csrf_token=staff_session.csrf_token)


@router.get("/session")
def read_session(signed: CurrentStaff) -> StaffSessionPublic:
    return StaffSessionPublic(staff=StaffAccountPublic.model_validate(signed.staff), csrf_token=signed.csrf_token)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
def end_session(signed: CurrentStaff, request: Request, session: SessionDep) -> Response:
    """Sign out: the session ends on the server at once."""
    crud.record_audit(session=session, actor_id=signed.staff.id, action="sign_out", target=f"staff:{signed.staff.id}")
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    sign_out(session, request, response)
    return response


@router.get("/conversations")
def list_conversations(
    signed: CurrentStaff,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    offset: Cursor = 0,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE_SIZE)] = views.PAGE_SIZE,
) -> views.InboxPage:
    """The inbox, waiting-for-a-human first. Filters: status, created_from, created_to, intent, rating
    (review good/bad), feedback (customer up/down), handed_off, low_confidence (a threshold), reviewed,
    use_for_training, tag, search (words in any message), channel, queue (unassigned or mine), team.
    Each row carries the desk's first-response and resolution timers and whether they are overdue."""
    filters = views.inbox_filter(dict(request.query_params), offset=offset, limit=limit, staff_id=signed.staff.id)
    return views.inbox_page(session, filters, views.DeskTargets.of(services.settings))


@router.get("/conversations/{conversation_id}")
def read_conversation(conversation_id: str, signed: CurrentStaff, session: SessionDep) -> views.StaffTranscript:
    """Every turn with its intent, confidence, routing decision, adapter, the customer's ratings and reviews."""
    return views.transcript(session, conversation_id)


@router.post("/conversations/{conversation_id}/claim")
def claim(
    conversation_id: str, signed: CurrentStaff, session: SessionDep, force: bool = False
) -> views.StaffConversation:
    """Take the conversation over; the bot stays silent until it is handed back. With `force`, an admin
    takes it from the colleague who has it."""
    conversation = actions.claim(session, signed, conversation_id, force)
    return views.staff_conversation(session, conversation)


@router.post("/conversations/{conversation_id}/messages", status_code=status.HTTP_201_CREATED)
def reply(
    conversation_id: str, body: MessageCreate, signed: CurrentStaff, session: SessionDep, services: ServicesDep
) -> views.StaffMessage:
    """Answer the customer; their widget shows the reply under the staff member's name."""
    message = actions.reply(
        session, signed, conversation_id, body.text, services.settings.max_message_chars, services.desk
    )
    return views.StaffMessage.model_validate(message, from_attributes=True)


@router.post("/conversations/{conversation_id}/hand-back")
def hand_back(conversation_id: str, signed: CurrentStaff, session: SessionDep) -> views.StaffConversation:
    conversation = actions.hand_back(session, signed, conversation_id)
    return views.staff_conversation(session, conversation)


@router.post("/conversations/{conversation_id}/resolve")
def resolve(conversation_id: str, signed: CurrentStaff, session: SessionDep) -> views.StaffConversation:
    conversation = actions.resolve(session, signed, conversation_id)
    return views.staff_conversation(session, conversation)


@router.put("/conversations/{conversation_id}/messages/{message_id}/review")
def review_reply(
    conversation_id: str, message_id: RowId, body: ReviewCreate, signed: CurrentStaff, session: SessionDep
) -> ReviewPublic:
    """Mark a bot reply good or bad, with the reply it should have given; send the version you edited."""
    saved = actions.review(session, signed, conversation_id, message_id, body)
    return ReviewPublic.model_validate(saved, from_attributes=True)


@router.put("/conversations/{conversation_id}/messages/{message_id}/intent")
def relabel_intent(
    conversation_id: str,
    message_id: RowId,
    body: IntentRelabelCreate,
    signed: CurrentStaff,
    session: SessionDep,
    services: ServicesDep,
) -> IntentRelabelPublic:
    """Correct the intent predicted for a customer message (one of the domain pack's intents)."""
    known = {intent.name for intent in services.pack.intents}
    saved = actions.relabel(session, signed, conversation_id, message_id, body.new_intent, known)
    return IntentRelabelPublic.model_validate(saved, from_attributes=True)


@router.post("/conversations/{conversation_id}/tags")
def add_tag(conversation_id: str, body: TagCreate, signed: CurrentStaff, session: SessionDep) -> Tags:
    return Tags(tags=actions.add_tag(session, signed, conversation_id, body.name))


@router.delete("/conversations/{conversation_id}/tags/{name}")
def remove_tag(conversation_id: str, name: str, signed: CurrentStaff, session: SessionDep) -> Tags:
    return Tags(tags=actions.remove_tag(session, conversation_id, name))


@router.put("/conversations/{conversation_id}/review")
def mark_conversation(
    conversation_id: str, body: ConversationReviewCreate, signed: CurrentStaff, session: SessionDep
) -> ConversationReviewPublic:
    """Mark the conversation reviewed and whether to use it for training; send the version you edited."""
    saved = actions.mark(session, signed, conversation_id, body)
    return ConversationReviewPublic.model_validate(saved, from_attributes=True)


@router.get("/accounts")
def list_accounts(signed: CurrentAdmin, session: SessionDep) -> list[StaffAccountPublic]:
    return [StaffAccountPublic.model_validate(account) for account in crud.list_staff(session=session)]


@router.post("/accounts", status_code=status.HTTP_201_CREATED)
def create_account(body: StaffAccountCreate, signed: CurrentAdmin, session: SessionDep) -> StaffAccountPublic:
    account = actions.create_account(
        session, signed, email=body.email, display_name=body.display_name, password=body.password, role=body.role
    )
    return StaffAccountPublic.model_validate(account)


@router.patch("/accounts/{staff_id}")
def update_account(
    staff_id: RowId, body: StaffAccountUpdate, signed: CurrentAdmin, session: SessionDep
) -> StaffAccountPublic:
    """Deactivate (signs the account out at once), reactivate, or change the role of an account."""
    account = actions.update_account(session, signed, staff_id, active=body.active, role=body.role)
    return StaffAccountPublic.model_validate(account)


@router.get("/action-calls")
def read_action_calls(
    signed: CurrentStaff,
    session: SessionDep,
    failed: bool | None = None,
    changes: bool | None = None,
    conversation_id: str | None = None,
    offset: Cursor = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ActionCallPublic]:
    """The bot's calls to the company's systems, newest first, personal data masked: `failed=true` lists the
    failures, `changes=true` the audit of orders changed (or declined) for customers."""
    calls = crud.list_action_calls(
        session=session, failed=failed, changes=changes, conversation_id=conversation_id, offset=offset, limit=limit
    )
    return [ActionCallPublic.model_validate(call) for call in calls]


@router.get("/audit")
def read_audit(
    signed: CurrentAdmin,
    session: SessionDep,
    action: str | None = None,
    offset: Cursor = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditLogPublic]:
    """The audit log, newest first: admin actions, sign-ins and every takeover step."""
    entries = crud.list_audit(session=session, action=action, offset=offset, limit=limit)
    return [AuditLogPublic.model_validate(entry) for entry in entries]
