"""Signing staff in and out, shared by the console's sign-in form and the JSON API; failed tries are throttled."""

import logging

from fastapi import Request
from sqlmodel import Session

from conversations import crud
from conversations.models import StaffAccount
from serving.auth import StaffAuthError, authenticate
from serving.limits import SlidingWindow

logger = logging.getLogger(__name__)

# Failed sign-ins allowed per email and per client address within the window.
FAILURES_ALLOWED = 10
WINDOW_S = 300.0


class LoginThrottle:
    """Slows password guessing: after too many failures for an email or an address, sign-in waits a while."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window_s: float = WINDOW_S) -> None:
        self.window = SlidingWindow(allowed, window_s)

    @staticmethod
    def _keys(email: str, address: str) -> tuple[str, str]:
        return f"email:{crud.normalize_email(email)}", f"address:{address}"

    def check(self, email: str, address: str) -> None:
        now = self.window.clock()
        wait = max(self.window.wait_s(key, now) for key in self._keys(email, address))
        if wait > 0:
            raise StaffAuthError(429, "too_many_attempts", f"Too many failed sign-ins; try again in {wait:.0f} s.")

    def failed(self, email: str, address: str) -> None:
        now = self.window.clock()
        for key in self._keys(email, address):
            self.window.record(key, now)


def throttle(request: Request) -> LoginThrottle:
    """The app's throttle, created with the first sign-in attempt."""
    state = request.app.state
    if not hasattr(state, "login_throttle"):
        state.login_throttle = LoginThrottle()
    return state.login_throttle


def check_credentials(session: Session, request: Request, email: str, password: str) -> StaffAccount:
    """The account these credentials open; raises `StaffAuthError` (401, or 429 when throttled)."""
    limiter = throttle(request)
    address = request.client.host if request.client else "unknown"
    limiter.check(email, address)
    account = authenticate(session, email, password)
    if account is None:
        limiter.failed(email, address)
        logger.warning("failed staff sign-in for %r from %s", email[:254], address)
        raise StaffAuthError(401, "invalid_credentials", "Wrong email or password.")
    crud.record_audit(session=session, actor_id=account.id, action="sign_in", target=f"staff:{account.id}")
    return account


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a console path on this site, never another site."""
    if target and target.startswith("/console") and not target.startswith("/console/login") and "//" not in target:
        return target
    return "/console"
