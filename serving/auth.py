"""Staff sign-in: Argon2 password hashes, server-side sessions in an HttpOnly cookie, CSRF tokens.

Staff and admins authenticate only with the session cookie; a customer's bearer token never opens a
staff route, and the session cookie never opens a customer's conversation.
"""

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from urllib.parse import quote

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlmodel import Session

from conversations import crud
from conversations.models import StaffAccount, StaffSession, utcnow
from core.settings import Settings
from serving.errors import ApiError, error_response

SESSION_COOKIE = "supportbot_staff"
# Double-submit cookie for the sign-in form, which is posted before any session exists.
LOGIN_CSRF_COOKIE = "supportbot_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_LIFETIME = timedelta(hours=12)
MIN_PASSWORD_CHARS = 12
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_hasher = PasswordHasher()
# Verified against when the email is unknown, so the response time does not tell which emails exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class StaffAuthError(ApiError):
    """The request is not signed in (401), lacks the role or CSRF token it needs (403), or is throttled (429);
    console pages answer it with a redirect or an HTML page instead of the API's error shape."""


@dataclass(frozen=True)
class SignedIn:
    """The staff member behind a request and the CSRF token their forms and API calls must carry."""

    staff: StaffAccount
    csrf_token: str
    session_id: int

    @property
    def is_admin(self) -> bool:
        return self.staff.role == "admin"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def account_problem(email: str, display_name: str, password: str) -> str | None:
    """What is wrong with a new account's details, checked alike by the console and the command line."""
    local, _, domain = email.strip().partition("@")
    if not local or "." not in domain or " " in email.strip() or len(email) > 254:
        return "This is not an email address."
    if not display_name.strip() or len(display_name.strip()) > 120:
        return "The display name must be 1 to 120 characters."
    if len(password) < MIN_PASSWORD_CHARS or len(password) > 256:
        return f"The password must be {MIN_PASSWORD_CHARS} to 256 characters."
    return None


def authenticate(session: Session, email: str, password: str) -> StaffAccount | None:
    """The active account with this email and password, or None; upgrades an outdated hash on the way."""
    account = crud.find_staff(session=session, email=email)
    try:
        _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if account is None or not account.active or account.id is None:
        return None
    if _hasher.check_needs_rehash(account.password_hash):
        crud.set_password_hash(session=session, staff_id=account.id, password_hash=hash_password(password))
    return account


def sign_in(session: Session, account: StaffAccount, response: Response, settings: Settings) -> StaffSession:
    """Open a server-side session for `account` and set its cookie on `response`."""
    assert account.id is not None
    staff_session, token = crud.create_staff_session(
        session=session, staff_id=account.id, expires_at=utcnow() + SESSION_LIFETIME
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.mode != "local",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return staff_session


def sign_out(session: Session, request: Request, response: Response) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        crud.end_staff_session(session=session, token=token)
    response.delete_cookie(SESSION_COOKIE, path="/")


def signed_in(session: Session, request: Request) -> SignedIn | None:
    """The staff member whose live session cookie came with the request, if any."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    found = crud.open_staff_session(session=session, token=token)
    if found is None:
        return None
    staff_session, account = found
    assert staff_session.id is not None
    return SignedIn(staff=account, csrf_token=staff_session.csrf_token, session_id=staff_session.id)


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


async def check_csrf(request: Request, expected: str) -> None:
    """State-changing requests carry the session's CSRF token in a header (API) or a form field (pages)."""
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        # Starlette keeps the parsed form, so the route can still read its fields.
        given = (await request.form()).get(CSRF_FIELD)  # type: ignore[assignment]
    if not same_token(given, expected):
        raise StaffAuthError(403, "csrf_failed", "The CSRF token is missing or wrong; reload the page and try again.")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def set_login_csrf(response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, path="/console", httponly=True, samesite="strict", secure=settings.mode != "local"
    )


def wants_page(request: Request) -> bool:
    return request.url.path == "/console" or request.url.path.startswith("/console/")


async def staff_auth_response(request: Request, error: Exception) -> Response:
    """Console pages send people without a session to the sign-in page; the API answers in its error shape."""
    assert isinstance(error, StaffAuthError)
    if wants_page(request):
        if error.status == 401 and request.method in SAFE_METHODS:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)
        return HTMLResponse(_error_page(error), status_code=error.status)
    return error_response(error.status, error.code, error.message)


def _error_page(error: StaffAuthError) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not allowed</title>'
        '<link rel="stylesheet" href="/console/static/console.css"></head><body class="narrow">'
        f"<main><h1>{error.status}: not allowed</h1><p>{escape(error.message)}</p>"
        '<p><a href="/console">Back to the inbox</a> · <a href="/console/login">Sign in</a></p></main></body></html>'
    )
