"""The customer API: open a conversation, send a message and stream the reply (SSE), read the transcript.

A customer message is committed before the model is called, so a failed reply never loses it.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session

from bot.context import Turn, WindowTooSmall
from bot.dialogue import TurnResult
from bot.llm import LLMUnavailable, ModelBusy
from bot.routing import Decision, DialogueState
from conversations import crud
from conversations.models import (
    ConversationCreate,
    ConversationPublic,
    ConversationStatus,
    MessageCreate,
    MessagePublic,
    Role,
)
from serving import metrics
from serving.deps import CustomerToken, Services, ServicesDep, in_session
from serving.errors import ApiError
from serving.limits import SendLimited
from serving.logging import set_conversation_id

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
async def open_conversation(services: ServicesDep, body: ConversationCreate | None = None) -> ConversationOpened:
    """One short write: opening never waits on the model or on other customers' replies."""
    channel = (body or ConversationCreate()).channel

    def create(session: Session) -> ConversationOpened:
        conversation, token = crud.create_conversation(session=session, channel=channel)
        return ConversationOpened(conversation=ConversationPublic.model_validate(conversation), token=token)

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
    conversation_id: str, body: MessageCreate, token: CustomerToken, services: ServicesDep, _: SendLimited
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
    set_conversation_id(conversation_id)
    yield sse("customer_message", customer)

    def load() -> tuple[list[Turn], DialogueState, str, int | None]:
        with Session(services.engine) as session:
            conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
            messages = crud.list_messages(session=session, conversation_id=conversation_id)
            turns = [Turn(role=m.role, text=m.text, id=m.id) for m in messages if not m.failed]
            # A customer writing again after the conversation was resolved reopens it with the bot.
            status = conversation.status
            if status == ConversationStatus.resolved:
                status = ConversationStatus.bot
            state = DialogueState(
                status=status,
                slots=dict(conversation.slots or {}),
                misses=conversation.misses,
                negative_streak=conversation.negative_streak,
                pending_intent=conversation.pending_intent,
            )
            return turns, state, conversation.summary, conversation.summarized_upto

    turns, state, summary, summarized_upto = await run_in_threadpool(load)
    pieces: list[str] = []
    result: TurnResult | None = None
    failure: str | None = None
    busy = False
    try:
        async for event in services.dialogue.respond(turns=turns, state=state, summary=summary):
            if isinstance(event, TurnResult):
                result = event
            else:
                pieces.append(event)
                yield sse("token", {"text": event})
    except (LLMUnavailable, WindowTooSmall) as error:
        logger.warning("conversation %s: no reply (%s)", conversation_id, error)
        busy = isinstance(error, ModelBusy)
        reason = "window_too_small" if isinstance(error, WindowTooSmall) else "busy" if busy else "model_unavailable"
        metrics.record_fallback(reason)
        failure = f"{'busy' if busy else 'model'}: {error}"[:500]
    finally:
        if result is None and failure is None and pieces:
            # The client went away mid-reply: keep what it was shown so the transcript is honest.
            store_failed_reply(services, conversation_id, "".join(pieces).strip(), "stream interrupted")

    if result is None:
        apology = services.pack.busy_message if busy else services.pack.unavailable_message
        stored = await run_in_threadpool(
            store_failed_reply, services, conversation_id, apology, failure or "no reply", "busy" if busy else None
        )
        yield sse("bot_message", stored)
    else:
        stored_turn = await run_in_threadpool(store_turn, services, conversation_id, customer.id, result)
        if stored_turn is not None:
            yield sse("bot_message", stored_turn)
        schedule_summary(services, conversation_id, turns, result, summarized_upto, summary)
    yield sse("conversation", await run_in_threadpool(read_conversation, services, conversation_id))
    yield sse("done", {})


def read_conversation(services: Services, conversation_id: str) -> ConversationPublic:
    with Session(services.engine) as session:
        conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
        return ConversationPublic.model_validate(conversation)


def store_failed_reply(
    services: Services, conversation_id: str, text: str, error: str, decision: str | None = None
) -> MessagePublic:
    """Keep the apology (or an interrupted reply) and flag the conversation for staff.

    `decision` "busy" marks the reply sent because the model could not start in time.
    """
    with Session(services.engine) as session:
        message = crud.add_message(
            session=session, conversation_id=conversation_id, role=Role.bot, text=text, failed=True, error=error,
            model=services.dialogue.models.current(), decision=decision,
        )  # fmt: skip
        crud.flag_for_staff(session=session, conversation_id=conversation_id, reason=error)
        return MessagePublic.model_validate(message)


def store_turn(services: Services, conversation_id: str, customer_id: int, result: TurnResult) -> MessagePublic | None:
    """Persist one turn: the customer message's intent, the dialogue state and the bot's reply."""
    metrics.record_turn(result)
    with Session(services.engine) as session:
        prediction = result.prediction
        crud.set_message_intent(
            session=session,
            message_id=customer_id,
            intent=prediction.intent if prediction else None,
            confidence=prediction.confidence if prediction else None,
        )
        handed_off = result.route.decision is Decision.handoff
        crud.save_dialogue_state(
            session=session,
            conversation_id=conversation_id,
            status=ConversationStatus(result.state.status),
            slots=result.state.slots,
            misses=result.state.misses,
            negative_streak=result.state.negative_streak,
            pending_intent=result.state.pending_intent,
            attention_reason=f"handoff: {result.route.reason}" if handed_off else None,
        )
        if result.text is None:
            return None
        stages = result.stages_ms
        first_token = stages.get("llm_first_token")
        message = crud.add_message(
            session=session,
            conversation_id=conversation_id,
            role=Role.bot,
            text=result.text,
            model=result.model,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            first_token_ms=round(first_token + stages["before_llm"], 1) if first_token is not None else None,
            latency_ms=stages.get("total"),
            intent=result.route.intent,
            confidence=prediction.confidence if prediction else None,
            decision=result.route.decision.value,
            trace=result.trace(),
        )
        return MessagePublic.model_validate(message)


def schedule_summary(
    services: Services,
    conversation_id: str,
    turns: list[Turn],
    result: TurnResult,
    summarized_upto: int | None,
    summary: str,
) -> None:
    """Fold newly evicted turns into the rolling summary after the reply, off the customer's wait."""
    new_turns = services.dialogue.needs_summary(turns, result.dropped_turns, summarized_upto)
    if not new_turns:
        return

    async def update() -> None:
        try:
            updated = await services.dialogue.update_summary(summary, new_turns)
        except LLMUnavailable as error:
            logger.warning("conversation %s: summary not updated (%s)", conversation_id, error)
            return
        upto = max(turn.id for turn in new_turns if turn.id is not None)

        def save() -> None:
            with Session(services.engine) as session:
                crud.save_summary(
                    session=session, conversation_id=conversation_id, summary=updated, summarized_upto=upto
                )

        await run_in_threadpool(save)

    task = asyncio.create_task(update())
    services.background.add(task)
    task.add_done_callback(services.background.discard)
