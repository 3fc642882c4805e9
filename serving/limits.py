"""How fast clients may act: rate limits per conversation, per client address and for everyone together.

The counts live in the database (conversations/crud/limits.py), so every app replica enforces the same
limits, and a request whose token or credentials are wrong is refused before it can spend anyone's limit.
Client addresses are the peer's, or the X-Forwarded-For entry a trusted proxy added (serving/bounds.py).
"""

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud
from core.settings import Settings
from serving.errors import error_response

# How often stale counts are deleted, in admitted hits (each app process counts its own).
FORGET_EVERY = 500
# Counts older than this are of no use to any limit.
KEEP_COUNTS_S = 3 * 3600


class RateLimited(Exception):
    """A limit is reached; `retry_after_s` says when the next request is accepted, `refusal` what to tell."""

    def __init__(self, retry_after_s: float, refusal: str) -> None:
        super().__init__(refusal)
        self.retry_after_s = retry_after_s
        self.refusal = refusal


@dataclass(frozen=True)
class Limit:
    """At most `hits` per sliding `window_s` seconds for each key; `refusal` tells the client why it waits."""

    name: str
    hits: int
    window_s: int
    refusal: str


def limits_of(settings: Settings) -> dict[str, Limit]:
    """Every rate limit of the app, from the settings (the one place they are configured)."""
    minute, sign_in = 60, settings.sign_in_window_s
    table = [
        ("send:conversation", settings.rate_limit_per_minute_conversation, minute,
         "Too many messages from this conversation."),
        ("send:address", settings.rate_limit_per_minute_address, minute,
         "Too many messages from your network address."),
        ("open:address", settings.new_conversations_per_minute_address, minute,
         "Too many new conversations from your network address."),
        ("open:everyone", settings.new_conversations_per_minute, minute,
         "We are opening too many conversations right now."),
        ("follow:conversation", settings.event_streams_per_minute_conversation, minute,
         "This conversation's updates were asked for too often."),
        ("sign-in:email", settings.sign_in_failures_per_email, sign_in,
         "Too many failed sign-ins for this account."),
        ("sign-in:address", settings.sign_in_failures_per_address, sign_in,
         "Too many failed sign-ins from your network address."),
        ("sign-in:everyone", settings.sign_in_failures, sign_in,
         "Too many failed sign-ins on this site."),
    ]  # fmt: skip
    return {name: Limit(name, hits, window_s, refusal) for name, hits, window_s, refusal in table}


class RateLimiter:
    """Takes hits of several limits together: all are counted, or none (a refused request costs nothing)."""

    def __init__(self, engine: Engine, limits: dict[str, Limit], clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.limits = limits
        self.clock = clock
        self._admitted = 0

    @staticmethod
    def key(limit: Limit, value: str) -> str:
        # Hashed: an email or a forwarded address may be long, and the store needs no readable key.
        return f"{limit.name}:{hashlib.sha256(value.encode(errors='replace')).hexdigest()[:40]}"

    def admit(self, **values: str) -> None:
        """Count one hit of each named limit (`admit(**{"send:conversation": id})`), or raise `RateLimited`."""
        now = self.clock()
        taken: list[tuple[Limit, str]] = []
        with Session(self.engine) as session:
            for name, value in values.items():
                limit = self.limits[name]
                wait = crud.take_hit(
                    session=session, key=self.key(limit, value), limit=limit.hits, window_s=limit.window_s, now=now
                )
                if wait > 0:
                    for done, key in taken:
                        crud.give_back_hit(session=session, key=key, window_s=done.window_s, now=now)
                    raise RateLimited(wait, limit.refusal)
                taken.append((limit, self.key(limit, value)))
            self._admitted += 1
            if self._admitted % FORGET_EVERY == 0:
                crud.forget_counts(session=session, before=now - KEEP_COUNTS_S)

    def give_back(self, **values: str) -> None:
        """Uncount hits taken a moment ago (a sign-in that succeeded counts as no failure)."""
        now = self.clock()
        with Session(self.engine) as session:
            for name, value in values.items():
                limit = self.limits[name]
                crud.give_back_hit(session=session, key=self.key(limit, value), window_s=limit.window_s, now=now)


def client_address(request: Request) -> str:
    """The client's address: the peer's, already replaced by a trusted proxy's X-Forwarded-For entry."""
    return request.client.host if request.client else "unknown"


async def rate_limited_response(_: Request, error: Exception) -> JSONResponse:
    """429 in the API's one error shape, with the standard Retry-After header (whole seconds)."""
    assert isinstance(error, RateLimited)
    seconds = max(1, math.ceil(error.retry_after_s))
    response = error_response(429, "rate_limited", f"{error.refusal} Please wait {seconds} s before trying again.")
    response.headers["Retry-After"] = str(seconds)
    return response
