"""Many customers at once against the real app, on SQLite and on PostgreSQL, with a two-connection pool.

Each customer opens a conversation, keeps its event stream open as the widget does and sends two messages
(tests/utils/load.py). The model is the test session's real vLLM server; at most two replies are generated
at once and a reply that has not started within a few seconds becomes the stored, flagged "busy" reply,
so the run stays short while both real answers and the busy path happen.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from conversations.models import Conversation, Message, Role
from core.settings import Settings
from tests.utils.browser import Server
from tests.utils.load import report, run_load

# More customers than worker threads (40) plus pooled connections: a route that holds a connection while
# waiting for a thread would deadlock here.
CUSTOMERS = 60
TURNS = 2


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'load.db'}"
        return
    yield request.getfixturevalue("postgres_url")


def test_many_customers_at_once_get_no_server_error_and_lose_nothing(app_settings: Settings, database_url: str) -> None:
    settings = app_settings.model_copy(
        update={
            "database_url": database_url,
            "db_pool_size": 2,
            "db_max_overflow": 0,
            "llm_max_concurrent": 2,
            "busy_reply_after_s": 5.0,
            "rate_limit_per_minute_address": 100_000,
            "new_conversations_per_minute_address": 100_000,
            "retention_every_hours": 0,
        }
    )
    with Server(settings) as server:
        run, customers, _ = asyncio.run(run_load(server.url, CUSTOMERS, TURNS, hold_s=15.0))
        with Session(server.engine) as session:
            bot_messages = session.exec(select(Message).where(Message.role == Role.bot)).all()
            flagged = {c.id for c in session.exec(select(Conversation).where(Conversation.needs_attention)).all()}
    results = report(run, customers, 0.0)

    # 503 (busy, try again after Retry-After) is allowed and retried as a customer would; nothing else 5xx.
    assert not [key for key in results["http"] if key.split()[1].startswith("5") and not key.endswith("503")], results
    assert results["conversations_opened"] == CUSTOMERS, results
    assert results["messages_stored"] == CUSTOMERS * TURNS and results["messages_given_up"] == 0, results
    assert results["messages_lost"] == 0 and results["unanswered"] == 0, results
    replies = results["replies"]
    assert replies.get("answered", 0) + replies.get("busy", 0) == CUSTOMERS * TURNS, results
    assert replies.get("busy", 0) > 0, "sixty customers and two generation slots: someone waits past the bound"
    assert results["not_streamed"] == 0, "every message reaches the customer's event stream"

    busy = [message for message in bot_messages if message.decision == "busy"]
    assert len(busy) == replies["busy"]
    assert all(message.failed and (message.error or "").startswith("busy") for message in busy)
    assert {message.conversation_id for message in busy} <= flagged, "busy conversations are flagged for staff"
