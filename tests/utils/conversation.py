"""Helpers to hold a conversation through the customer API and read its server-sent events."""

import json
from typing import Any, Protocol


class HttpClient(Protocol):
    def post(self, url: str, **kwargs: Any) -> Any: ...
    def stream(self, method: str, url: str, **kwargs: Any) -> Any: ...


def parse_sse(lines: list[str]) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def open_conversation(client: HttpClient) -> tuple[str, dict[str, str]]:
    response = client.post("/api/conversations", json={"channel": "api"})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["conversation"]["id"], {"Authorization": f"Bearer {body['token']}"}


def send(client: HttpClient, conversation_id: str, headers: dict[str, str], text: str) -> list[tuple[str, dict]]:
    """Send one message and return the reply's events, checking the stream's framing."""
    with client.stream(
        "POST", f"/api/conversations/{conversation_id}/messages", json={"text": text}, headers=headers
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(list(response.iter_lines()))


def bot_reply(events: list[tuple[str, dict]]) -> dict:
    """The stored bot message of a reply stream (exactly one is expected)."""
    replies = [data for name, data in events if name == "bot_message"]
    assert len(replies) == 1, events
    return replies[0]
