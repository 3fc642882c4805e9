"""Bounds on every request, set from the settings in one place: the body size (in the app, so any server
enforces it), the request head's size and arrival time and idle connections (in uvicorn's protocol), and
which proxies may name the client in X-Forwarded-For; and the `nosniff` header on every answer.

`server_config` is how `supportbot start` runs the app; tests start a real server with it.
"""

import asyncio
import json
import logging
from typing import Any

import h11
import uvicorn
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.settings import Settings

logger = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    """The request body went past the limit while it was being read: raised from `receive`, so the route
    reading the body fails with 413 in the API's error shape (serving/errors.py)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body is larger than {max_bytes} bytes.")


class RequestLimits:
    """Refuses request headers larger than `max_header_bytes` in all (431) and a body larger than `max_bytes`
    (413): at once when Content-Length says so, else as soon as the bytes read pass the limit, so no route
    ever parses more than `max_bytes`. (The server refuses incomplete heads beyond the limit itself; a head
    that arrives whole in one read is only measured here.)"""

    def __init__(self, app: ASGIApp, max_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > self.max_header_bytes:
            await self.refuse(send, 431)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.refuse(send, 413 if declared.isdigit() else 400)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self.refuse(send, 413)

    async def refuse(self, send: Send, status: int) -> None:
        if status == 413:
            error = {"code": "too_large", "message": f"The request body is larger than {self.max_bytes} bytes."}
        elif status == 431:
            error = {
                "code": "headers_too_large",
                "message": f"The request headers exceed {self.max_header_bytes} bytes.",
            }
        else:
            error = {"code": "bad_request", "message": "The Content-Length header is not a number."}
        body = json.dumps({"error": error}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class NoSniff:
    """Adds `X-Content-Type-Options: nosniff` to every response, so no browser reads a JSON answer that
    echoes customer text (or an uploaded file) as HTML or script."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                    message["headers"] = [*headers, (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, with_header)


def bounded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request head: uvicorn arms no timer between
    connecting (or a response) and a complete request head, so a client sending headers byte by byte
    would hold its connection for ever."""

    class BoundedH11Protocol(H11Protocol):
        head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.arm_head_deadline()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE and self.head_deadline is not None:
                self.head_deadline.cancel()  # the head arrived; the route's own time limits apply now
                self.head_deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self.head_deadline is not None:
                self.head_deadline.cancel()
            super().connection_lost(exc)

        def arm_head_deadline(self) -> None:
            if self.head_deadline is not None:
                self.head_deadline.cancel()
            self.head_deadline = self.loop.call_later(header_timeout_s, self.head_too_slow)

        def head_too_slow(self) -> None:
            self.head_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                logger.info("closed a connection whose request head did not arrive within %.0f s", header_timeout_s)
                self.transport.close()

    return BoundedH11Protocol


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for the app with the request bounds of `settings`."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # h11, not httptools: only h11 bounds the size of a request head.
        "http": bounded_h11(settings.header_timeout_s),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_s,
        # The app reads X-Forwarded-For itself, from `trusted_proxies` only (serving/app.py).
        "proxy_headers": False,
        # Open widget event streams would otherwise hold Ctrl-C for up to a minute.
        "timeout_graceful_shutdown": 5,
    }
    return uvicorn.Config(app, **{**options, **overrides})
