"""The chat service: one customer turn from stored message to stored reply, driven without HTTP.

It loads the conversation's state, runs the dialogue manager, stores the turn and folds old turns into the
rolling summary afterwards. The customer router only turns its events into server-sent events.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.context import Turn, WindowTooSmall
from bot.dialogue import DialogueManager, TurnResult
from bot.domain import DomainPack
from bot.llm import LLMUnavailable, ModelBusy
from bot.routing import Decision, DialogueState
from conversations import crud
from conversations.models import ConversationPublic, ConversationStatus, MessagePublic, Role, utcnow
from conversations.text import InvalidText, plain_text
from serving import metrics
from serving.desk import Desk
from serving.errors import ApiError

logger = logging.getLogger(__name__)


def clean_text(text: str, max_chars: int) -> str:
    """A message as it is stored: trimmed, not empty, plain text (`plain_text`), at most `max_chars`
    (customers and staff alike)."""
    try:
        text = plain_text(text).strip()
    except InvalidText as error:
        raise ApiError(422, error.code, str(error)) from None
    if not text:
        raise ApiError(422, "empty_message", "The message is empty.")
    if len(text) > max_chars:
        raise ApiError(413, "message_too_long", f"The message is longer than {max_chars} characters.")
    return text


@dataclass
class ChatEvent:
    """One thing that happened in a turn: `customer_message`, `token`, `bot_message`, `conversation`, `done`."""

    name: str
    data: BaseModel | dict


@dataclass
class ChatService:
    """Runs customer turns against the store and the dialogue manager."""

    engine: Engine
    dialogue: DialogueManager
    pack: DomainPack
    # Work that outlives a turn (summary updates); referenced so it is not garbage-collected.
    background: set[asyncio.Task] = field(default_factory=set)
    # Conversations whose turn runs in this process now: the recovery sweep never answers them.
    in_flight: set[str] = field(default_factory=set)
    # Tickets and alerts for conversations handed to people (serving/desk.py); None in tests of the bare chat.
    desk: Desk | None = None

    def store_customer_message(self, conversation_id: str, token: str, text: str) -> MessagePublic:
        """Commit the customer's message before the model is called, so a failed reply never loses it; a customer
        waiting for a human who writes again is an alert for whoever has the conversation."""
        with Session(self.engine) as session:
            crud.open_conversation(session=session, conversation_id=conversation_id, token=token)
            message = crud.add_message(session=session, conversation_id=conversation_id, role=Role.customer, text=text)
            stored = MessagePublic.model_validate(message)
            if self.desk is not None:
                self.desk.customer_wrote(session, conversation_id, text)
            return stored

    async def turn(self, conversation_id: str, customer: MessagePublic) -> AsyncIterator[ChatEvent]:
        """The bot's answer to the stored customer message, as events; the last one is `done`."""
        self.in_flight.add(conversation_id)
        try:
            # Closed with this generator, so a client that goes away still has its partial reply stored.
            async with aclosing(self._turn(conversation_id, customer)) as events:
                async for event in events:
                    yield event
        finally:
            self.in_flight.discard(conversation_id)

    async def _turn(self, conversation_id: str, customer: MessagePublic) -> AsyncIterator[ChatEvent]:
        yield ChatEvent("customer_message", customer)
        turns, state, summary, summarized_upto = await run_in_threadpool(self.load_state, conversation_id)
        pieces: list[str] = []
        result: TurnResult | None = None
        failure: str | None = None
        busy = False
        try:
            async for event in self.dialogue.respond(turns=turns, state=state, summary=summary):
                if isinstance(event, TurnResult):
                    result = event
                else:
                    pieces.append(event)
                    yield ChatEvent("token", {"text": event})
        except (LLMUnavailable, WindowTooSmall) as error:
            logger.warning("conversation %s: no reply (%s)", conversation_id, error)
            busy = isinstance(error, ModelBusy)
            too_small = isinstance(error, WindowTooSmall)
            metrics.record_fallback("window_too_small" if too_small else "busy" if busy else "model_unavailable")
            failure = f"{'busy' if busy else 'model'}: {error}"[:500]
        except Exception as error:  # noqa: BLE001 - any other fault still leaves the customer an answer and a flag
            logger.exception("conversation %s: the turn failed", conversation_id)
            metrics.record_fallback("error")
            failure = f"error: {type(error).__name__}: {error}"[:500]
        finally:
            if result is None and failure is None and pieces:
                # The client went away mid-reply: keep what it was shown so the transcript is honest.
                self.store_partial_reply(conversation_id, pieces, "stream interrupted by the client")

        if result is None and pieces:
            # The model failed mid-reply: the customer saw these words, so the transcript keeps them, marked.
            partial = await run_in_threadpool(self.store_partial_reply, conversation_id, pieces, failure or "cut off")
            yield ChatEvent("bot_message", partial)
        if result is None:
            apology = self.pack.busy_message if busy else self.pack.unavailable_message
            stored = await run_in_threadpool(
                self.store_failed_reply, conversation_id, apology, failure or "no reply", "busy" if busy else None
            )
            yield ChatEvent("bot_message", stored)
        else:
            stored_turn = await run_in_threadpool(self.store_turn, conversation_id, customer.id, result)
            if stored_turn is not None:
                yield ChatEvent("bot_message", stored_turn)
            self.schedule_summary(conversation_id, turns, result, summarized_upto, summary)
        yield ChatEvent("conversation", await run_in_threadpool(self.read_conversation, conversation_id))
        yield ChatEvent("done", {})

    def load_state(self, conversation_id: str) -> tuple[list[Turn], DialogueState, str, int | None]:
        """The turns the bot may see, the dialogue state, and the rolling summary with how far it reaches."""
        with Session(self.engine) as session:
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
                identity_failures=conversation.identity_failures,
                verified_email=conversation.verified_email,
                pending_action=conversation.pending_action,
            )
            return turns, state, conversation.summary, conversation.summarized_upto

    def read_conversation(self, conversation_id: str) -> ConversationPublic:
        with Session(self.engine) as session:
            conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
            return ConversationPublic.model_validate(conversation)

    def store_failed_reply(
        self, conversation_id: str, text: str, error: str, decision: str | None = None
    ) -> MessagePublic:
        """Keep the apology (or an interrupted reply) and flag the conversation for staff.

        `decision` "busy" marks the reply sent because the model could not start in time.
        """
        with Session(self.engine) as session:
            message = crud.add_message(
                session=session, conversation_id=conversation_id, role=Role.bot, text=text, failed=True, error=error,
                model=self.dialogue.models.current(), decision=decision,
            )  # fmt: skip
            crud.flag_for_staff(session=session, conversation_id=conversation_id, reason=error)
            return MessagePublic.model_validate(message)

    def store_partial_reply(self, conversation_id: str, pieces: list[str], error: str) -> MessagePublic:
        """Keep the part of a reply the customer was shown before it broke off (decision "partial", failed)."""
        return self.store_failed_reply(
            conversation_id, "".join(pieces).strip() or "…", f"partial reply: {error}"[:500], "partial"
        )

    def answer_abandoned(self, written_before: datetime) -> int:
        """Answer every customer message left without a reply (the app stopped, or storing the reply failed)
        with the pack's apology, and flag its conversation for staff; returns how many were answered. Every app
        replica sweeps; the store gives each message one apology (crud.answer_unanswered)."""
        answered = 0
        with Session(self.engine) as session:
            waiting = crud.unanswered_customer_messages(session=session, written_before=written_before)
        reason = "interrupted: the reply was never stored (the app stopped or failed mid-turn)"
        for conversation_id, message_id in waiting:
            if conversation_id in self.in_flight:
                continue  # its reply is being written here right now
            with Session(self.engine) as session:
                apology = crud.answer_unanswered(
                    session=session, conversation_id=conversation_id, message_id=message_id,
                    text=self.pack.unavailable_message, reason=reason, model=self.dialogue.models.current(),
                    decision="recovered",
                )  # fmt: skip
            if apology is not None:
                answered += 1
        if answered:
            logger.warning("answered %d customer message(s) left without a reply and flagged them for staff", answered)
        return answered

    async def recover_abandoned(self, after_s: float, every_s: float) -> None:
        """At start and then every `every_s`: `answer_abandoned` for messages older than `after_s` (longer
        than any turn may take, so a reply still being written by any replica is never pre-empted)."""
        while True:
            try:
                await run_in_threadpool(self.answer_abandoned, utcnow() - timedelta(seconds=after_s))
            except Exception:  # noqa: BLE001 - the sweep must keep running; the next one tries again
                logger.exception("answering abandoned messages failed")
            await asyncio.sleep(every_s)

    def store_turn(self, conversation_id: str, customer_id: int, result: TurnResult) -> MessagePublic | None:
        """Persist one turn: the customer message's intent, the dialogue state and the bot's reply."""
        metrics.record_turn(result)
        with Session(self.engine) as session:
            prediction = result.prediction
            crud.set_message_intent(
                session=session,
                message_id=customer_id,
                intent=prediction.intent if prediction else None,
                confidence=prediction.confidence if prediction else None,
            )
            handed_off = result.route.decision is Decision.handoff
            conversation = crud.save_dialogue_state(
                session=session,
                conversation_id=conversation_id,
                status=ConversationStatus(result.state.status),
                slots=result.state.slots,
                misses=result.state.misses,
                negative_streak=result.state.negative_streak,
                pending_intent=result.state.pending_intent,
                identity_failures=result.state.identity_failures,
                pending_action=result.state.pending_action,
                attention_reason=f"handoff: {result.route.reason}" if handed_off else None,
            )
            if self.desk is not None:
                if handed_off:
                    asked = crud.get_message(session=session, conversation_id=conversation_id, message_id=customer_id)
                    self.desk.handed_off(
                        session, conversation_id, reason=result.route.reason, customer_text=asked.text,
                        outside_hours=result.outside_hours, language=result.language,
                    )  # fmt: skip
                self.desk.remember_email(session, conversation_id, result.state.slots)
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
            action = result.action
            if action is not None and (action.get("attempts") or action.get("outcome") == "declined"):
                # Every call (and every change the customer declined) is kept for the audit and the failures list.
                signed = action.get("identity") == "signed" and conversation.verified_user_id
                identity = f"signed {conversation.verified_user_id}" if signed else "e-mail"
                crud.add_action_call(
                    session=session, conversation_id=conversation_id, message_id=message.id, trace=action,
                    identity=identity,
                )  # fmt: skip
                session.commit()
            return MessagePublic.model_validate(message)

    def schedule_summary(
        self, conversation_id: str, turns: list[Turn], result: TurnResult, summarized_upto: int | None, summary: str
    ) -> None:
        """Fold newly evicted turns into the rolling summary after the reply, off the customer's wait."""
        new_turns = self.dialogue.needs_summary(turns, result.dropped_turns, summarized_upto)
        if not new_turns:
            return

        async def update() -> None:
            try:
                updated = await self.dialogue.update_summary(summary, new_turns)
            except LLMUnavailable as error:
                logger.warning("conversation %s: summary not updated (%s)", conversation_id, error)
                return
            upto = max(turn.id for turn in new_turns if turn.id is not None)

            def save() -> None:
                with Session(self.engine) as session:
                    crud.save_summary(
                        session=session, conversation_id=conversation_id, summary=updated, summarized_upto=upto
                    )

            await run_in_threadpool(save)

        task = asyncio.create_task(update())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
