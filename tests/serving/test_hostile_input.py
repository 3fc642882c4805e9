"""Input an attacker or a broken client sends gets a clean 4xx in the API's one error shape and changes nothing:
text that is not valid Unicode or holds control characters, ids beyond the database's integer range in URLs,
query strings and the `Last-Event-ID` header, and a channel only the product itself may use."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from conversations import crud
from conversations.db import make_engine
from conversations.models import Conversation, CsatRating, Message
from core.settings import Settings
from serving.app import create_app
from tests.conftest import stand_in_settings_at
from tests.utils.api import assert_error
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.fake_vllm import FakeVLLM

TOO_LARGE_IDS = [str(2**31), str(2**63), "9" * 30]


@pytest.fixture(scope="module")
def settings(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return stand_in_settings_at(tmp_path_factory.mktemp("hostile"), stand_in_vllm, base_model_dir)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    # raise_server_exceptions=False: a fault answers 500 as it would to a real client, instead of raising here.
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        yield http


def count(settings: Settings, table: type) -> int:
    with Session(make_engine(settings.resolved_database_url)) as session:
        return session.exec(select(func.count()).select_from(table)).one()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [(b'{"text": "refund \\ud800 please"}', "U+D800"), (b'{"text": "hi \\udfff"}', "U+DFFF"),
     (b'{"text": "bell \\u0007"}', "U+0007"), (b'{"text": "esc \\u001b[31m"}', "U+001B"),
     (b'{"text": "c1 \\u009b"}', "U+009B")],
    ids=["lone-high-surrogate", "lone-low-surrogate", "bell", "escape", "c1-control"],
)  # fmt: skip
def test_text_that_is_not_plain_unicode_is_refused(
    client: TestClient, settings: Settings, raw: bytes, shown: str
) -> None:
    conversation_id, headers = open_conversation(client)
    before = count(settings, Message)
    response = client.post(
        f"/api/conversations/{conversation_id}/messages",
        content=raw,
        headers={**headers, "content-type": "application/json"},
    )
    assert_error(response, 422, "invalid_text")
    assert shown in response.json()["error"]["details"][0]["problem"]
    assert count(settings, Message) == before


def test_line_breaks_and_tabs_stay_and_cr_lf_becomes_lf(client: TestClient) -> None:
    conversation_id, headers = open_conversation(client)
    events = send(client, conversation_id, headers, "Order:\tLL-104233\r\nWhere is it?")
    assert events[0][1]["text"] == "Order:\tLL-104233\nWhere is it?"
    assert not bot_reply(events)["failed"]


def test_a_lone_surrogate_in_a_satisfaction_comment_is_refused(client: TestClient, settings: Settings) -> None:
    conversation_id, headers = open_conversation(client)
    before = count(settings, CsatRating)
    response = client.post(
        f"/api/conversations/{conversation_id}/csat",
        content=b'{"score": 4, "comment": "ok \\ud83d"}',
        headers={**headers, "content-type": "application/json"},
    )
    assert_error(response, 422, "invalid_text")
    assert count(settings, CsatRating) == before


@pytest.mark.parametrize("message_id", [*TOO_LARGE_IDS, "0", "-5"])
def test_a_message_id_that_cannot_exist_is_refused(client: TestClient, message_id: str) -> None:
    conversation_id, headers = open_conversation(client)
    response = client.post(
        f"/api/conversations/{conversation_id}/messages/{message_id}/feedback", json={"rating": "up"}, headers=headers
    )
    assert_error(response, 422, "invalid_request")


def test_the_largest_possible_message_id_is_looked_up_and_not_found(client: TestClient) -> None:
    conversation_id, headers = open_conversation(client)
    response = client.post(
        f"/api/conversations/{conversation_id}/messages/{2**31 - 1}/feedback", json={"rating": "up"}, headers=headers
    )
    assert_error(response, 404, "message_not_found")


@pytest.mark.parametrize(
    "last_event_id",
    ["²".encode(), "١٢".encode(), b"9" * 5000, str(2**31).encode(), b"-1", b"12abc"],
    ids=["superscript-two", "arabic-indic-digits", "5000-digits", "beyond-integer", "negative", "trailing-junk"],
)
def test_a_last_event_id_that_is_not_a_message_id_is_refused(client: TestClient, last_event_id: bytes) -> None:
    conversation_id, headers = open_conversation(client)
    response = client.get(
        f"/api/conversations/{conversation_id}/events", headers={**headers, "Last-Event-ID": last_event_id}
    )
    assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize("after", TOO_LARGE_IDS)
def test_an_after_cursor_beyond_any_id_is_refused_before_the_stream_starts(client: TestClient, after: str) -> None:
    conversation_id, headers = open_conversation(client)
    response = client.get(f"/api/conversations/{conversation_id}/events?after={after}", headers=headers)
    assert_error(response, 422, "invalid_request")


def test_a_reconnect_with_a_valid_last_event_id_gets_only_newer_messages(client: TestClient) -> None:
    conversation_id, headers = open_conversation(client)
    first = send(client, conversation_id, headers, "Hello")[0][1]["id"]
    with client.stream(
        "GET", f"/api/conversations/{conversation_id}/events", headers={**headers, "Last-Event-ID": f" {first} "}
    ) as response:
        assert response.status_code == 200
        ids = []
        for line in response.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line.removeprefix("id: ")))
            if len(ids) == 1:
                break
    assert ids and ids[0] > first


@pytest.mark.parametrize("channel", ["import", "Import", "", "web site", "x" * 33, "web\u0000"])
def test_customers_cannot_pick_the_import_channel_or_a_malformed_one(client, settings, channel) -> None:
    before = count(settings, Conversation)
    response = client.post("/api/conversations", json={"channel": channel})
    assert_error(response, 422, "invalid_request")
    assert count(settings, Conversation) == before
    assert client.post("/api/conversations", json={"channel": "web"}).status_code == 201


def test_a_full_disk_is_a_503_with_retry_after_not_a_500(client: TestClient, monkeypatch) -> None:
    def full(**_: object) -> None:
        raise OperationalError("INSERT INTO conversation ...", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(crud, "create_conversation", full)
    response = client.post("/api/conversations", json={"channel": "web"})
    assert_error(response, 503, "storage_full")
    assert int(response.headers["Retry-After"]) >= 1
