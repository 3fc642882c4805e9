"""What the widget asks of the app: its script and settings, live events that resume without gaps, CORS.

The event stream is read from the running app over a real socket, with messages written straight into
its database the way another replica or a staff member's reply would be.
"""

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from conversations import crud
from conversations.db import make_engine
from conversations.models import Conversation, ConversationStatus, Message, Role
from core.settings import Settings
from serving.app import create_app
from tests.utils.conversation import open_conversation


@dataclass
class Event:
    name: str
    data: dict
    id: str | None


def read_events(lines: Iterator[str], until: Callable[[list[Event]], bool], timeout_s: float = 30) -> list[Event]:
    """Events from an SSE stream until `until(events)` holds; the server's keep-alives bound each wait."""
    events: list[Event] = []
    name, data, event_id = "message", [], None
    deadline = time.monotonic() + timeout_s
    for line in lines:
        if line.startswith("event:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())
        elif line.startswith("id:"):
            event_id = line.partition(":")[2].strip()
        elif not line and data:
            events.append(Event(name, json.loads("\n".join(data)), event_id))
            name, data, event_id = "message", [], None
            if until(events):
                return events
        if time.monotonic() > deadline:
            break
    pytest.fail(f"the stream did not deliver what was expected in {timeout_s} s; got {events}")


def messages(events: list[Event]) -> list[Event]:
    return [event for event in events if event.name == "message"]


def write(settings: Settings, conversation_id: str, role: Role, text: str, author: str | None = None) -> int:
    with Session(make_engine(settings.resolved_database_url)) as session:
        message = crud.add_message(
            session=session, conversation_id=conversation_id, role=role, text=text, author=author
        )
        assert message.id is not None
        return message.id


def take_over(settings: Settings, conversation_id: str, author: str, text: str) -> int:
    """A teammate takes the conversation and writes, in one transaction, as the staff console would."""
    with Session(make_engine(settings.resolved_database_url)) as session:
        conversation = session.get(Conversation, conversation_id)
        assert conversation is not None
        conversation.status = ConversationStatus.human
        message = Message(conversation_id=conversation_id, role=Role.staff, text=text, author=author)
        session.add_all([conversation, message])
        session.commit()
        assert message.id is not None
        return message.id


def test_events_replay_history_then_deliver_new_messages_and_status_live(client: httpx.Client, live_app) -> None:
    settings = live_app.settings
    conversation_id, headers = open_conversation(client)
    question = write(settings, conversation_id, Role.customer, "Is anyone there?")
    answer = write(settings, conversation_id, Role.bot, "I'm here to help.")

    url = f"/api/conversations/{conversation_id}/events"
    with client.stream("GET", url, headers=headers, timeout=httpx.Timeout(60, read=30)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        history = read_events(lines, lambda events: len(messages(events)) == 2)
        assert history[0].name == "status" and history[0].data == {"status": "bot", "agent": None}
        assert [(e.id, e.data["id"], e.data["role"]) for e in messages(history)] == [
            (str(question), question, "customer"),
            (str(answer), answer, "bot"),
        ]

        # A teammate takes over on another replica: the customer sees it within a couple of seconds.
        started = time.monotonic()
        staff = take_over(settings, conversation_id, "Dana", "Hi, Dana here. I'll take it from here.")
        live = read_events(lines, lambda events: any(e.name == "message" for e in events), timeout_s=15)
        assert time.monotonic() - started < 5
        assert live[0].name == "status" and live[0].data == {"status": "human", "agent": "Dana"}
        assert [(e.id, e.data["role"], e.data["author"]) for e in messages(live)] == [(str(staff), "staff", "Dana")]

    # Reconnecting with the last id seen resumes after it: nothing twice, nothing missing.
    later = write(settings, conversation_id, Role.staff, "Are you still there?", author="Dana")
    with client.stream("GET", url, headers={**headers, "Last-Event-ID": str(answer)}) as response:
        resumed = read_events(response.iter_lines(), lambda events: len(messages(events)) == 2)
    assert [e.data["id"] for e in messages(resumed)] == [staff, later]
    with client.stream("GET", f"{url}?after={staff}", headers=headers) as response:
        resumed = read_events(response.iter_lines(), lambda events: len(messages(events)) == 1)
    assert [e.data["id"] for e in messages(resumed)] == [later]


def test_events_need_the_conversations_token(client: httpx.Client) -> None:
    conversation_id, _ = open_conversation(client)
    _, other_headers = open_conversation(client)
    url = f"/api/conversations/{conversation_id}/events"
    assert client.get(url).json()["error"]["code"] == "missing_token"
    refused = client.get(url, headers=other_headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "invalid_token"
    bad_cursor = client.get(url, headers={**other_headers, "Last-Event-ID": "abc"})
    assert bad_cursor.status_code == 422


def test_widget_script_is_served_as_cacheable_javascript(client: httpx.Client) -> None:
    script = client.get("/widget.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "max-age=" in script.headers["cache-control"] and script.headers["etag"]
    assert script.headers["x-content-type-options"] == "nosniff"
    # The widget never renders message text as HTML.
    assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    again = client.get("/widget.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and not again.content
    style = client.get("/widget.css")
    assert style.status_code == 200 and style.headers["content-type"] == "text/css; charset=utf-8"


def test_widget_config_comes_from_the_domain_pack(client: httpx.Client, live_app) -> None:
    config = client.get("/api/widget/config").json()
    assert config["company_name"] == "Lumen & Loom"
    assert config["greeting"].startswith("Hi! I'm the Lumen & Loom assistant")
    assert config["max_message_chars"] == live_app.settings.max_message_chars


def test_demo_pages_embed_the_widget_in_local_mode_only(client: httpx.Client, app_settings: Settings) -> None:
    for path in ("/demo", "/demo/help"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/widget.js"' in page.text
    production = app_settings.model_copy(update={"mode": "production", "secret_key": "not-the-default"})
    with TestClient(create_app(production)) as http:
        assert http.get("/demo").status_code == 404
        assert http.get("/widget.js").status_code == 200


def preflight(http: TestClient | httpx.Client, origin: str) -> httpx.Response:
    return http.options(
        "/api/conversations",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def test_any_site_may_embed_the_widget_in_local_mode(client: httpx.Client) -> None:
    allowed = preflight(client, "https://shop.example.com")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] in ("*", "https://shop.example.com")


def test_outside_local_mode_only_allowed_sites_may_call_the_api(app_settings: Settings) -> None:
    production = app_settings.model_copy(
        update={
            "mode": "production",
            "secret_key": "not-the-default",
            "widget_allowed_origins": ["https://shop.example.com"],
        }
    )
    with TestClient(create_app(production)) as http:
        allowed = preflight(http, "https://shop.example.com")
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "Retry-After" in http.post(
            "/api/conversations", json={}, headers={"Origin": "https://shop.example.com"}
        ).headers.get("access-control-expose-headers", "")
        refused = preflight(http, "https://evil.example.net")
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        # A browser on another site cannot read the answer: no CORS header is sent to it.
        response = http.post("/api/conversations", json={}, headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in response.headers
