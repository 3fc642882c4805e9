"""How fast customers may send: sliding one-minute windows per conversation and per client address.

Kept in memory, so each replica counts on its own; put a shared limiter at the proxy for a hard cap.
"""

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from serving.deps import ServicesDep
from serving.errors import error_response

WINDOW_S = 60.0


class RateLimited(Exception):
    """Too many messages in the last minute; `retry_after_s` says when the next one is accepted."""

    def __init__(self, retry_after_s: float, scope: str) -> None:
        super().__init__(f"rate limited per {scope}")
        self.retry_after_s = retry_after_s
        self.scope = scope


class SlidingWindow:
    """At most `limit` hits per key within any `window_s` seconds."""

    def __init__(self, limit: int, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def wait_s(self, key: str, now: float) -> float:
        """Seconds until `key` may hit again; 0 when it may now. Forgets hits older than the window."""
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return 0.0
        return 0.0 if len(hits) < self.limit else hits[0] + self.window_s - now

    def record(self, key: str, now: float) -> None:
        self._hits.setdefault(key, deque()).append(now)

    def forget_idle(self, now: float) -> None:
        for key in list(self._hits):
            self.wait_s(key, now)


class SendLimits:
    """The per-conversation and per-address windows of the send-message route, checked together.

    A refused message is not counted, so a customer who waits as told is always let through.
    """

    def __init__(self, per_conversation: int, per_address: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.conversations = SlidingWindow(per_conversation, clock=clock)
        self.addresses = SlidingWindow(per_address, clock=clock)
        self._lock = threading.Lock()
        self._admitted = 0

    def admit(self, conversation_id: str, address: str) -> None:
        """Count one message, or raise `RateLimited` without counting it."""
        with self._lock:
            now = self.clock()
            for scope, window, key in (
                ("conversation", self.conversations, conversation_id),
                ("address", self.addresses, address),
            ):
                wait = window.wait_s(key, now)
                if wait > 0:
                    raise RateLimited(wait, scope)
            self.conversations.record(conversation_id, now)
            self.addresses.record(address, now)
            self._admitted += 1
            if self._admitted % 1000 == 0:  # bounds memory when many conversations come and go
                self.conversations.forget_idle(now)
                self.addresses.forget_idle(now)


_creating = threading.Lock()


def send_limits(request: Request, services: ServicesDep) -> SendLimits:
    """The app's limiter, made on first use from its settings (one per app, so tests stay apart)."""
    limits = getattr(request.app.state, "send_limits", None)
    if limits is None:
        with _creating:
            limits = getattr(request.app.state, "send_limits", None)
            if limits is None:
                settings = services.settings
                limits = SendLimits(settings.rate_limit_per_minute_conversation, settings.rate_limit_per_minute_address)
                request.app.state.send_limits = limits
    return limits


def limit_sending(conversation_id: str, request: Request, limits: Annotated[SendLimits, Depends(send_limits)]) -> None:
    """Dependency of the send-message route: refuse with 429 once a limit is reached."""
    address = request.client.host if request.client else "unknown"
    limits.admit(conversation_id, address)


SendLimited = Annotated[None, Depends(limit_sending)]


async def rate_limited_response(_: Request, error: Exception) -> JSONResponse:
    """429 in the API's one error shape, with the standard Retry-After header (whole seconds)."""
    assert isinstance(error, RateLimited)
    seconds = max(1, math.ceil(error.retry_after_s))
    scope = "this conversation" if error.scope == "conversation" else "your network address"
    response = error_response(
        429, "rate_limited", f"Too many messages from {scope}. Please wait {seconds} s before sending again."
    )
    response.headers["Retry-After"] = str(seconds)
    return response
