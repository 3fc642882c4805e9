"""For the support desk's tests: a real SMTP server (aiosmtpd) and a real webhook receiver over HTTP that checks
signatures, and can hold or fail attempts on request."""

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from tests.utils.ports import free_port


def wait_for(condition: Callable[[], object], timeout_s: float = 20.0, what: str = "the condition") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class _Inbox:
    """aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 OK"


class SmtpServer:
    """A real SMTP server on the loopback; `messages` lists (recipients, message) in arrival order."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.inbox = _Inbox()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "SmtpServer":
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return list(self.inbox.messages)

    def to(self, address: str) -> list[EmailMessage]:
        return [message for recipients, message in self.messages if address in recipients]


@dataclass
class Received:
    """One webhook call as the receiver saw it."""

    event: str
    delivery: str
    body: dict
    signature_ok: bool
    answered: int


@dataclass
class WebhookReceiver:
    """An HTTP server that verifies each call's HMAC-SHA256 signature with `secret`. The first `fail_first` calls
    are answered 500; with `hold_first`, the first call's answer waits until `release()`."""

    secret: str
    fail_first: int = 1
    hold_first: bool = False
    calls: list[Received] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    _release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(expected, self.headers.get("X-Supportbot-Signature-256", ""))
                first = not receiver.calls and not receiver.held.is_set()
                if first and receiver.hold_first:
                    receiver.held.set()
                    receiver._release.wait(30)
                failing = sum(1 for call in receiver.calls) < receiver.fail_first
                status = 500 if failing or not signed else 200
                receiver.calls.append(
                    Received(self.headers.get("X-Supportbot-Event", ""), self.headers.get("X-Supportbot-Delivery", ""),
                             json.loads(body), signed, status)
                )  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def release(self) -> None:
        self._release.set()

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
