"""The staff console's pages under /console, rendered on the server; forms post back and redirect.

Small scripts (static/console.js) keep the inbox and an open transcript up to date by polling.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from conversations import crud
from conversations.models import ConversationReviewCreate, ReviewCreate, RunStatus, StaffRole
from runtime.registry import AdapterRegistry
from serving.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    MIN_PASSWORD_CHARS,
    SignedIn,
    StaffAuthError,
    new_login_csrf,
    same_token,
    set_login_csrf,
    sign_in,
    sign_out,
    signed_in,
)
from serving.console import actions, desk_actions, views
from serving.console.signin import check_credentials, safe_next
from serving.deps import CurrentAdmin, CurrentStaff, Cursor, RowId, Services, ServicesDep, SessionDep
from serving.errors import REPORTED, ApiError, as_api_error

router = APIRouter(prefix="/console", include_in_schema=False)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["status_labels"] = {
    "pending_human": "waiting for a human",
    "human": "with staff",
    "bot": "with the bot",
    "resolved": "resolved",
}
# Threshold the inbox's "low confidence" box filters with.
LOW_CONFIDENCE = 0.5
NOTICES = {
    "claimed": "You have taken over this conversation; the bot stays silent until you hand it back.",
    "sent": "Reply sent.",
    "handed_back": "Handed back to the bot.",
    "resolved": "Conversation resolved.",
    "reviewed": "Review saved.",
    "relabelled": "Intent relabelled.",
    "tagged": "Tags updated.",
    "marked": "Conversation review saved.",
    "created": "Account created.",
    "updated": "Account updated.",
    "signed_out": "You are signed out.",
    "retrain_started": "Retraining started.",
    "cancel_requested": "Cancel requested: the run stops at its next step and keeps a checkpoint to resume from.",
    "resumed": "The run resumes from its last checkpoint.",
    "promoted": "Adapter promoted: it answers customers within seconds.",
    "rolled_back": "Rolled back to the previously promoted adapter.",
    "article_created": "Article added: the bot answers from it from the next message on.",
    "article_saved": "Article saved as a new version: the bot answers from it from the next message on.",
    "article_unchanged": "Nothing changed, so no new version was saved.",
    "article_retired": "Article retired: the bot no longer answers from it. Its history is kept.",
    "article_restored": "Article restored: the bot answers from it again.",
    "snippet_created": "Snippet added from the teammate's answer: the bot answers from it from the next message on.",
    "gap_dismissed": "Dismissed: that answer will not become a snippet.",
}


def _utc(moment: datetime) -> datetime:
    # SQLite gives stored UTC times back without their zone.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, rest = divmod(max(round(seconds), 0), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


templates.env.filters["utc"] = _utc
templates.env.filters["duration"] = _duration


def render(
    request: Request, name: str, signed: SignedIn | None, status_code: int = 200, **context: object
) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    context = {"signed": signed, "notice": notice, "error": None, **context}
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    # Pages show customers' words and staff data: never cached, never framed by another site.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
    return response


def back(url: str, notice: str, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"{url}?notice={notice}{anchor}", status_code=303)


# --- Signing in and out ---


@router.get("/login")
def login_page(request: Request, session: SessionDep, services: ServicesDep, next: str = "/console") -> Response:
    if signed_in(session, request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return login_form(request, services, next=next)


def login_form(
    request: Request, services: Services, *, next: str, email: str = "", error: str | None = None, status_code=200
) -> HTMLResponse:
    token = new_login_csrf()
    response = render(
        request, "login.html", None, status_code, login_csrf=token, next=safe_next(next), email=email, error=error
    )
    set_login_csrf(response, token, services.settings)
    return response


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "/console",
) -> Response:
    if not same_token(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        error = "The sign-in form expired; please try again."
        return login_form(request, services, next=next, email=email, error=error, status_code=403)
    try:
        account = check_credentials(session, request, email, password)
    except StaffAuthError as failure:
        return login_form(request, services, next=next, email=email, error=failure.message, status_code=failure.status)
    response = RedirectResponse(safe_next(next), status_code=303)
    sign_in(session, account, response, services.settings)
    return response


@router.post("/logout")
def logout(signed: CurrentStaff, request: Request, session: SessionDep) -> Response:
    crud.record_audit(session=session, actor_id=signed.staff.id, action="sign_out", target=f"staff:{signed.staff.id}")
    response = RedirectResponse("/console/login?notice=signed_out", status_code=303)
    sign_out(session, request, response)
    return response


# --- Inbox ---


def _inbox(
    request: Request, session: SessionDep, signed: SignedIn, services: Services
) -> tuple[views.InboxPage | None, dict[str, str], str | None]:
    params = dict(request.query_params)
    try:
        offset = max(int(params.get("offset", "0")), 0)
    except ValueError:
        offset = 0
    try:
        filters = views.inbox_filter(params, offset=offset, staff_id=signed.staff.id)
        return views.inbox_page(session, filters, views.DeskTargets.of(services.settings)), params, None
    except ApiError as error:
        return None, params, error.message


@router.get("")
def inbox(signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep) -> HTMLResponse:
    """Every conversation, filtered; those waiting for a human come first."""
    page, params, error = _inbox(request, session, signed, services)
    kept = {name: value for name, value in params.items() if name in views.FILTER_FIELDS and value}
    offset = page.offset if page else 0
    form = {name: params.get(name, "") for name in views.FILTER_FIELDS}
    return render(
        request, "inbox.html", signed, 422 if error else 200, section="inbox", error=error,
        rows=page.conversations if page else [], has_more=page.has_more if page else False, offset=offset,
        form=form, query=urlencode({**kept, "offset": offset}),
        prev_query=urlencode({**kept, "offset": max(offset - views.PAGE_SIZE, 0)}),
        next_query=urlencode({**kept, "offset": offset + views.PAGE_SIZE}),
        intents=[intent.name for intent in services.pack.intents],
        low_confidence=LOW_CONFIDENCE, percent_threshold=f"{LOW_CONFIDENCE:.0%}",
    )  # fmt: skip


@router.get("/inbox/rows")
def inbox_rows(signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep) -> HTMLResponse:
    """The inbox table's rows alone, polled by the page to stay live."""
    page, _, error = _inbox(request, session, signed, services)
    return render(request, "_inbox_rows.html", signed, 422 if error else 200, rows=page.conversations if page else [])


# --- One conversation: transcript, review, takeover ---


def conversation_page(
    request: Request, signed: SignedIn, session: Session, services: Services, conversation_id: str,
    error: str | None = None, status_code: int = 200, draft: str = "",
) -> HTMLResponse:  # fmt: skip
    try:
        transcript = views.transcript(session, conversation_id)
        desk = views.desk_view(session, conversation_id)
    except crud.ConversationNotFound:
        return render(
            request, "error.html", signed, 404, status=404, title="not found",
            message="No conversation has this id.",
        )  # fmt: skip
    conversation = transcript.conversation
    return render(
        request, "conversation.html", signed, status_code, section="inbox", error=error,
        conversation=conversation, messages=transcript.messages, csat=transcript.csat, tags=transcript.tags,
        mark=transcript.mark, owner=conversation.owner, mine=conversation.status == "human"
        and conversation.owner_id == signed.staff.id,
        last_id=max((m.id for m in transcript.messages), default=0),
        intents=[intent.name for intent in services.pack.intents],
        max_chars=services.settings.max_message_chars, desk=desk, draft=draft,
    )  # fmt: skip


@router.get("/conversations/{conversation_id}")
def conversation(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    canned: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> HTMLResponse:  # fmt: skip
    """Every turn with the bot's intent, confidence, decision and adapter; review, takeover and desk controls.
    With `canned`, the reply box holds that canned reply filled in for this conversation."""
    draft = ""
    if canned is not None:
        try:
            draft = desk_actions.fill_canned(session, signed, conversation_id, canned, services.pack.company_name)
        except REPORTED as failure:
            error = as_api_error(failure)
            return conversation_page(request, signed, session, services, conversation_id, error.message, error.status)
    return conversation_page(request, signed, session, services, conversation_id, draft=draft)


@router.get("/conversations/{conversation_id}/live")
def conversation_live(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    after: Cursor = 0,
) -> JSONResponse:  # fmt: skip
    """New turns (as HTML to append) and the current status, polled by the open transcript."""
    current = views.staff_conversation(session, crud.get_conversation(session=session, conversation_id=conversation_id))
    messages = views.staff_messages(session, conversation_id, after_id=after) if after >= 0 else []
    html = templates.get_template("_messages.html").render(
        messages=messages, signed=signed, conversation_id=conversation_id,
        intents=[intent.name for intent in services.pack.intents],
    )  # fmt: skip
    return JSONResponse(
        {
            "status": current.status,
            "owner_id": current.owner_id,
            "last_id": max((m.id for m in messages), default=after),
            "html": html,
        },
        headers={"Cache-Control": "no-store"},
    )


def act(
    request: Request, signed: SignedIn, session: Session, services: Services, conversation_id: str,
    notice: str, anchor: str, step: Callable[[], object],
) -> Response:  # fmt: skip
    """Run one form's step; back to the transcript on success, the page with the error otherwise."""
    try:
        step()
    except REPORTED as failure:
        session.rollback()
        error = as_api_error(failure)
        return conversation_page(request, signed, session, services, conversation_id, error.message, error.status)
    return back(f"/console/conversations/{conversation_id}", notice, anchor)


@router.post("/conversations/{conversation_id}/claim")
def claim(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    force: Annotated[bool, Form()] = False,
) -> Response:  # fmt: skip
    return act(
        request, signed, session, services, conversation_id, "claimed", "",
        lambda: actions.claim(session, signed, conversation_id, force),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/reply")
def reply(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    text: Annotated[str, Form(max_length=20_000)],
) -> Response:  # fmt: skip
    limit = services.settings.max_message_chars
    return act(
        request, signed, session, services, conversation_id, "sent", "#reply-form",
        lambda: actions.reply(session, signed, conversation_id, text, limit, services.desk),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/hand-back")
def hand_back(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    return act(
        request, signed, session, services, conversation_id, "handed_back", "",
        lambda: actions.hand_back(session, signed, conversation_id),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/resolve")
def resolve(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    return act(
        request, signed, session, services, conversation_id, "resolved", "",
        lambda: actions.resolve(session, signed, conversation_id),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/messages/{message_id}/review")
def review(
    conversation_id: str, message_id: RowId, signed: CurrentStaff, request: Request, session: SessionDep,
    services: ServicesDep, rating: Annotated[str, Form()], expected_version: Annotated[int, Form(ge=0)] = 0,
    corrected_text: Annotated[str, Form(max_length=4000)] = "",
) -> Response:  # fmt: skip
    def step() -> None:
        if rating not in ("good", "bad"):
            raise ApiError(422, "invalid_rating", "Mark the reply good or bad.")
        body = ReviewCreate(rating=rating, corrected_text=corrected_text or None, expected_version=expected_version)
        actions.review(session, signed, conversation_id, message_id, body)

    return act(request, signed, session, services, conversation_id, "reviewed", f"#m{message_id}", step)


@router.post("/conversations/{conversation_id}/messages/{message_id}/intent")
def relabel(
    conversation_id: str, message_id: RowId, signed: CurrentStaff, request: Request, session: SessionDep,
    services: ServicesDep, new_intent: Annotated[str, Form(max_length=64)],
) -> Response:  # fmt: skip
    known = {intent.name for intent in services.pack.intents}
    return act(
        request, signed, session, services, conversation_id, "relabelled", f"#m{message_id}",
        lambda: actions.relabel(session, signed, conversation_id, message_id, new_intent, known),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/tags")
def add_tag(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    name: Annotated[str, Form(max_length=64)],
) -> Response:  # fmt: skip
    return act(
        request, signed, session, services, conversation_id, "tagged", "",
        lambda: actions.add_tag(session, signed, conversation_id, name),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/tags/remove")
def remove_tag(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    name: Annotated[str, Form(max_length=64)],
) -> Response:  # fmt: skip
    return act(
        request, signed, session, services, conversation_id, "tagged", "",
        lambda: actions.remove_tag(session, conversation_id, name),
    )  # fmt: skip


@router.post("/conversations/{conversation_id}/mark")
def mark(
    conversation_id: str, signed: CurrentStaff, request: Request, session: SessionDep, services: ServicesDep,
    expected_version: Annotated[int, Form(ge=0)] = 0, reviewed: Annotated[bool, Form()] = False,
    use_for_training: Annotated[bool, Form()] = False,
) -> Response:  # fmt: skip
    body = ConversationReviewCreate(
        reviewed=reviewed, use_for_training=use_for_training, expected_version=expected_version
    )
    return act(
        request, signed, session, services, conversation_id, "marked", "",
        lambda: actions.mark(session, signed, conversation_id, body),
    )  # fmt: skip


# --- Admin: accounts and the audit log ---


def staff_page(
    request: Request, signed: SignedIn, session: Session, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    accounts = crud.list_staff(session=session)
    return render(
        request, "staff.html", signed, status_code, section="staff", accounts=accounts, error=error,
        min_password=MIN_PASSWORD_CHARS,
    )  # fmt: skip


@router.get("/staff")
def staff(signed: CurrentAdmin, request: Request, session: SessionDep) -> HTMLResponse:
    return staff_page(request, signed, session)


@router.post("/staff")
def create_staff(
    signed: CurrentAdmin, request: Request, session: SessionDep,
    email: Annotated[str, Form(max_length=254)], display_name: Annotated[str, Form(max_length=120)],
    password: Annotated[str, Form(max_length=256)], role: Annotated[StaffRole, Form()] = StaffRole.staff,
) -> Response:  # fmt: skip
    try:
        actions.create_account(session, signed, email=email, display_name=display_name, password=password, role=role)
    except REPORTED as failure:
        session.rollback()
        error = as_api_error(failure)
        return staff_page(request, signed, session, error.message, error.status)
    return back("/console/staff", "created")


@router.post("/staff/{staff_id}")
def update_staff(
    staff_id: RowId, signed: CurrentAdmin, request: Request, session: SessionDep,
    active: Annotated[bool | None, Form()] = None, role: Annotated[StaffRole | None, Form()] = None,
) -> Response:  # fmt: skip
    try:
        actions.update_account(session, signed, staff_id, active=active, role=role)
    except REPORTED as failure:
        session.rollback()
        error = as_api_error(failure)
        return staff_page(request, signed, session, error.message, error.status)
    return back("/console/staff", "updated")


AUDIT_PAGE = 100
ACTION_VIEWS = {"failed": {"failed": True}, "changes": {"changes": True}, "all": {}}


@router.get("/actions")
def action_calls(
    signed: CurrentStaff, request: Request, session: SessionDep, show: str = "failed", offset: Cursor = 0
) -> HTMLResponse:
    """The bot's calls to the order system: failures (the default), changes made for customers (the audit), or all."""
    show, offset = (show if show in ACTION_VIEWS else "failed"), max(offset, 0)
    found = crud.list_action_calls(session=session, **ACTION_VIEWS[show], offset=offset, limit=AUDIT_PAGE + 1)
    return render(
        request, "actions.html", signed, section="actions", calls=found[:AUDIT_PAGE], has_more=len(found) > AUDIT_PAGE,
        offset=offset, limit=AUDIT_PAGE, show=show, views=list(ACTION_VIEWS),
    )  # fmt: skip


@router.get("/audit")
def audit(
    signed: CurrentAdmin, request: Request, session: SessionDep, action: str = "", offset: Cursor = 0
) -> HTMLResponse:
    offset = max(offset, 0)
    found = crud.list_audit(session=session, action=action or None, offset=offset, limit=AUDIT_PAGE + 1)
    names = {account.id: account.display_name for account in crud.list_staff(session=session)}
    return render(
        request, "audit.html", signed, section="audit", entries=found[:AUDIT_PAGE], has_more=len(found) > AUDIT_PAGE,
        offset=offset, limit=AUDIT_PAGE, action=action, names=names, actions=crud.audit_actions(session=session),
    )  # fmt: skip


# --- Admin: models and retraining ---

ACTIVE_RUNS = (RunStatus.queued, RunStatus.running)


@router.get("/models")
def models(signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep) -> HTMLResponse:
    """Retraining runs (the one going shown live), and the adapter versions to promote or roll back to."""
    runs = crud.list_training_runs(session=session)
    return render(
        request, "models.html", signed, section="models", runs=runs,
        active_run=next((run for run in runs if run.status in ACTIVE_RUNS), None),
        adapters=AdapterRegistry(services.settings.adapters_dir).listing(),
        previous=AdapterRegistry(services.settings.adapters_dir).previous(),
        # A name is reused only after a run that failed before training, so the newest run made it.
        made_by={run.adapter: run.id for run in reversed(runs) if run.adapter},
    )  # fmt: skip


@router.get("/models/runs/{run_id}")
def model_run(
    run_id: RowId, signed: CurrentAdmin, request: Request, session: SessionDep, services: ServicesDep
) -> HTMLResponse:
    """One run: live progress and loss plot, its data card, and its evaluation beside the adapter in service."""
    try:
        run = crud.get_training_run(session=session, run_id=run_id)
    except crud.RunNotFound:
        return render(
            request, "error.html", signed, 404, section="models", status=404, title="not found",
            message=f"No retraining run {run_id}.",
        )  # fmt: skip
    adapters = AdapterRegistry(services.settings.adapters_dir).listing()
    return render(
        request, "model_run.html", signed, section="models", run=run, active=adapters.active,
        stored={version.name for version in adapters.versions},
    )  # fmt: skip
