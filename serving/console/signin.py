"""Signing staff in and out, shared by the console's sign-in form and the JSON API; failed tries are throttled.

Every attempt takes a hit of the sign-in limits before the password is checked and gives it back when the
password was right, so concurrent guesses cannot all slip in before the first failure is counted.
"""

import logging

from fastapi import Request
from sqlmodel import Session

from conversations import crud
from conversations.models import StaffAccount
from serving.auth import StaffAuthError, authenticate
from serving.limits import RateLimited, RateLimiter, client_address

logger = logging.getLogger(__name__)


def check_credentials(session: Session, request: Request, email: str, password: str) -> StaffAccount:
    """The account these credentials open; raises `StaffAuthError` (401, or 429 when throttled)."""
    limiter: RateLimiter = request.app.state.services.limiter
    address = client_address(request)
    attempt = {
        "sign-in:email": crud.normalize_email(email),
        "sign-in:address": address,
        "sign-in:everyone": "*",
    }
    try:
        limiter.admit(**attempt)
    except RateLimited as error:
        raise StaffAuthError(
            429, "too_many_attempts", f"{error.refusal} Try again in {error.retry_after_s:.0f} s."
        ) from None
    account = authenticate(session, email, password)
    if account is None:
        logger.warning("failed staff sign-in for %r from %s", email[:254], address)
        raise StaffAuthError(401, "invalid_credentials", "Wrong email or password.")
    limiter.give_back(**attempt)
    crud.record_audit(session=session, actor_id=account.id, action="sign_in", target=f"staff:{account.id}")
    return account


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a console path on this site, never another site."""
    if target and target.startswith("/console") and not target.startswith("/console/login") and "//" not in target:
        return target
    return "/console"
