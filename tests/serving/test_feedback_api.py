"""Customers rate replies and conversations, end chats and are slowed down when they send too fast.

Ratings land in the database where staff read them; every refusal has the API's one error shape.
"""

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from conversations import crud
from conversations.db import make_engine
from conversations.models import Conversation, ConversationStatus, CsatRating, Feedback, Message, Role
from core.settings import Settings
from serving.app import create_app
from tests.utils.api import assert_error
from tests.utils.conversation import open_conversation, send


def add_message(settings: Settings, conversation_id: str, role: Role, text: str) -> int:
    """Write a message straight into the app's database, as the bot or a staff member would."""
    with Session(make_engine(settings.resolved_database_url)) as session:
        message = crud.add_message(session=session, conversation_id=conversation_id, role=role, text=text)
        assert message.id is not None
        return message.id


def hand_to_human(settings: Settings, conversation_id: str) -> None:
    """A human owns the conversation, so the bot stays silent and sending needs no model."""
    with Session(make_engine(settings.resolved_database_url)) as session:
        conversation = session.get(Conversation, conversation_id)
        assert conversation is not None
        conversation.status = ConversationStatus.human
        session.add(conversation)
        session.commit()


def test_rating_a_reply_is_stored_and_rating_again_replaces_it(test_client: TestClient, app_settings: Settings) -> None:
    conversation_id, headers = open_conversation(test_client)
    reply_id = add_message(app_settings, conversation_id, Role.bot, "You have 30 days to return it.")
    url = f"/api/conversations/{conversation_id}/messages/{reply_id}/feedback"

    first = test_client.post(url, json={"rating": "up"}, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["rating"] == "up" and first.json()["message_id"] == reply_id
    assert test_client.post(url, json={"rating": "down"}, headers=headers).status_code == 200

    with Session(make_engine(app_settings.resolved_database_url)) as session:
        stored = session.exec(select(Feedback).where(Feedback.conversation_id == conversation_id)).all()
        assert [(f.message_id, f.rating) for f in stored] == [(reply_id, "down")]
    # The widget reads the customer's own ratings back after a reload.
    mine = test_client.get(f"/api/conversations/{conversation_id}/feedback", headers=headers).json()
    assert [(r["message_id"], r["rating"]) for r in mine["ratings"]] == [(reply_id, "down")]
    assert mine["csat"] is None


def test_only_the_bots_replies_in_ones_own_conversation_can_be_rated(
    test_client: TestClient, app_settings: Settings
) -> None:
    conversation_id, headers = open_conversation(test_client)
    other_id, other_headers = open_conversation(test_client)
    reply_id = add_message(app_settings, conversation_id, Role.bot, "Hello!")
    customer_id = add_message(app_settings, conversation_id, Role.customer, "Hi")
    elsewhere_id = add_message(app_settings, other_id, Role.bot, "Hello there!")

    def rate(conversation: str, message: int, hdrs: dict[str, str], rating: object = "up"):
        return test_client.post(
            f"/api/conversations/{conversation}/messages/{message}/feedback", json={"rating": rating}, headers=hdrs
        )

    assert_error(rate(conversation_id, reply_id, other_headers), 403, "invalid_token")
    assert_error(rate(conversation_id, reply_id, {}), 401, "missing_token")
    assert_error(rate("0" * 32, reply_id, headers), 404, "conversation_not_found")
    assert_error(rate(conversation_id, elsewhere_id, headers), 404, "message_not_found")
    assert_error(rate(conversation_id, 999_999, headers), 404, "message_not_found")
    assert_error(rate(conversation_id, customer_id, headers), 422, "not_a_bot_message")
    assert_error(rate(conversation_id, reply_id, headers, rating="meh"), 422, "invalid_request")
    with Session(make_engine(app_settings.resolved_database_url)) as session:
        assert session.exec(select(Feedback)).all() == []


def test_ending_a_chat_resolves_it_and_the_satisfaction_rating_is_stored(
    test_client: TestClient, app_settings: Settings
) -> None:
    conversation_id, headers = open_conversation(test_client)
    ended = test_client.post(f"/api/conversations/{conversation_id}/end", headers=headers)
    assert ended.status_code == 200, ended.text
    assert ended.json()["conversation"]["status"] == "resolved"
    transcript = test_client.get(f"/api/conversations/{conversation_id}", headers=headers).json()
    assert transcript["conversation"]["status"] == "resolved"

    url = f"/api/conversations/{conversation_id}/csat"
    first = test_client.post(url, json={"score": 2, "comment": "  Slow answer.  "}, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["score"] == 2 and first.json()["comment"] == "Slow answer."
    assert test_client.post(url, json={"score": 5}, headers=headers).status_code == 200

    with Session(make_engine(app_settings.resolved_database_url)) as session:
        stored = session.exec(select(CsatRating).where(CsatRating.conversation_id == conversation_id)).all()
        assert [(c.score, c.comment) for c in stored] == [(5, None)]
    mine = test_client.get(f"/api/conversations/{conversation_id}/feedback", headers=headers).json()
    assert mine["csat"]["score"] == 5


@pytest.mark.parametrize(
    "body", [{"score": 0}, {"score": 6}, {"score": "five"}, {}, {"score": 3, "comment": "x" * 1001}]
)
def test_a_bad_satisfaction_rating_is_refused(test_client: TestClient, app_settings: Settings, body: dict) -> None:
    conversation_id, headers = open_conversation(test_client)
    response = test_client.post(f"/api/conversations/{conversation_id}/csat", json=body, headers=headers)
    assert_error(response, 422, "invalid_request")
    with Session(make_engine(app_settings.resolved_database_url)) as session:
        assert session.exec(select(CsatRating)).all() == []


def test_csat_and_end_need_the_conversations_token(test_client: TestClient) -> None:
    conversation_id, _ = open_conversation(test_client)
    _, other_headers = open_conversation(test_client)
    assert_error(
        test_client.post(f"/api/conversations/{conversation_id}/csat", json={"score": 4}, headers=other_headers),
        403,
        "invalid_token",
    )
    assert_error(
        test_client.post(f"/api/conversations/{conversation_id}/end", headers=other_headers), 403, "invalid_token"
    )
    assert_error(test_client.get(f"/api/conversations/{conversation_id}/feedback"), 401, "missing_token")


@pytest.fixture
def limited_client(app_settings: Settings) -> Iterator[tuple[TestClient, Settings]]:
    settings = app_settings.model_copy(
        update={"rate_limit_per_minute_conversation": 2, "rate_limit_per_minute_address": 3}
    )
    with TestClient(create_app(settings)) as http:
        # The limits count in one-minute windows and carry the previous window's hits in part only, so hits that
        # straddle a window's end can let one more through. These tests start early in a window, so theirs never do.
        into_window = time.time() % 60
        if into_window > 30:
            time.sleep(60.1 - into_window)
        yield http, settings


def stored_customer_messages(settings: Settings) -> list[str]:
    with Session(make_engine(settings.resolved_database_url)) as session:
        return [m.text for m in session.exec(select(Message).where(Message.role == Role.customer).order_by(Message.id))]


def test_too_many_messages_in_a_conversation_get_429_with_retry_after(
    limited_client: tuple[TestClient, Settings],
) -> None:
    http, settings = limited_client
    conversation_id, headers = open_conversation(http)
    hand_to_human(settings, conversation_id)
    for text in ("first", "second"):
        events = send(http, conversation_id, headers, text)
        assert [name for name, _ in events][0] == "customer_message"

    refused = http.post(f"/api/conversations/{conversation_id}/messages", json={"text": "third"}, headers=headers)
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "conversation" in refused.json()["error"]["message"]
    # The refused message was not stored: the widget keeps it in the text box for the customer to resend.
    assert stored_customer_messages(settings) == ["first", "second"]


def test_too_many_messages_from_one_address_get_429(limited_client: tuple[TestClient, Settings]) -> None:
    http, settings = limited_client
    for text in ("one", "two", "three"):
        conversation_id, headers = open_conversation(http)
        hand_to_human(settings, conversation_id)
        send(http, conversation_id, headers, text)

    conversation_id, headers = open_conversation(http)
    refused = http.post(f"/api/conversations/{conversation_id}/messages", json={"text": "four"}, headers=headers)
    assert_error(refused, 429, "rate_limited")
    assert "address" in refused.json()["error"]["message"] and refused.headers["Retry-After"]
    assert stored_customer_messages(settings) == ["one", "two", "three"]
