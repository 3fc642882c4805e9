"""Live updates of one conversation as server-sent events: new messages and status changes.

One poller per process (serving/live.py) watches every followed conversation in the database, so a
message written by any replica reaches the customer; a stream reads its conversation only when it
changed. Each message event carries its id as the SSE `id:`, so a client that reconnects with
`Last-Event-ID` (or `?after=`) gets what it missed, once.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from conversations import crud
from conversations.models import ConversationStatus, MessagePublic, utcnow
from serving.deps import MAX_ROW_ID, FollowLimited, Services, ServicesDep
from serving.errors import ApiError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/conversations", tags=["customer"])

# How often a quiet stream looks whether its client went away (no database work).
POLL_S = 1.0
HEARTBEAT_S = 15.0
# Streams end after a while and the client reconnects: proxies drop long idle streams anyway, and a
# reconnect checks the token again.
MAX_STREAM_S = 60.0
# How far back to look for messages committed out of id order by concurrent writers (PostgreSQL).
LATE_COMMIT_WINDOW = timedelta(seconds=10)
RETRY_MS = 2000


@dataclass
class Snapshot:
    """What changed in the conversation since the last poll."""

    messages: list[MessagePublic]
    status: ConversationStatus
    agent: str | None


def resume_after(
    after: Annotated[int, Query(ge=0, le=MAX_ROW_ID, description="Send only messages with a larger id")] = 0,
    last_event_id: Annotated[str | None, Header(description="Set by a reconnecting EventSource")] = None,
) -> int:
    """Where the stream starts: the `Last-Event-ID` header, which takes precedence, or `after`. The header
    must be ASCII digits of an id that can exist, else a 422 (`str.isdigit` would let "²" through, and
    thousands of digits would reach the database)."""
    if last_event_id is None:
        return after
    value = last_event_id.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= len(str(MAX_ROW_ID))) or int(value) > MAX_ROW_ID:
        raise ApiError(422, "invalid_request", "Last-Event-ID must be a message id.")
    return int(value)


ResumeAfter = Annotated[int, Depends(resume_after)]


@router.get(
    "/{conversation_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The conversation's live events"}},
)
async def follow_conversation(
    conversation_id: str,
    services: ServicesDep,
    request: Request,
    after: ResumeAfter,
    _: FollowLimited,
) -> StreamingResponse:
    """Stream the conversation: every stored message with an id above `after`, then new ones as they come.

    Events: `message` (a stored message; its SSE `id:` is the message id) and `status`
    (`{"status", "agent"}`, sent first and whenever it changes; `agent` is the staff member answering).
    A `Last-Event-ID` header, sent by reconnecting clients, takes precedence over `after`.
    """
    # ResumeAfter checked the cursor, then FollowLimited the token, before the stream was counted.
    return StreamingResponse(
        follow(services, request, conversation_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def read_changes(services: Services, conversation_id: str, after: int, since_start: int) -> Snapshot:
    with Session(services.engine) as session:
        conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
        messages = crud.list_messages_after(
            session=session,
            conversation_id=conversation_id,
            after_id=after,
            recent_since=utcnow() - LATE_COMMIT_WINDOW,
        )
        return Snapshot(
            messages=[MessagePublic.model_validate(m) for m in messages if m.id is not None and m.id > since_start],
            status=conversation.status,
            agent=crud.latest_staff_author(session=session, conversation_id=conversation_id),
        )


async def follow(services: Services, request: Request, conversation_id: str, after: int) -> AsyncIterator[str]:
    with services.watcher.follow(conversation_id) as changed:
        async for event in follow_changes(services, request, conversation_id, after, changed):
            yield event


async def follow_changes(
    services: Services, request: Request, conversation_id: str, after: int, changed: asyncio.Event
) -> AsyncIterator[str]:
    started = last_write = time.monotonic()
    cursor = after
    sent: set[int] = set()
    shown: tuple[ConversationStatus, str | None] | None = None
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        changed.clear()  # before reading: a change during the read wakes the next pass
        try:
            snapshot = await run_in_threadpool(read_changes, services, conversation_id, cursor, after)
        except crud.ConversationNotFound:
            return
        # Status first: "Dana joined" reads better before Dana's first message than after it.
        if (snapshot.status, snapshot.agent) != shown:
            shown = (snapshot.status, snapshot.agent)
            yield f"event: status\ndata: {json.dumps({'status': snapshot.status, 'agent': snapshot.agent})}\n\n"
            last_write = time.monotonic()
        for message in snapshot.messages:
            if message.id in sent:
                continue
            sent.add(message.id)
            cursor = max(cursor, message.id)
            yield f"id: {message.id}\nevent: message\ndata: {message.model_dump_json()}\n\n"
            last_write = time.monotonic()
        # Until the watcher says the conversation changed: keep the stream alive, notice a client that left.
        while not changed.is_set():
            now = time.monotonic()
            if now - last_write >= HEARTBEAT_S:
                # A comment line: keeps proxies from closing the stream and shows a vanished client sooner.
                yield ": keep-alive\n\n"
                last_write = now
            if now - started >= MAX_STREAM_S:
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=POLL_S)
            if await request.is_disconnected():
                logger.debug("conversation %s: event stream closed by the client", conversation_id)
                return
