"""The customer API: open a conversation, send a message and stream the reply (SSE), read the transcript.

A customer message is committed before the model is called, so a failed reply never loses it.
"""

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session

from conversations import crud
from conversations.models import (
    ConversationCreate,
    ConversationPublic,
    MessageCreate,
    MessagePublic,
)
from serving.chat import ChatService, clean_text
from serving.deps import CustomerToken, OpenLimited, SendLimited, ServicesDep, in_session
from serving.identity import SignedIdentity, verify
from serving.logging import set_conversation_id

router = APIRouter(prefix="/api/conversations", tags=["customer"])


class OpenConversation(ConversationCreate):
    """What a client sends to open a conversation: its channel and, from a site's logged-in page, the customer's
    signed identity (serving/identity.py)."""

    identity: SignedIdentity | None = None


class ConversationOpened(BaseModel):
    """A new conversation and the token that alone can read and write it."""

    conversation: ConversationPublic
    token: str
    verified: bool = False
    """Whether the conversation belongs to a customer the site vouched for (their orders need no e-mail)."""


class Transcript(BaseModel):
    """A conversation with all its messages, oldest first."""

    conversation: ConversationPublic
    messages: list[MessagePublic]


@router.post("", status_code=status.HTTP_201_CREATED)
async def open_conversation(
    services: ServicesDep, _: OpenLimited, body: OpenConversation | None = None
) -> ConversationOpened:
    """One short write: opening never waits on the model or on other customers' replies.

    A signed identity that does not verify is refused (403) and opens nothing."""
    request = body or OpenConversation()
    identity = verify(request.identity, services.settings.widget_identity_secret) if request.identity else None

    def create(session: Session) -> ConversationOpened:
        conversation, token = crud.create_conversation(
            session=session, channel=request.channel, verified_user_id=identity.user_id if identity else None,
            verified_email=identity.email if identity else None,
        )  # fmt: skip
        return ConversationOpened(
            conversation=ConversationPublic.model_validate(conversation), token=token, verified=identity is not None
        )

    return await in_session(services, create)


@router.get("/{conversation_id}")
async def read_transcript(conversation_id: str, token: CustomerToken, services: ServicesDep) -> Transcript:
    def read(session: Session) -> Transcript:
        conversation = crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
        messages = crud.list_messages(session=session, conversation_id=conversation_id)
        return Transcript(
            conversation=ConversationPublic.model_validate(conversation),
            messages=[MessagePublic.model_validate(message) for message in messages],
        )

    return await in_session(services, read)


@router.post(
    "/{conversation_id}/messages",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The reply as server-sent events"}},
)
async def send_message(
    conversation_id: str, body: MessageCreate, token: CustomerToken, services: ServicesDep, _: SendLimited
) -> StreamingResponse:
    """Store the customer's message, then stream the bot's reply as server-sent events.

    Events: `customer_message` (the stored message), `token` (a piece of the reply), `bot_message`
    (the stored reply, `failed` true when the model could not answer), then `done`.
    """
    text = clean_text(body.text, services.settings.max_message_chars)
    stored = await run_in_threadpool(services.chat.store_customer_message, conversation_id, token, text)
    return StreamingResponse(
        stream_reply(services.chat, conversation_id, stored),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sse(event: str, data: object) -> str:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n"


async def stream_reply(chat: ChatService, conversation_id: str, customer: MessagePublic) -> AsyncIterator[str]:
    set_conversation_id(conversation_id)
    # Closed at once when the client goes away, so an interrupted reply is stored before the request ends.
    async with aclosing(chat.turn(conversation_id, customer)) as events:
        async for event in events:
            yield sse(event.name, event.data)
