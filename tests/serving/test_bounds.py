"""Request bounds hold on a real uvicorn server configured as `supportbot start` configures it: bodies over
the limit are refused before they are read in full, oversized request heads are refused, and a client that
stops sending its request head (or sits idle after a response) is disconnected."""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, func, select

from conversations.db import make_engine
from conversations.models import Message
from core.settings import Settings
from tests.conftest import stand_in_settings_at
from tests.utils.conversation import open_conversation
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.server import running_app

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def settings(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("bounds")
    return stand_in_settings_at(
        folder, stand_in_vllm, base_model_dir,
        max_body_bytes=MAX_BODY, max_header_bytes=8 * 1024, header_timeout_s=1.0, keep_alive_s=1.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    with running_app(settings) as base:
        yield base


def stored_messages(settings: Settings) -> int:
    with Session(make_engine(settings.resolved_database_url)) as session:
        return session.exec(select(func.count()).select_from(Message)).one()


def test_a_body_over_the_limit_is_refused_with_413(url: str, settings: Settings) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        conversation_id, headers = open_conversation(http)
        before = stored_messages(settings)
        huge = '{"text": "' + "a" * (3 * 1024 * 1024) + '"}'
        response = http.post(f"/api/conversations/{conversation_id}/messages", content=huge,
                             headers={**headers, "content-type": "application/json"})  # fmt: skip
        assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
        assert stored_messages(settings) == before


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(url: str, settings: Settings) -> None:
    sent = [0]

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(200):  # 200 x 16 KiB = 3.2 MiB if the server kept reading
            sent[0] += 16 * 1024
            yield b"a" * 16 * 1024
        yield b'"}'

    with httpx.Client(base_url=url, timeout=30) as http:
        conversation_id, headers = open_conversation(http)
        before = stored_messages(settings)
        try:
            response = http.post(f"/api/conversations/{conversation_id}/messages", content=chunks(),
                                 headers={**headers, "content-type": "application/json"})  # fmt: skip
            assert response.status_code == 413
        except httpx.HTTPError:
            pass  # the server may close the connection before the client has finished sending
        assert stored_messages(settings) == before


def test_a_body_at_the_limit_is_read(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        conversation_id, headers = open_conversation(http)
        text = "a" * (MAX_BODY - 20)
        response = http.post(f"/api/conversations/{conversation_id}/messages", json={"text": text}, headers=headers)
        # Read in full and judged by the message rule (2000 characters), not cut off by the body limit.
        assert response.status_code == 413 and response.json()["error"]["code"] == "message_too_long"


def test_an_oversized_request_head_is_refused(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        response = http.get("/healthz", headers={"X-Padding": "p" * 100_000})
        assert response.status_code == 431 and response.json()["error"]["code"] == "headers_too_large"
        assert http.get("/healthz", headers={"X-Padding": "p" * 1000}).status_code == 200


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_after(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the server closed the connection, or None if it was still open after `limit_s`."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_a_client_that_stops_mid_head_is_disconnected(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        waited = closed_after(sock, 8)
        assert waited is not None and waited < 4, "the connection stayed open without a complete request head"


def test_a_client_that_never_sends_anything_is_disconnected(url: str) -> None:
    with connect(url) as sock:
        assert closed_after(sock, 8) is not None


def test_a_client_dripping_a_head_after_a_response_is_disconnected(url: str) -> None:
    with connect(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        started = time.monotonic()
        sock.settimeout(0.3)
        try:
            while time.monotonic() - started < 8:
                sock.sendall(b"G")  # each byte would cancel uvicorn's keep-alive timer
                time.sleep(0.3)
        except OSError:
            pass
        assert time.monotonic() - started < 4, "a dripped request head kept the connection open"
