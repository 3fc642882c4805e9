"""Routing: what the bot does with a customer turn (answer, ask for details, rephrase, hand off...).

Rules read the intent prediction, the intent's handling in the domain pack, and the conversation state.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum

from bot.domain import DomainPack
from bot.guard import looks_like_injection
from bot.intents import Prediction
from bot.sentiment import is_negative


class Decision(StrEnum):
    """What the bot does with one customer turn."""

    answer = "answer"  # the LLM answers, with the intent's policies in the prompt
    ask_details = "ask_details"  # the intent needs details (an order number...) the customer has not given
    rephrase = "rephrase"  # not understood: ask once to rephrase
    handoff = "handoff"  # a human takes over
    refuse = "refuse"  # a request for the bot's instructions
    silent = "silent"  # a human owns the conversation: the bot says nothing


@dataclass
class DialogueState:
    """What the dialogue manager remembers between turns; stored with the conversation."""

    status: str = "bot"
    slots: dict[str, str] = field(default_factory=dict)
    misses: int = 0
    negative_streak: int = 0
    pending_intent: str | None = None


@dataclass(frozen=True)
class Route:
    """The decision for one turn and why it was taken."""

    decision: Decision
    intent: str | None
    reason: str
    missing_slots: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingConfig:
    """Thresholds of the routing rules."""

    confidence_threshold: float = 0.5
    """Below this top-1 confidence the message counts as not understood."""
    margin: float = 0.1
    """Below this gap between the top-1 and top-2 confidences the message counts as ambiguous."""
    misses_before_handoff: int = 2
    """Not-understood turns in a row before a human is offered instead of another rephrase request."""
    negative_turns_before_handoff: int = 2
    """Angry customer turns in a row before the conversation is handed to a human."""
    handoff_intents: tuple[str, ...] = ()
    """Intents that always go to a human, on top of those the pack marks `handoff`."""


class Router(ABC):
    """Decides what the bot does with one customer turn."""

    @abstractmethod
    def route(self, *, text: str, prediction: Prediction | None, state: DialogueState) -> Route: ...


class RuleRouter(Router):
    """The product's routing rules, in order of precedence."""

    def __init__(self, pack: DomainPack, config: RoutingConfig) -> None:
        self.pack = pack
        self.config = config
        self.known_intents = {intent.name for intent in pack.intents}

    def route(self, *, text: str, prediction: Prediction | None, state: DialogueState) -> Route:
        config = self.config
        if state.status in ("pending_human", "human"):
            return Route(Decision.silent, None, f"conversation is {state.status}")
        if looks_like_injection(text):
            return Route(Decision.refuse, None, "asks for or overrides the bot's instructions")
        if is_negative(text) and state.negative_streak + 1 >= config.negative_turns_before_handoff:
            return Route(Decision.handoff, prediction.intent if prediction else None, "sustained negative sentiment")

        # Details asked for last turn: a reply that supplies them continues that intent.
        if state.pending_intent and state.pending_intent in self.known_intents:
            pending = self.pack.intent(state.pending_intent)
            missing = tuple(slot for slot in pending.required_slots if slot not in state.slots)
            if not missing:
                return Route(Decision.answer, pending.name, "details received")

        if prediction is None:
            return Route(Decision.answer, None, "no intent classifier")
        understood = prediction.confidence >= config.confidence_threshold and prediction.margin >= config.margin
        if not understood:
            if state.misses + 1 >= config.misses_before_handoff:
                return Route(Decision.handoff, prediction.intent, "not understood twice")
            return Route(
                Decision.rephrase,
                prediction.intent,
                f"low confidence {prediction.confidence:.2f} (margin {prediction.margin:.2f})",
            )
        intent = self.pack.intent(prediction.intent) if prediction.intent in self.known_intents else None
        if intent is None:
            return Route(Decision.answer, prediction.intent, "intent not in the domain pack")
        if intent.handling == "handoff" or intent.name in config.handoff_intents:
            return Route(Decision.handoff, intent.name, f"intent {intent.name} is handled by people")
        if intent.handling == "collect":
            missing = tuple(slot for slot in intent.required_slots if slot not in state.slots)
            if missing:
                return Route(Decision.ask_details, intent.name, "missing " + ", ".join(missing), missing)
        return Route(Decision.answer, intent.name, f"intent {intent.name}")
