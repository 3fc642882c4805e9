"""Bad requests get a clear 4xx in one error shape, and nothing is stored half-way."""

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from conversations.db import make_engine
from conversations.models import Conversation, Message
from core.settings import Settings
from serving.app import create_app
from tests.utils.api import assert_error
from tests.utils.conversation import bot_reply, open_conversation, send


def stored_messages(settings: Settings) -> int:
    with Session(make_engine(settings.resolved_database_url)) as session:
        return session.exec(select(func.count()).select_from(Message)).one()


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"text": ""}}, 422, "empty_message"),
        ({"json": {"text": "   \n "}}, 422, "empty_message"),
        ({"json": {"text": "x" * 2001}}, 413, "message_too_long"),
        ({"json": {"text": "a\x00b"}}, 422, "invalid_text"),
        ({"json": {"message": "hi"}}, 422, "invalid_request"),
        ({"json": {"text": 42}}, 422, "invalid_request"),
        ({"content": b'{"text": "hi"', "headers": {"content-type": "application/json"}}, 400, "malformed_json"),
        ({"content": b'{"text": "\xff\xfe caf\xe9"}', "headers": {"content-type": "application/json"}}, 400, None),
    ],
    ids=["empty", "blank", "oversized", "nul", "wrong-field", "wrong-type", "malformed-json", "not-utf8"],
)
def test_bad_message_is_refused_and_nothing_is_stored(
    test_client: TestClient, app_settings: Settings, kwargs: dict, status: int, code: str | None
) -> None:
    conversation_id, headers = open_conversation(test_client)
    headers = {**headers, **kwargs.pop("headers", {})}
    response = test_client.post(f"/api/conversations/{conversation_id}/messages", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and (code is None or error["code"] == code)
    assert stored_messages(app_settings) == 0


def test_unknown_conversation_and_bad_tokens(test_client: TestClient, app_settings: Settings) -> None:
    conversation_id, headers = open_conversation(test_client)
    body = {"json": {"text": "hello"}}
    assert_error(test_client.post("/api/conversations/nope/messages", headers=headers, **body), 404,
                 "conversation_not_found")  # fmt: skip
    assert_error(test_client.post(f"/api/conversations/{conversation_id}/messages", **body), 401, "missing_token")
    wrong = {"Authorization": "Bearer not-the-token"}
    assert_error(test_client.post(f"/api/conversations/{conversation_id}/messages", headers=wrong, **body), 403,
                 "invalid_token")  # fmt: skip
    assert_error(test_client.get(f"/api/conversations/{conversation_id}", headers=wrong), 403, "invalid_token")
    assert_error(test_client.get("/api/nothing-here"), 404, "not_found")
    assert stored_messages(app_settings) == 0


def test_model_server_down_keeps_the_message_apologises_and_flags(live_app, tmp_path) -> None:
    # Port 9 (discard) has no model server behind it.
    settings = live_app.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'down.db'}", "vllm_url": "http://127.0.0.1:9"}
    )
    with TestClient(create_app(settings)) as client:
        conversation_id, headers = open_conversation(client)
        events = send(client, conversation_id, headers, "How long do I have to return a lamp?")
        reply = bot_reply(events)
        assert [name for name, _ in events] == ["customer_message", "bot_message", "conversation", "done"]
        assert reply["failed"] is True and "support team" in reply["text"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["model_server"] is False

        transcript = client.get(f"/api/conversations/{conversation_id}", headers=headers).json()
        assert [m["text"] for m in transcript["messages"]][0] == "How long do I have to return a lamp?"
        with Session(make_engine(settings.resolved_database_url)) as session:
            conversation = session.get(Conversation, conversation_id)
            assert conversation.needs_attention and conversation.attention_reason.startswith("model")
