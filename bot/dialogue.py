"""The dialogue manager: decides and produces the bot's side of every customer turn.

Per turn: extract details, classify the intent, route, build a prompt that fits the model's window,
and stream the LLM's reply (or a fixed reply for rephrase, ask-for-details, handoff and refusals).
"""

import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from bot.context import Prompt, TokenCounter, Turn, fit_recent_turns, relevant_policies, system_text
from bot.domain import DomainPack
from bot.guard import LeakGuard
from bot.intents import IntentClassifier, Prediction
from bot.llm import ChatModel, ReplyDone
from bot.routing import Decision, DialogueState, Route, Router
from bot.sentiment import is_negative
from bot.slots import SlotExtractor, render_slots

logger = logging.getLogger(__name__)

T = TypeVar("T")

REFUSAL = (
    "Sorry, I can't share or change how I work. I'm happy to help with orders, shipping, returns, "
    "refunds and your account."
)
SUMMARY_INSTRUCTION = (
    "You keep a short running summary of a customer-support chat. Update the summary with the new "
    "messages. Keep order numbers, e-mails, products and what the customer wants. At most 60 words."
)


class Swappable(Generic[T]):
    """A value that is replaced atomically while readers keep working (served model, classifier)."""

    def __init__(self, value: T) -> None:
        self._value = value
        self._lock = threading.Lock()

    def current(self) -> T:
        with self._lock:
            return self._value

    def switch(self, value: T) -> None:
        with self._lock:
            self._value = value


@dataclass
class TurnResult:
    """Everything decided and measured for one customer turn; stored with the bot's reply."""

    route: Route
    prediction: Prediction | None
    state: DialogueState
    text: str | None = None  # None when the bot stays silent
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    dropped_turns: int = 0
    summary_used: bool = False
    leak_blocked: bool = False
    stages_ms: dict[str, float] = field(default_factory=dict)

    def trace(self) -> dict:
        """What staff see next to the reply: why the bot said what it said."""
        return {
            "decision": self.route.decision.value,
            "reason": self.route.reason,
            "intent": self.route.intent,
            "confidence": self.prediction.confidence if self.prediction else None,
            "top_intents": [[s.intent, round(s.confidence, 4)] for s in self.prediction.top] if self.prediction else [],
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "dropped_turns": self.dropped_turns,
            "summary_used": self.summary_used,
            "leak_blocked": self.leak_blocked,
            "slots": dict(self.state.slots),
            "stages_ms": self.stages_ms,
        }


def to_langchain(messages: Sequence[dict[str, str]]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[message["role"]](content=message["content"]) for message in messages]


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


class DialogueManager:
    """Runs one conversation turn at a time; keeps no per-conversation state of its own."""

    def __init__(
        self,
        *,
        pack: DomainPack,
        llm: ChatModel,
        counter: TokenCounter,
        models: Swappable[str],
        classifier: Swappable[IntentClassifier | None],
        router: Router,
        context_tokens: int,
        reply_tokens: int,
        summary_model: str,
        slots: SlotExtractor | None = None,
    ) -> None:
        self.pack = pack
        self.llm = llm
        self.counter = counter
        self.models = models
        self.classifier = classifier
        self.router = router
        self.prompt_budget = context_tokens - reply_tokens
        self.summary_model = summary_model
        self.slots = slots or SlotExtractor(pack.slot_patterns, pack.products)

    def plan(self, text: str, state: DialogueState) -> tuple[Route, Prediction | None, DialogueState, dict]:
        """Classify and route one customer message; returns the route and the state after it."""
        stages: dict[str, float] = {}
        started = time.perf_counter()
        slots = {**state.slots, **self.slots.extract(text)}
        classifier = self.classifier.current()
        prediction = classifier.predict(text) if classifier is not None and text.strip() else None
        stages["classify"] = _ms(started)
        started = time.perf_counter()
        seen = replace(state, slots=slots)
        route = self.router.route(text=text, prediction=prediction, state=seen)
        stages["route"] = _ms(started)
        return route, prediction, self._next_state(seen, route, text), stages

    @staticmethod
    def _next_state(state: DialogueState, route: Route, text: str) -> DialogueState:
        if route.decision is Decision.silent:
            return state
        negative_streak = state.negative_streak + 1 if is_negative(text) else 0
        if route.decision is Decision.rephrase:
            return replace(state, misses=state.misses + 1, negative_streak=negative_streak)
        if route.decision is Decision.handoff:
            return replace(state, status="pending_human", misses=0, negative_streak=0, pending_intent=None)
        if route.decision is Decision.ask_details:
            return replace(state, misses=0, negative_streak=negative_streak, pending_intent=route.intent)
        return replace(state, misses=0, negative_streak=negative_streak, pending_intent=None)

    def fixed_reply(self, route: Route) -> str | None:
        """The reply for decisions that need no LLM; None for `answer` and `silent`."""
        if route.decision is Decision.rephrase:
            return self.pack.rephrase_message
        if route.decision is Decision.handoff:
            return self.pack.handoff_message
        if route.decision is Decision.refuse:
            return REFUSAL
        if route.decision is Decision.ask_details and route.intent:
            return self.pack.intent(route.intent).ask
        return None

    def build_prompt(self, turns: Sequence[Turn], route: Route, state: DialogueState, summary: str) -> Prompt:
        if route.intent and route.intent in {intent.name for intent in self.pack.intents}:
            policies = [self.pack.policy(policy_id) for policy_id in self.pack.intent(route.intent).policies]
        else:
            latest = next((turn.text for turn in reversed(turns) if turn.role == "customer"), "")
            policies = relevant_policies(self.pack, latest)
        details = render_slots(state.slots)
        prompt = fit_recent_turns(
            system=system_text(self.pack, policies, details=details), turns=turns, budget=self.prompt_budget,
            counter=self.counter,
        )  # fmt: skip
        if prompt.dropped_turns and summary:
            # Older turns were evicted: bring back what they said through the running summary.
            prompt = fit_recent_turns(
                system=system_text(self.pack, policies, details=details, summary=summary), turns=turns,
                budget=self.prompt_budget, counter=self.counter,
            )  # fmt: skip
        return prompt

    async def respond(
        self, *, turns: Sequence[Turn], state: DialogueState, summary: str = ""
    ) -> AsyncIterator[str | TurnResult]:
        """Stream the reply to the newest customer turn (the last of `turns`), then a `TurnResult`.

        Raises `bot.llm.LLMUnavailable` when the model is needed and cannot answer.
        """
        started = time.perf_counter()
        text = turns[-1].text if turns else ""
        route, prediction, next_state, stages = self.plan(text, state)
        result = TurnResult(route=route, prediction=prediction, state=next_state, stages_ms=stages)
        if route.decision is Decision.silent:
            result.stages_ms["total"] = _ms(started)
            yield result
            return
        fixed = self.fixed_reply(route)
        if fixed is not None:
            result.text = fixed
            result.stages_ms["total"] = _ms(started)
            # Fixed replies stream word by word too, so the customer sees them arrive like any other.
            for word in re.findall(r"\S+\s*", fixed):
                yield word
            yield result
            return

        prompt_started = time.perf_counter()
        prompt = self.build_prompt(turns, route, next_state, summary)
        result.stages_ms["prompt"] = _ms(prompt_started)
        result.prompt_tokens, result.dropped_turns = prompt.tokens, prompt.dropped_turns
        result.summary_used = "Summary of the earlier conversation" in prompt.messages[0]["content"]
        result.model = self.models.current()
        guard = LeakGuard(self.pack.system_prompt)
        pieces: list[str] = []
        llm_started = time.perf_counter()
        result.stages_ms["before_llm"] = _ms(started)
        async for event in self.llm.stream(to_langchain(prompt.messages), model=result.model):
            if isinstance(event, ReplyDone):
                result.model = event.model
                result.prompt_tokens = event.prompt_tokens or prompt.tokens
                result.completion_tokens = event.completion_tokens
                break
            if "llm_first_token" not in result.stages_ms:
                result.stages_ms["llm_first_token"] = _ms(llm_started)
            if released := guard.feed(event):
                pieces.append(released)
                yield released
            if guard.leaked:
                break
        if guard.leaked:
            result.leak_blocked = True
            yield "\n" + REFUSAL
            pieces.append("\n" + REFUSAL)
        elif tail := guard.flush():
            pieces.append(tail)
            yield tail
        result.stages_ms["llm_total"] = _ms(llm_started)
        result.stages_ms["total"] = _ms(started)
        result.text = "".join(pieces).strip()
        yield result

    def needs_summary(self, turns: Sequence[Turn], dropped_turns: int, summarized_upto: int | None) -> list[Turn]:
        """Evicted turns that the running summary does not cover yet."""
        evicted = turns[:dropped_turns]
        return [turn for turn in evicted if turn.id is None or summarized_upto is None or turn.id > summarized_upto]

    async def update_summary(self, summary: str, new_turns: Sequence[Turn]) -> str:
        """Fold `new_turns` into the running summary with one LLM call (never from scratch)."""
        lines = "\n".join(f"{'Customer' if t.role == 'customer' else 'Support'}: {t.text}" for t in new_turns)
        request = f"Current summary: {summary or '(empty)'}\n\nNew messages:\n{lines}\n\nUpdated summary:"
        pieces = [
            event
            async for event in self.llm.stream(
                [SystemMessage(content=SUMMARY_INSTRUCTION), HumanMessage(content=request)], model=self.summary_model
            )
            if isinstance(event, str)
        ]
        return "".join(pieces).strip() or summary
