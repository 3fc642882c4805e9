"""Crash recovery: a customer message whose reply was never stored (the app was killed mid-reply, or storing
failed) is answered with the apology and flagged for staff, at start and by the periodic sweep; a reply cut
off by the model server is kept as a partial reply. The kill is a real SIGKILL of `supportbot start`."""

import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from conversations import crud
from conversations.db import make_engine
from conversations.models import Conversation, ConversationStatus, Message, Role, utcnow
from core.settings import Settings
from serving.app import create_app
from tests.conftest import stand_in_settings_at
from tests.utils.conversation import open_conversation, send
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port
from tests.utils.server import running_app, start_process, wait_ready

GROUNDED = ("You can return most items within 30 days of delivery. ", "Items must be unused ", "and in their box.")
# A long grounded answer, word by word: its first sentence is streamed long before the reply is complete.
SLOW_ANSWER = tuple(
    f"{word} "
    for word in [
        "You",
        "can",
        "return",
        "most",
        "items",
        "within",
        "30",
        "days",
        "of",
        "delivery.",
        "Items",
        "must",
        "be",
        "unused",
        "and",
        "in",
        "their",
        "original",
        "packaging,",
        "with",
        "all",
        "parts",
        "and",
        "accessories.",
        "To",
        "start",
        "a",
        "return,",
        "go",
        "to",
        "Account",
        ">",
        "Orders",
        "and",
        "choose",
        "Start",
        "a",
        "return.",
        "We",
        "send",
        "a",
        "prepaid",
        "return",
        "label.",
    ]
)


def messages_of(engine, conversation_id: str) -> list[Message]:
    with Session(engine) as session:
        statement = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
        return list(session.exec(statement).all())


def conversation_of(engine, conversation_id: str) -> Conversation:
    with Session(engine) as session:
        return session.get(Conversation, conversation_id)


def test_abandoned_messages_are_answered_once_and_flagged(stand_in_settings: Settings) -> None:
    # The app's own sweep (at start, in the background) only looks a day back, so it never races the calls below.
    quiet_sweep = {"recovery_every_s": 3600, "unanswered_after_s": 86400}
    with TestClient(create_app(stand_in_settings.model_copy(update=quiet_sweep))) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        engine = services.engine
        old = utcnow() - timedelta(minutes=10)
        with Session(engine) as session:
            abandoned, _ = crud.create_conversation(session=session)
            crud.add_message(session=session, conversation_id=abandoned.id, role=Role.customer, text="Hello?",
                             created_at=old)  # fmt: skip
            answered, _ = crud.create_conversation(session=session)
            crud.add_message(session=session, conversation_id=answered.id, role=Role.customer, text="Hi",
                             created_at=old)  # fmt: skip
            crud.add_message(session=session, conversation_id=answered.id, role=Role.bot, text="Hello!",
                             created_at=old)  # fmt: skip
            with_staff, _ = crud.create_conversation(session=session)
            crud.add_message(session=session, conversation_id=with_staff.id, role=Role.customer, text="Agent?",
                             created_at=old)  # fmt: skip
            crud.save_dialogue_state(session=session, conversation_id=with_staff.id, status=ConversationStatus.human,
                                     slots={}, misses=0, negative_streak=0, pending_intent=None)  # fmt: skip
            in_progress, _ = crud.create_conversation(session=session)
            crud.add_message(session=session, conversation_id=in_progress.id, role=Role.customer, text="Now")
            ids = abandoned.id, answered.id, with_staff.id, in_progress.id

        cutoff = utcnow() - timedelta(minutes=3)
        assert services.chat.answer_abandoned(cutoff) == 1
        assert services.chat.answer_abandoned(cutoff) == 0, "a message is answered only once"
        reply = messages_of(engine, ids[0])[-1]
        assert reply.role == Role.bot and reply.failed and reply.decision == "recovered"
        assert reply.text == services.pack.unavailable_message
        flagged = conversation_of(engine, ids[0])
        assert flagged.needs_attention and flagged.attention_reason.startswith("interrupted")
        for untouched in ids[1:]:
            assert not conversation_of(engine, untouched).needs_attention
        assert [m.role for m in messages_of(engine, ids[2])] == [Role.customer], "staff own that conversation"
        assert [m.role for m in messages_of(engine, ids[3])] == [Role.customer], "its reply may still be coming"


def test_a_reply_cut_off_by_the_model_server_is_kept_as_partial(base_model_dir: Path, tmp_path: Path) -> None:
    breaking = FakeVLLM("breaking", pieces=GROUNDED, break_after=2).start()
    try:
        with TestClient(create_app(stand_in_settings_at(tmp_path, breaking, base_model_dir))) as client:
            conversation_id, headers = open_conversation(client)
            events = send(client, conversation_id, headers, "How many days do I have to return an item?")
    finally:
        breaking.stop()
    shown = "".join(data["text"] for name, data in events if name == "token")
    assert shown.startswith("You can return most items within 30 days of delivery.")
    replies = [data for name, data in events if name == "bot_message"]
    assert [reply["decision"] for reply in replies] == ["partial", None]
    assert replies[0]["failed"] and replies[0]["text"] == shown.strip()
    assert replies[1]["failed"] and "support team" in replies[1]["text"]
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    stored = messages_of(engine, conversation_id)
    assert [(m.role, m.decision) for m in stored] == [(Role.customer, None), (Role.bot, "partial"), (Role.bot, None)]
    assert stored[1].error.startswith("partial reply: model")
    assert conversation_of(engine, conversation_id).needs_attention


def test_after_a_sigkill_mid_reply_the_restarted_app_answers_and_flags(base_model_dir: Path, tmp_path: Path) -> None:
    slow = FakeVLLM("slow", pieces=SLOW_ANSWER, piece_delay_s=0.4).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ, "SUPPORTBOT_DATA_DIR": str(tmp_path), "SUPPORTBOT_PORT": str(port),
        "SUPPORTBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "SUPPORTBOT_VLLM_URLS": f'["{slow.url}"]',
        "SUPPORTBOT_BASE_MODEL": str(base_model_dir), "SUPPORTBOT_UNANSWERED_AFTER_S": "2",
        "SUPPORTBOT_RECOVERY_EVERY_S": "1",
    }  # fmt: skip
    log = tmp_path / "app.log"
    app = start_process(env, log)
    try:
        wait_ready(url, app, log)
        with httpx.Client(base_url=url, timeout=60) as http:
            conversation_id, headers = open_conversation(http)
            with http.stream(
                "POST",
                f"/api/conversations/{conversation_id}/messages",
                json={"text": "How many days do I have to return an item?"},
                headers=headers,
            ) as reply:
                for line in reply.iter_lines():  # fmt: skip
                    if line == "event: token":
                        break
                app.send_signal(signal.SIGKILL)
                app.wait(timeout=30)
        engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
        before = messages_of(engine, conversation_id)
        assert [m.role for m in before] == [Role.customer], [(m.text, m.decision, m.error) for m in before]

        killed_at = time.monotonic()
        app = start_process(env, log)
        wait_ready(url, app, log)
        while time.monotonic() - killed_at < 120 and not conversation_of(engine, conversation_id).needs_attention:
            time.sleep(0.5)
        stored = messages_of(engine, conversation_id)
        assert [(m.role, m.decision) for m in stored] == [(Role.customer, None), (Role.bot, "recovered")]
        with httpx.Client(base_url=url, timeout=60) as http:
            transcript = http.get(f"/api/conversations/{conversation_id}", headers=headers).json()
        assert transcript["conversation"]["needs_attention"] is True
        assert "support team" in transcript["messages"][-1]["text"]
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGINT)
            app.wait(timeout=60)
        slow.stop()


def test_a_reply_the_customer_walked_away_from_is_kept_as_partial(base_model_dir: Path, tmp_path: Path) -> None:
    slow = FakeVLLM("slow", pieces=SLOW_ANSWER, piece_delay_s=0.3).start()
    try:
        with running_app(stand_in_settings_at(tmp_path, slow, base_model_dir)) as url:
            with httpx.Client(base_url=url, timeout=60) as http:
                conversation_id, headers = open_conversation(http)
                with http.stream("POST", f"/api/conversations/{conversation_id}/messages", headers=headers,
                                 json={"text": "How many days do I have to return an item?"}) as reply:  # fmt: skip
                    lines = reply.iter_lines()
                    shown = next(json.loads(after.removeprefix("data: ")) for line in lines if line == "event: token"
                                 for after in [next(lines)])  # fmt: skip
            engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(messages_of(engine, conversation_id)) < 2:
                time.sleep(0.2)
    finally:
        slow.stop()
    stored = messages_of(engine, conversation_id)
    assert [(m.role, m.decision) for m in stored] == [(Role.customer, None), (Role.bot, "partial")]
    assert stored[1].text.startswith(shown["text"].strip()) and stored[1].failed
    assert stored[1].error == "partial reply: stream interrupted by the client"
