"""The customer API: open a conversation, send a message and stream the reply (SSE), read the transcript.

A customer message is committed before the model is called, so a failed reply never loses it.
"""

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session

from bot.context import Turn, WindowTooSmall
from bot.dialogue import ReplyFinished, ReplyStarted
from bot.llm import LLMUnavailable
from conversations import crud
from conversations.models import ConversationCreate, ConversationPublic, MessageCreate, MessagePublic, Role
from serving.deps import CustomerToken, Services, ServicesDep, SessionDep
from serving.errors import ApiError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/conversations", tags=["customer"])


class ConversationOpened(BaseModel):
    """A new conversation and the token that alone can read and write it."""

    conversation: ConversationPublic
    token: str


class Transcript(BaseModel):
    """A conversation with all its messages, oldest first."""

    conversation: ConversationPublic
    messages: list[MessagePublic]


@router.post("", status_code=status.HTTP_201_CREATED)
def open_conversation(session: SessionDep, body: ConversationCreate | None = None) -> ConversationOpened:
    conversation, token = crud.create_conversation(session=session, channel=(body or ConversationCreate()).channel)
    return ConversationOpened(conversation=ConversationPublic.model_validate(conversation), token=token)


@router.get("/{conversation_id}")
def read_transcript(conversation_id: str, token: CustomerToken, session: SessionDep) -> Transcript:
    conversation = crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
    messages = crud.list_messages(session=session, conversation_id=conversation_id)
    return Transcript(
        conversation=ConversationPublic.model_validate(conversation),
        messages=[MessagePublic.model_validate(message) for message in messages],
    )


def clean_text(text: str, max_chars: int) -> str:
    text = text.strip()
    if not text:
        raise ApiError(422, "empty_message", "The message is empty.")
    if "\x00" in text:
        raise ApiError(422, "invalid_text", "The message contains a NUL character.")
    if len(text) > max_chars:
        raise ApiError(413, "message_too_long", f"The message is longer than {max_chars} characters.")
    return text


@router.post(
    "/{conversation_id}/messages",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The reply as server-sent events"}},
)
async def send_message(
    conversation_id: str, body: MessageCreate, token: CustomerToken, services: ServicesDep
) -> StreamingResponse:
    """Store the customer's message, then stream the bot's reply as server-sent events.

    Events: `customer_message` (the stored message), `token` (a piece of the reply), `bot_message`
    (the stored reply, `failed` true when the model could not answer), then `done`.
    """
    text = clean_text(body.text, services.settings.max_message_chars)

    def store() -> MessagePublic:
        with Session(services.engine) as session:
            crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
            message = crud.add_message(session=session, conversation_id=conversation_id, role=Role.customer, text=text)
            return MessagePublic.model_validate(message)

    stored = await run_in_threadpool(store)
    return StreamingResponse(
        stream_reply(services, conversation_id, stored),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sse(event: str, data: object) -> str:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n"


async def stream_reply(services: Services, conversation_id: str, customer: MessagePublic) -> AsyncIterator[str]:
    yield sse("customer_message", customer)

    def history() -> list[Turn]:
        with Session(services.engine) as session:
            messages = crud.list_messages(session=session, conversation_id=conversation_id)
            return [Turn(role=message.role, text=message.text) for message in messages if not message.failed]

    def store_reply(text: str, **details: object) -> MessagePublic:
        with Session(services.engine) as session:
            message = crud.add_message(
                session=session, conversation_id=conversation_id, role=Role.bot, text=text, **details
            )
            if details.get("failed"):
                crud.flag_for_staff(session=session, conversation_id=conversation_id, reason=str(details["error"]))
            return MessagePublic.model_validate(message)

    pieces: list[str] = []
    model: str | None = None
    stored: MessagePublic | None = None
    try:
        async for event in services.dialogue.reply(await run_in_threadpool(history)):
            if isinstance(event, ReplyStarted):
                model = event.model
            elif isinstance(event, ReplyFinished):
                stored = await run_in_threadpool(
                    store_reply,
                    "".join(pieces).strip(),
                    model=event.model,
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    first_token_ms=event.first_token_ms,
                    latency_ms=event.latency_ms,
                )
            else:
                pieces.append(event)
                yield sse("token", {"text": event})
    except (LLMUnavailable, WindowTooSmall) as error:
        logger.warning("conversation %s: no reply (%s)", conversation_id, error)
        stored = await run_in_threadpool(
            store_reply, services.pack.unavailable_message, model=model, failed=True, error=f"model: {error}"[:500]
        )
    finally:
        if stored is None and pieces:
            # The client went away mid-reply: keep what it was shown so the transcript is honest.
            store_reply("".join(pieces).strip(), model=model, failed=True, error="stream interrupted")
    if stored is not None:
        yield sse("bot_message", stored)
    yield sse("done", {})
