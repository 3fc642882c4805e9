"""The chat service runs a whole customer turn without HTTP: the reply streamed, the turn stored, and an
apology stored and flagged for staff when the model cannot answer.

vLLM is a stand-in speaking its endpoints (tests/utils/fake_vllm.py); the store and the dialogue manager are real.
"""

import asyncio
from pathlib import Path

from sqlmodel import Session

from conversations import crud
from conversations.models import ConversationStatus, Role
from core.settings import Settings
from serving.chat import ChatEvent, ChatService
from serving.services import build_services
from tests.utils.fake_vllm import FakeVLLM


async def run_turn(chat: ChatService, conversation_id: str, token: str, text: str) -> list[ChatEvent]:
    customer = chat.store_customer_message(conversation_id, token, text)
    return [event async for event in chat.turn(conversation_id, customer)]


def test_a_turn_is_streamed_and_stored_and_a_failed_one_is_flagged(tmp_path: Path, base_model_dir: Path) -> None:
    vllm = FakeVLLM("solo").start()
    database = f"sqlite:///{tmp_path / 'chat.db'}"
    services = build_services(
        Settings(data_dir=tmp_path, base_model=base_model_dir, database_url=database, vllm_url=vllm.url)
    )
    with Session(services.engine) as session:
        conversation, token = crud.create_conversation(session=session, channel="api")

    async def scenario() -> tuple[list[ChatEvent], list[ChatEvent]]:
        # One event loop for both turns, as in the app: the LLM client keeps its connections per loop.
        try:
            answered = await run_turn(services.chat, conversation.id, token, "Hello, where is my parcel?")
        finally:
            vllm.stop()
        return answered, await run_turn(services.chat, conversation.id, token, "Are you still there?")

    events, failed = asyncio.run(scenario())
    names = [event.name for event in events]
    assert names[0] == "customer_message" and "token" in names and names[-3:] == ["bot_message", "conversation", "done"]
    reply = events[-3].data
    streamed = "".join(event.data["text"] for event in events if event.name == "token")
    # The stand-in model's words are in no help article, so the checker replaces them with the passages'
    # own sentences; the customer sees exactly what was stored, and staff see what the model wrote.
    assert reply.text == streamed and not reply.failed
    assert "Answer from solo." not in reply.text

    apology, state = failed[-3].data, failed[-2].data
    assert apology.failed and apology.text == services.pack.unavailable_message
    assert state.needs_attention and state.status == ConversationStatus.bot
    with Session(services.engine) as session:
        stored = crud.list_messages(session=session, conversation_id=conversation.id)
    assert [(m.role, m.text) for m in stored] == [
        (Role.customer, "Hello, where is my parcel?"),
        (Role.bot, reply.text),
        (Role.customer, "Are you still there?"),
        (Role.bot, services.pack.unavailable_message),
    ]
    trace = stored[1].trace or {}
    assert trace["replaced"] == "Answer from solo." and trace["check"]["verdict"] == "replaced"
    services.engine.dispose()
