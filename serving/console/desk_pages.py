"""The console's support-desk pages and forms: assignment and internal notes on a conversation, canned replies,
teammates' duty and teams, and (for admins) the alert webhooks with their delivery log."""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from conversations import crud
from conversations.models import DeliveryStatus
from serving.auth import SignedIn
from serving.console import desk_actions
from serving.console.pages import NOTICES, act, back, render, staff_page
from serving.deps import CurrentAdmin, CurrentStaff, RowId, Services, ServicesDep, SessionDep
from serving.errors import REPORTED, ApiError, as_api_error

router = APIRouter(prefix="/console", include_in_schema=False)

NOTICES.update(
    {
        "assigned": "Assignment saved.",
        "noted": "Note added: only teammates see it.",
        "canned_saved": "Canned reply saved.",
        "canned_deleted": "Canned reply deleted.",
        "duty_saved": "Duty and team saved.",
        "webhook_added": "Webhook added: every alert is sent to it from now on.",
        "webhook_deleted": "Webhook deleted.",
    }
)


def _optional_id(value: str) -> int | None:
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(422, "invalid_staff", "Pick a teammate from the list.") from None


@router.post("/conversations/{conversation_id}/assign")
def assign(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    assignee_id: Annotated[str, Form(max_length=12)] = "", team: Annotated[str, Form(max_length=64)] = "",
) -> Response:  # fmt: skip
    return act(
        request, signed, session, services, conversation_id, "assigned", "#desk",
        lambda: desk_actions.assign(session, signed, conversation_id, _optional_id(assignee_id), team or None),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/notes")
def add_note(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    text: Annotated[str, Form(max_length=20_000)],
) -> Response:  # fmt: skip
    return act(
        request, signed, session, services, conversation_id, "noted", "#notes-card",
        lambda: desk_actions.add_note(session, signed, conversation_id, text),
    )  # fmt: skip


def _form(session: Session, step: Callable[[], object], done: str, notice: str, page: Callable[[str, int], Response]):
    """Run one form's step; back to `done` on success, else `page` with the error (message and status)."""
    try:
        step()
    except REPORTED as failure:
        session.rollback()
        error = as_api_error(failure)
        return page(error.message, error.status)
    return back(done, notice)


# --- Canned replies ---


def canned_page(
    request: Request, signed: SignedIn, session: Session, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    return render(
        request, "canned.html", signed, status_code, section="canned", error=error,
        replies=crud.list_canned(session=session),
    )  # fmt: skip


@router.get("/canned")
def canned(signed: CurrentStaff, request: Request, session: SessionDep) -> HTMLResponse:
    return canned_page(request, signed, session)


@router.post("/canned")
def save_canned(
    signed: CurrentStaff, request: Request, session: SessionDep, title: Annotated[str, Form(max_length=200)],
    text: Annotated[str, Form(max_length=20_000)], canned_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:  # fmt: skip
    return _form(
        session, lambda: desk_actions.save_canned(session, signed, title, text, _optional_id(canned_id)),
        "/console/canned", "canned_saved",
        lambda message, status: canned_page(request, signed, session, message, status),
    )  # fmt: skip


@router.post("/canned/{canned_id}/delete")
def delete_canned(canned_id: RowId, signed: CurrentStaff, request: Request, session: SessionDep) -> Response:
    return _form(
        session, lambda: desk_actions.delete_canned(session, signed, canned_id), "/console/canned", "canned_deleted",
        lambda message, status: canned_page(request, signed, session, message, status),
    )  # fmt: skip


# --- Duty and teams (on the Staff page) ---


@router.post("/staff/{staff_id}/duty")
def set_duty(
    staff_id: RowId, signed: CurrentAdmin, request: Request, session: SessionDep,
    on_duty: Annotated[bool, Form()] = False, team: Annotated[str, Form(max_length=64)] = "",
) -> Response:  # fmt: skip
    return _form(
        session, lambda: desk_actions.set_duty(session, signed, staff_id, on_duty, team or None), "/console/staff",
        "duty_saved", lambda message, status: staff_page(request, signed, session, message, status),
    )  # fmt: skip


# --- Alerts: webhooks and the delivery log (admins) ---

DELIVERY_PAGE = 100


def alerts_page(
    request: Request, signed: SignedIn, session: Session, services: Services, status: str = "",
    error: str | None = None, status_code: int = 200,
) -> HTMLResponse:  # fmt: skip
    wanted = DeliveryStatus(status) if status in DeliveryStatus.__members__ else None
    return render(
        request, "alerts.html", signed, status_code, section="alerts", error=error, status=status,
        webhooks=crud.list_webhooks(session=session),
        deliveries=crud.list_deliveries(session=session, status=wanted, limit=DELIVERY_PAGE),
        email_on=bool(services.settings.smtp_host), statuses=list(DeliveryStatus),
    )  # fmt: skip


@router.get("/alerts")
def alerts(
    signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep, status: str = ""
) -> HTMLResponse:
    return alerts_page(request, signed, session, services, status)


@router.post("/alerts/webhooks")
def add_webhook(
    signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep,
    name: Annotated[str, Form(max_length=120)], url: Annotated[str, Form(max_length=1000)],
    secret: Annotated[str, Form(max_length=200)],
) -> Response:  # fmt: skip
    return _form(
        session, lambda: desk_actions.add_webhook(session, signed, name, url, secret), "/console/alerts",
        "webhook_added", lambda message, status: alerts_page(request, signed, session, services, "", message, status),
    )  # fmt: skip


@router.post("/alerts/webhooks/{webhook_id}/delete")
def delete_webhook(
    webhook_id: RowId, signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    return _form(
        session, lambda: desk_actions.remove_webhook(session, signed, webhook_id), "/console/alerts",
        "webhook_deleted", lambda message, status: alerts_page(request, signed, session, services, "", message, status),
    )  # fmt: skip
