"""Customer data rights for admins: find what is stored about a customer by e-mail, export it as JSON, erase it
everywhere. Console page /console/customers and JSON under /api/staff/customers; every export and erasure is
audited (the audit entry keeps counts, never the address)."""

import json
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlmodel import Session

from conversations import crud
from conversations.data_rights import InvalidEmail, erase_customer, export_customer, find_customer
from conversations.models import Conversation
from serving.auth import SignedIn
from serving.console.pages import NOTICES, back, render
from serving.deps import CurrentAdmin, ServicesDep, SessionDep
from serving.errors import ApiError
from serving.services import Services

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/staff/customers", tags=["staff data rights"])

Email = Annotated[str, Query(min_length=3, max_length=254)]
NOTICES["erased"] = "Erased: nothing about this customer is left in the store or the training datasets."


class CustomerConversation(BaseModel):
    """A conversation that holds the customer's address."""

    id: str
    channel: str
    status: str
    created_at: str
    messages: int


class ErasureRequest(BaseModel):
    """The address to erase, typed twice so a slip of the keyboard erases nobody else."""

    email: str = Field(min_length=3, max_length=254)
    confirm_email: str = Field(min_length=3, max_length=254)


class ErasurePublic(BaseModel):
    conversations: int
    messages: int
    datasets: int
    reports: int
    rate_counts: int
    audit_entries: int


def _found(session: Session, email: str) -> list[Conversation]:
    try:
        return find_customer(session=session, email=email)
    except InvalidEmail as error:
        raise ApiError(422, "invalid_email", str(error)) from None


def _summaries(session: Session, conversations: list[Conversation]) -> list[CustomerConversation]:
    details = crud.inbox_details(session=session, conversation_ids=[c.id for c in conversations])
    return [
        CustomerConversation(
            id=c.id,
            channel=c.channel,
            status=str(c.status),
            created_at=c.created_at.isoformat(),
            messages=details[c.id].messages,
        )  # fmt: skip
        for c in conversations
    ]


def _export(session: Session, signed: SignedIn, email: str) -> Response:
    _found(session, email)
    document = export_customer(session=session, email=email)
    crud.record_audit(
        session=session, actor_id=signed.staff.id, action="data.export", target="customer",
        details={"conversations": len(document["conversations"])},
    )  # fmt: skip
    return Response(
        json.dumps(document, indent=2, ensure_ascii=False), media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="customer-data.json"', "Cache-Control": "no-store"},
    )  # fmt: skip


def _erase(session: Session, signed: SignedIn, services: Services, email: str, confirm: str) -> ErasurePublic:
    if email.strip().lower() != confirm.strip().lower():
        raise ApiError(422, "confirmation_differs", "Type the same address twice to erase it.")
    _found(session, email)
    erased = erase_customer(session=session, email=email, datasets_dir=services.settings.data_dir / "datasets")
    crud.record_audit(session=session, actor_id=signed.staff.id, action="data.erase", target="customer",
                      details=asdict(erased))  # fmt: skip
    return ErasurePublic(**asdict(erased))


@router.get("/console/customers")
def customers_page(
    signed: CurrentAdmin, request: Request, session: SessionDep, email: Annotated[str, Query(max_length=254)] = ""
) -> HTMLResponse:
    found, error = None, None
    if email.strip():
        try:
            found = _summaries(session, _found(session, email))
        except ApiError as failure:
            error = failure.message
    return render(
        request, "customers.html", signed, 422 if error else 200, section="customers", email=email, found=found,
        error=error,
    )  # fmt: skip


@router.get("/console/customers/export")
def export_page(signed: CurrentAdmin, session: SessionDep, email: Email) -> Response:
    return _export(session, signed, email)


@router.post("/console/customers/erase")
def erase_page(
    signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep,
    email: Annotated[str, Form(max_length=254)], confirm_email: Annotated[str, Form(max_length=254)],
) -> Response:  # fmt: skip
    try:
        _erase(session, signed, services, email, confirm_email)
    except ApiError as error:
        found = _summaries(session, find_customer(session=session, email=email)) if "@" in email else None
        return render(
            request, "customers.html", signed, error.status, section="customers", email=email, found=found,
            error=error.message,
        )  # fmt: skip
    return back("/console/customers", "erased")


@api.get("")
def find(signed: CurrentAdmin, session: SessionDep, email: Email) -> list[CustomerConversation]:
    """The conversations that hold this e-mail address (given by the customer, in any message, note or comment)."""
    return _summaries(session, _found(session, email))


@api.get("/export")
def export(signed: CurrentAdmin, session: SessionDep, email: Email) -> Response:
    """Everything stored about the customer as one JSON document (a download); audited."""
    return _export(session, signed, email)


@api.post("/erase")
def erase(body: ErasureRequest, signed: CurrentAdmin, session: SessionDep, services: ServicesDep) -> ErasurePublic:
    """Erase the customer everywhere: conversations, messages and all that points at them, training datasets built
    from them, samples quoted in retraining reports; audited with the counts only."""
    return _erase(session, signed, services, body.email, body.confirm_email)
