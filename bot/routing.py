"""Routing: what the bot does with a customer turn (answer, ask for details, rephrase, hand off...).

Rules read the intent prediction, the intent's handling in the domain pack, whether the help content covers
the message, and the conversation state.
"""

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum

from bot.domain import DomainPack
from bot.guard import looks_like_injection
from bot.intents import Prediction
from bot.sentiment import is_negative
from bot.text import content_words


class Decision(StrEnum):
    """What the bot does with one customer turn."""

    answer = "answer"  # answered from the help passages retrieved for the message
    ask_details = "ask_details"  # the intent needs details (an order number...) the customer has not given
    rephrase = "rephrase"  # not understood: ask once to rephrase
    handoff = "handoff"  # a human takes over
    refuse = "refuse"  # a request for the bot's instructions
    out_of_scope = "out_of_scope"  # outside the company's business: a polite scope reply, never an answer
    silent = "silent"  # a human owns the conversation: the bot says nothing


@dataclass
class DialogueState:
    """What the dialogue manager remembers between turns; stored with the conversation."""

    status: str = "bot"
    slots: dict[str, str] = field(default_factory=dict)
    misses: int = 0
    negative_streak: int = 0
    pending_intent: str | None = None
    identity_failures: int = 0  # order look-ups refused for a wrong order number / e-mail pair (bot/actions.py)
    verified_email: str | None = None  # the e-mail the embedding site vouched for with a signed identity
    # A change the bot asked the customer to confirm (bot/actions.py): action name, inputs, idempotency key. It lasts
    # one turn: the next message is a yes, a no, or something else that drops it.
    pending_action: dict | None = None


@dataclass(frozen=True)
class Route:
    """The decision for one turn and why it was taken."""

    decision: Decision
    intent: str | None
    reason: str
    missing_slots: tuple[str, ...] = ()
    # A handoff because the customer writes in a language the pack does not serve: that language's code.
    language: str | None = None


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
    scope_intents: tuple[str, ...] = ("out_of_scope",)
    """Intents that mean "not about this business": they get the scope reply unless the help content covers
    the message after all."""


# A request about one specific order: the customer's own order, parcel or refund, an order number, a problem
# they report, or something they want done. General questions ("Is my speaker covered by warranty?",
# "How long do refunds take?", "How do I track my order?") are answered from the help content first.
_MY_ORDER = re.compile(
    r"\b(?:my|our|this|that)\s+(?:\w+\s+){0,2}?(?:order|orders|package|parcel|delivery|shipment|purchase|refund|"
    r"return|tracking|money|item|items)\b"
    r"|\bi\s+(?:just\s+|already\s+)?(?:ordered|placed|bought|purchased|paid|returned|sent)\b",
    re.IGNORECASE,
)
_ORDER_REFERENCE = re.compile(r"(?<![\w-])(?:[A-Z]{2,4}-?\d{4,10}|#\d{5,10})(?![\w-])", re.IGNORECASE)
_ACTION = re.compile(
    r"\b(?:cancel|change|update|correct|fix|redirect|check|track|refund|replace|replacement|send|process|look up|"
    r"find|stop|void|undo|start|exchange)\b",
    re.IGNORECASE,
)
_REQUEST = re.compile(
    r"^\s*(?:(?:hi|hello|hey)[,!.]?\s+)?(?:please\b|pls\b|i\s+(?:want|need|would like)|i'd like|can you|could you|"
    r"would you|will you|where(?:'s| is| are)|when (?:will|does|is)|has|have|did|why (?:is|has|hasn't|haven't|did)|"
    r"what(?:'s| is) (?:the )?(?:status|happening)|help me)",
    re.IGNORECASE,
)
_PROBLEM = re.compile(
    r"\b(?:stopped working|broke|arrived (?:broken|damaged|late)|is broken|was broken|came broken|is damaged|"
    r"was damaged|missing from|wrong (?:item|address|size|colou?r|house|city|zip|postcode)|never (?:came|arrived|got)|"
    r"not (?:arrived|here|working|received)|(?:hasn't|hasnt|haven't|havent) (?:arrived|come|shipped|moved|been|"
    r"received|got)|still (?:no|not|waiting|nothing)|doesn't work|isn't working|won't turn on)\b",
    re.IGNORECASE,
)
# Questions about how things work ("How do I track my order?", "Can I change my address?") ask for policy.
_GENERAL = re.compile(
    r"^\s*(?:(?:hi|hello|hey)[,!.]?\s+)?(?:how (?:do|does|can|will|would|long|much|many|soon|fast|quickly|often)|"
    r"can (?:i|an?|the|items?|orders?)\b|is (?:it|there|my|a|an|the)|are (?:there|my)|do (?:i|you)|does|"
    r"what (?:is|are|do|does|if|happens|should)|which|who|will (?:i|the|you)\b|"
    r"when (?:do|does|can|will) (?:you|i|it|the|a|an|items?|orders?|refunds?)\b)",
    re.IGNORECASE,
)

# Asking for a person, not about how to reach one: "Can I talk to a human?" against "Is there a number I can call?".
_WANTS_PERSON = re.compile(
    r"\b(?:humans?|persons?|people|someone|somebody|anyone|agents?|representatives?|operators?|managers?|staff|"
    r"employees?|colleagues?|real|bot|robot|escalate|transfer|connect|talk|speak|contact me|call me|get back to me)\b",
    re.IGNORECASE,
)
_CONDITION = re.compile(r"^\s*(?:once|if|when|after|before|as soon as)\b[^,?]{0,80},\s*", re.IGNORECASE)
_MY_STATUS = re.compile(r"\b(?:where|when) (?:is|are|will) my\b", re.IGNORECASE)


# A message with this many content words (bot/text.py) says what it is about, even when no intent fits it and its
# words are no question: the customer wrote a whole request, and asking them to rephrase it helps nobody.
SUBSTANTIAL_WORDS = 5


def _sentences(text: str) -> list[str]:
    return [part for part in re.split(r"(?<=[.!?])\s+", text.strip()) if part]


def is_clear_question(text: str) -> bool:
    """A whole question ("Is your packaging plastic-free?") or a message that says what it is about in
    SUBSTANTIAL_WORDS content words or more: when nothing covers it, it deserves an honest "not sure", not a request
    to rephrase it."""
    if len(content_words(text)) >= SUBSTANTIAL_WORDS:
        return True
    return bool(_GENERAL.search(text)) or (text.strip().endswith("?") and len(text.split()) >= 4)


def is_general_question(text: str) -> bool:
    """A question about how things work ("Do you have a phone number?"), not a request or a problem report."""
    return len(_sentences(text)) == 1 and bool(_GENERAL.search(text)) and not is_specific_request(text)


def is_specific_request(text: str) -> bool:
    """Whether the customer wants something done to, or known about, one specific order of theirs."""
    if _ORDER_REFERENCE.search(text):
        return True
    sentences = _sentences(text)
    asked = [part for part in sentences if part.endswith("?")] or sentences[-1:] or [text]
    # A condition before the question is context, not the question: "Once you receive my return, when do you ...?"
    question = _CONDITION.sub("", asked[-1])
    if _GENERAL.search(question) and not _MY_STATUS.search(question):
        # What the customer asks decides, whatever they told us first ("Part of my order was missing. How long do I
        # have to tell you?"), unless another sentence asks for something to be done ("Please cancel my order.").
        return any(
            _REQUEST.search(part) and (_MY_ORDER.search(part) or _ACTION.search(part))
            for part in sentences
            if part is not asked[-1]
        )
    if _PROBLEM.search(text):
        return True
    if _REQUEST.search(text):
        return bool(_MY_ORDER.search(text) or _ACTION.search(text))
    return bool(_MY_ORDER.search(text) and _ACTION.search(text))


class Router(ABC):
    """Decides what the bot does with one customer turn."""

    @abstractmethod
    def route(self, *, text: str, prediction: Prediction | None, state: DialogueState, covered: bool = False) -> Route:
        """`covered`: the help content has a passage relevant to the message."""


class RuleRouter(Router):
    """The product's routing rules, in order of precedence."""

    def __init__(self, pack: DomainPack, config: RoutingConfig) -> None:
        self.pack = pack
        self.config = config
        self.known_intents = {intent.name for intent in pack.intents}

    def route(self, *, text: str, prediction: Prediction | None, state: DialogueState, covered: bool = False) -> Route:
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
        if not understood and covered:
            # The intent is unclear but the help content answers the message: answer it rather than ask again.
            return Route(Decision.answer, prediction.intent, "unclear intent, covered by the help content")
        if not understood and is_specific_request(text):
            # A clear problem with one of their orders that no intent fits: a person, not "please rephrase".
            return Route(Decision.handoff, None, "a request about one specific order that no intent fits")
        if not understood and is_clear_question(text):
            # The dialogue answers "not sure" plus a teammate: nothing in the help content covers it.
            return Route(Decision.answer, None, "a clear question the help content does not cover")
        if not understood:
            if state.misses + 1 >= config.misses_before_handoff:
                return Route(Decision.handoff, prediction.intent, "not understood twice")
            return Route(
                Decision.rephrase,
                prediction.intent,
                f"low confidence {prediction.confidence:.2f} (margin {prediction.margin:.2f})",
            )
        if prediction.intent in config.scope_intents:
            if covered:
                return Route(Decision.answer, prediction.intent, "looks off-topic, but the help content covers it")
            return Route(Decision.out_of_scope, prediction.intent, "outside the business")
        intent = self.pack.intent(prediction.intent) if prediction.intent in self.known_intents else None
        if intent is None:
            return Route(Decision.answer, prediction.intent, "intent not in the domain pack")
        if intent.handling == "handoff" or intent.name in config.handoff_intents:
            if covered and is_general_question(text) and not _WANTS_PERSON.search(text) and not is_negative(text):
                # "Do you have a phone number?" under the human-agent intent: the help content says how to reach
                # the team, and the customer can still ask for a person.
                return Route(Decision.answer, intent.name, f"intent {intent.name}: a general question, answered first")
            return Route(Decision.handoff, intent.name, f"intent {intent.name} is handled by people")
        if intent.handling == "collect":
            missing = tuple(slot for slot in intent.required_slots if slot not in state.slots)
            if missing and is_specific_request(text):
                return Route(Decision.ask_details, intent.name, "missing " + ", ".join(missing), missing)
            if missing:
                return Route(Decision.answer, intent.name, f"intent {intent.name}: a general question, answered first")
        return Route(Decision.answer, intent.name, f"intent {intent.name}")
