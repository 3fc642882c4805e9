"""A customer holds a conversation through the HTTP API of the running application."""

import httpx
from sqlmodel import Session, select

from conversations.db import make_engine
from conversations.models import Conversation, Message
from runtime.registry import AdapterRegistry
from tests.utils.conversation import bot_reply, open_conversation, send


def test_multi_turn_conversation_is_answered_by_the_adapter_and_stored(client: httpx.Client, live_app) -> None:
    conversation_id, headers = open_conversation(client)
    adapter = AdapterRegistry(live_app.settings.adapters_dir).active()
    assert adapter is not None and adapter.startswith("domain-v")

    questions = ["How long do I have to return a lamp?", "Do you ship to Canada?", "Thanks!"]
    decisions = []
    for question in questions:
        events = send(client, conversation_id, headers, question)
        names = [name for name, _ in events]
        assert names[0] == "customer_message" and names[-3:] == ["bot_message", "conversation", "done"]
        assert names.count("token") >= 2, "the reply must stream in pieces"
        streamed = "".join(data["text"] for name, data in events if name == "token").strip()
        reply = bot_reply(events)
        assert reply["role"] == "bot" and not reply["failed"]
        assert reply["text"] == streamed and streamed
        decisions.append(reply["decision"])
        if reply["decision"] == "answer":
            # The model that answered is the domain adapter, not the base model.
            assert reply["model"] == adapter
    assert "answer" in decisions, decisions

    transcript = client.get(f"/api/conversations/{conversation_id}", headers=headers).json()
    roles = [message["role"] for message in transcript["messages"]]
    assert roles == ["customer", "bot"] * 3
    assert [m["text"] for m in transcript["messages"][::2]] == questions

    # The same turns are in the database, with the measurements staff will need.
    with Session(make_engine(live_app.settings.resolved_database_url)) as session:
        stored = session.exec(select(Message).where(Message.conversation_id == conversation_id)).all()
        assert len(stored) == 6
        bot = [message for message in stored if message.role == "bot"]
        answered = [m for m in bot if m.decision == "answer"]
        assert all(m.model == adapter and m.prompt_tokens for m in answered)
        # vLLM reports the completion's length at its end; a reply the checker stopped early never gets there.
        completed = [m for m in answered if (m.trace or {}).get("check", {}).get("verdict") != "replaced"]
        assert all(m.completion_tokens for m in completed)
        assert all(m.latency_ms and m.first_token_ms and m.first_token_ms <= m.latency_ms for m in answered)
        # Every bot turn explains itself: intent, confidence, decision, adapter, stage latencies.
        assert all(m.trace and m.trace["decision"] == m.decision and m.trace["stages_ms"]["total"] for m in bot)
        customer = [message for message in stored if message.role == "customer"]
        assert all(message.intent and message.confidence is not None for message in customer)
        assert session.get(Conversation, conversation_id).needs_attention is False


def test_the_adapter_is_loaded_in_vllm(live_app) -> None:
    models = httpx.get(f"{live_app.settings.resolved_vllm_url}/v1/models", timeout=10).json()
    names = {model["id"] for model in models["data"]}
    assert {"base", AdapterRegistry(live_app.settings.adapters_dir).active()} <= names


def test_a_token_opens_only_its_own_conversation(client: httpx.Client) -> None:
    first_id, first_headers = open_conversation(client)
    second_id, second_headers = open_conversation(client)
    assert client.get(f"/api/conversations/{first_id}", headers=first_headers).status_code == 200
    response = client.get(f"/api/conversations/{first_id}", headers=second_headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_token"


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "model_server": True}
