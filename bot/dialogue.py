"""The dialogue manager: decides and produces the bot's side of every customer turn.

Per turn: extract details, retrieve help passages, classify the intent, route, and answer from the passages: with
`answers_from="passages"` (the app's default, core/settings.py) in their own best sentences; with "model", by building
a prompt from them that fits the model's window and streaming the LLM's reply sentence by sentence, each checked
against the passages (or a fixed reply for rephrase, ask-for-details, handoff, refusals, off-topic and uncovered
questions).
"""

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Generic, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from bot.actions import ActionRunner, Handled
from bot.compose import compose_reply
from bot.context import (
    Prompt,
    TokenCounter,
    Turn,
    conversation_note,
    fit_recent_turns,
    grounded_system_text,
    retrieval_query,
)
from bot.domain import DomainPack
from bot.grounding import (
    Candidate,
    GroundingChecker,
    content_stems,
    holds_asked_fact,
    names_a_rare_term,
    numbers,
    sentence_frequency,
)
from bot.guard import LeakGuard, secret_reasons
from bot.intents import IntentClassifier, Prediction
from bot.knowledge import Hit, KnowledgeIndex, Passage, SentenceEncoder
from bot.language import LanguageDetection, language_name
from bot.llm import ChatModel, ReplyDone
from bot.places import conversation_places, expanded_query, in_scope, with_places
from bot.routing import Decision, DialogueState, Route, Router
from bot.selection import AnswerSelector, Selection, by_rules, rank_candidates, select
from bot.sentiment import is_negative
from bot.slots import SlotExtractor, masked_fields, masked_slots, render_slots
from bot.text import split_sentences

logger = logging.getLogger(__name__)

T = TypeVar("T")

REFUSAL = (
    "Sorry, I can't share or change how I work. I'm happy to help with orders, shipping, returns, "
    "refunds and your account."
)
SCOPE_REPLY = (
    "Sorry, I can only help with questions about {company}: orders, shipping, returns, refunds, payments and your "
    "account. Is there anything about your shopping with us I can help with?"
)
NOT_SURE_REPLY = (
    "I'm not sure about that, and I'd rather not guess. A teammate can help: just say \"talk to a person\" and I'll "
    "pass this conversation on."
)
SMALL_TALK_FALLBACK = "I'm happy to help. What would you like to know?"
# For a language the pack serves but has no message in: the same words in English.
NOT_SERVED_REPLY = (
    "Sorry, I can only help in {languages}. I'm passing this conversation to a member of our support team, "
    "who will answer you here."
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
    hits: list[Hit] = field(default_factory=list)  # the passages retrieved for the turn
    check: dict | None = None  # the grounding check's verdict and the failing sentences
    replaced: str | None = None  # what the model wrote, when the check replaced it
    action: dict | None = None  # the action called for the turn: inputs (personal data masked), outcome, time
    language: str | None = None  # the customer message's language, when it was clear
    outside_hours: bool = False  # handed off while the team is away (the reply says when they answer)
    places: list[str] = field(default_factory=list)  # where the conversation is about (bot/places.py)

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
            "slots": masked_slots(self.state.slots),  # staff read traces: personal details masked
            "stages_ms": self.stages_ms,
            "passages": [
                {
                    "slug": hit.passage.article_slug,
                    "title": hit.passage.title,
                    "version": hit.passage.version,
                    "score": round(hit.score, 4),
                    "relevant": hit.relevant,
                    "text": hit.passage.text,
                }
                for hit in self.hits
            ],
            "check": self.check,
            "replaced": self.replaced,
            "action": self.action,
            "language": self.language,
            "outside_hours": self.outside_hours,
        }


def to_langchain(messages: Sequence[dict[str, str]]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[message["role"]](content=message["content"]) for message in messages]


def _words(text: str) -> list[str]:
    # Fixed replies stream word by word too, so the customer sees them arrive like any other.
    return re.findall(r"\S+\s*", text)


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
        knowledge: Swappable[KnowledgeIndex] | None = None,
        passages: int = 4,
        first_sentence_within_s: float | None = None,
        answers_from: str = "model",
        actions: ActionRunner | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        selector: Swappable[AnswerSelector | None] | None = None,
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
        # Without a live knowledge base (tests, benchmarks), the pack's own help articles are the knowledge.
        self.knowledge = knowledge or Swappable(KnowledgeIndex.build(pack.articles, SentenceEncoder()))
        self.passages = passages
        self.first_sentence_within_s = first_sentence_within_s
        self.answers_from = answers_from  # "passages" or "model": who words an answer the help content covers
        self.actions = actions
        self.clock = clock
        # The learned answer selector (bot/selection.py) once one is trained; until then the scores' rules decide.
        self.selector = selector or Swappable(None)
        self.languages = LanguageDetection([*pack.languages, *pack.language_messages])

    def plan(
        self, text: str, state: DialogueState, query: str | None = None
    ) -> tuple[Route, Prediction | None, DialogueState, dict, list[Hit]]:
        """Retrieve, classify and route one customer message; returns the route, the state after it and the hits.

        `query` is what to search the help content for (by default the message itself)."""
        stages: dict[str, float] = {}
        started = time.perf_counter()
        hits = self.knowledge.current().search(query or text, k=self.passages) if (query or text).strip() else []
        stages["retrieve"] = _ms(started)
        started = time.perf_counter()
        slots = {**state.slots, **self.slots.extract(text)}
        classifier = self.classifier.current()
        prediction = classifier.predict(text) if classifier is not None and text.strip() else None
        stages["classify"] = _ms(started)
        started = time.perf_counter()
        seen = replace(state, slots=slots)
        covered = any(hit.relevant for hit in hits)
        route = self.router.route(text=text, prediction=prediction, state=seen, covered=covered)
        if route.decision is not Decision.silent:
            language = self.languages.detect(text)
            if language is not None and language not in self.pack.languages:
                route = Route(Decision.handoff, None, f"language {language} is not served", language=language)
        stages["route"] = _ms(started)
        return route, prediction, self._next_state(seen, route, text), stages, hits

    @staticmethod
    def _next_state(state: DialogueState, route: Route, text: str) -> DialogueState:
        # A change waiting for a yes lasts one turn (bot/actions.py): the actions set it again when they ask.
        state = replace(state, pending_action=None)
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
            return self.handoff_reply(route)
        if route.decision is Decision.refuse:
            return REFUSAL
        if route.decision is Decision.out_of_scope:
            return SCOPE_REPLY.format(company=self.pack.company_name)
        if route.decision is Decision.ask_details and route.intent:
            return self.pack.intent(route.intent).ask
        return None

    def outside_hours(self) -> bool:
        hours = self.pack.business_hours
        return hours is not None and not hours.is_open(self.clock())

    def handoff_reply(self, route: Route) -> str:
        """What a handoff says: in the customer's language when the bot does not serve it; outside business hours,
        when teammates answer again and a request for an e-mail address; else the pack's handoff message."""
        if route.language is not None:
            served = " or ".join(language_name(code) for code in self.pack.languages)
            return self.pack.language_messages.get(route.language) or NOT_SERVED_REPLY.format(languages=served)
        hours = self.pack.business_hours
        if hours is not None and not hours.is_open(self.clock()):
            return self.pack.outside_hours_message.format(next_open=hours.describe_next_open(self.clock()))
        return self.pack.handoff_message

    def build_prompt(
        self, turns: Sequence[Turn], state: DialogueState, summary: str, passages: Sequence[Hit]
    ) -> Prompt:
        system = grounded_system_text(self.pack, [(hit.passage.title, hit.passage.text) for hit in passages])
        prompt = fit_recent_turns(system=system, turns=turns, budget=self.prompt_budget, counter=self.counter)
        if prompt.dropped_turns:
            # Older turns were evicted: bring back what they said through the details gathered and the running
            # summary (while every turn fits, the turns say it themselves).
            prompt = fit_recent_turns(
                system=system, turns=turns, budget=self.prompt_budget, counter=self.counter,
                note=conversation_note(details=render_slots(state.slots), summary=summary),
            )  # fmt: skip
        return prompt

    def is_small_talk(self, route: Route) -> bool:
        """Greetings and thanks: intents the pack answers without any help article (off-topic ones excluded)."""
        if route.intent not in {intent.name for intent in self.pack.intents} or route.decision is not Decision.answer:
            return False
        intent = self.pack.intent(route.intent)
        scope_intents = getattr(getattr(self.router, "config", None), "scope_intents", ())
        return intent.handling == "answer" and not intent.policies and intent.name not in scope_intents

    def answers(self, question: str, passages: Sequence[Hit]) -> list[Candidate]:
        """The sentences of `passages`, best answer to `question` first."""
        return rank_candidates(self.knowledge.current(), question, passages)

    def select(self, question: str, text: str, hits: Sequence[Hit], place: str = "") -> Selection:
        """Which sentences of the passages `hits` answer `question` (`text` is the customer's own message), and whether
        any does: the learned selector decides when one is in service, reading every passage retrieval returned;
        else the scores' rules, over the passages that passed retrieval's relevance bar. A passage headed by another
        place than the question or the conversation (`place`, bot/places.conversation_places) is about is left out."""
        selector = self.selector.current()
        evidence = list(hits) if selector is not None else [hit for hit in hits if hit.relevant]
        headings = [f"{hit.passage.title} {hit.passage.heading}" for hit in evidence]
        scope = in_scope(headings, f"{question} {place}", self.knowledge.current().text)
        evidence = [hit for hit, kept in zip(evidence, scope, strict=True) if kept]
        ranked = self.answers(question, evidence) if evidence else []
        if selector is not None and ranked:
            frequency = sentence_frequency(self.knowledge.current().text)
            return select(selector, question, text, ranked, evidence, frequency=frequency)
        return replace(by_rules(ranked, self.rare_term(text)), hits=evidence)

    def rare_term(self, text: str) -> Callable[[Candidate], bool]:
        """Whether a candidate sentence holds a word of `text` that the help content uses in one or two sentences
        only; the content's sentence frequencies are read only when it is asked."""
        help_text = self.knowledge.current().text
        return lambda candidate: names_a_rare_term(text, candidate.sentence, sentence_frequency(help_text))

    @staticmethod
    def fallback(selection: Selection, said: Sequence[str], passages: Sequence[Passage]) -> str:
        """A reply built from the passages themselves: the one to three sentences chosen for the question, less
        what the customer was already told, in the article's order and layout (bot/compose.py); `passages` are those
        the selection was made from."""
        return compose_reply(selection.chosen(said), passages)

    async def respond(
        self, *, turns: Sequence[Turn], state: DialogueState, summary: str = ""
    ) -> AsyncIterator[str | TurnResult]:
        """Stream the reply to the newest customer turn (the last of `turns`), then a `TurnResult`.

        The turn's stages, in order: understand and retrieve (`plan`: details, help passages, intent, route), act
        (`actions`: an order look-up or change), select (`select`: which passage sentences answer, if any), compose
        (`compose`: a fixed reply, or the chosen sentences in the article's layout), and, when the model words the
        answer, word and check (`worded_by_model`: every sentence checked against the passages as it streams).

        Raises `bot.llm.LLMUnavailable` when the model is needed and cannot answer.
        """
        started = time.perf_counter()
        text = turns[-1].text if turns else ""
        known = self.knowledge.current().text
        places = conversation_places([turn.text for turn in turns if turn.role == "customer"], known)
        query = with_places(expanded_query(retrieval_query(turns), known), places, known)
        route, prediction, next_state, stages, hits = self.plan(text, state, query)
        result = TurnResult(route=route, prediction=prediction, state=next_state, stages_ms=stages, hits=hits)
        result.places = places
        result.language = route.language or self.languages.detect(text)
        handled = await self.actions.handle(route, next_state, state, text) if self.actions is not None else None
        if handled is not None:
            self.acted(handled, result)
        elif route.decision is not Decision.silent:
            selection, evidence = self.compose(turns, text, query, result)
            if result.text is None:
                async for event in self.worded_by_model(turns, summary, query, selection, evidence, result, started):
                    yield event
                result.stages_ms["total"] = _ms(started)
                yield result
                return
        result.stages_ms["total"] = _ms(started)
        for word in _words(result.text or ""):
            yield word
        yield result

    def acted(self, handled: Handled, result: TurnResult) -> None:
        """The act stage's reply: the company's systems answer (or fail honestly), a fixed template over the result,
        never the model."""
        result.route, result.state, result.text = handled.route, handled.state, handled.reply
        if handled.route.decision is Decision.handoff and self.outside_hours():
            result.outside_hours = True
            result.text = handled.reply.replace(self.pack.handoff_message, self.handoff_reply(handled.route))
        result.action = handled.trace or None  # None: the turn only asked for an input
        if handled.facts:
            result.check = {"verdict": "from the action result", "fields": masked_fields(handled.facts)}
        result.stages_ms["action"] = handled.trace.get("ms", 0.0)

    def compose(self, turns: Sequence[Turn], text: str, query: str, result: TurnResult) -> tuple[Selection, list[Hit]]:
        """The select and compose stages: sets `result.text` to a fixed reply (handoff, refusal, "not sure", the
        passages' own sentences) and returns the selection and the passages it read, which the model words from
        when `result.text` stays None."""
        route = result.route
        evidence = [hit for hit in result.hits if hit.relevant]
        fixed = self.fixed_reply(route)
        selection = by_rules([])
        if fixed is None:
            started_ranking = time.perf_counter()
            selection = self.select(query, text, result.hits, " ".join(result.places))
            evidence = list(selection.hits)
            result.stages_ms["rank"] = _ms(started_ranking)
            if not selection.answerable and self.is_small_talk(route):
                # "thanks!": a pleasantry, with nothing to state
                evidence, selection = [], by_rules([])
            elif not selection.answerable:
                # About the business, but the help content does not say: never a guess.
                fixed = NOT_SURE_REPLY
                score = round(selection.best, 3) if selection.ranked else None
                result.check = {
                    "verdict": "not covered by the help content", "best_sentence_score": score,
                    "selected_by": selection.by,
                }  # fmt: skip
            elif self.answers_from == "passages" and not self.is_small_talk(route):
                # The help content's own words: nothing for a small model to get wrong on the way. A follow-up ("And
                # for gift cards?") gets what the bot's last reply did not say (Selection.after_reply).
                told = [turn.text for turn in turns[:-1] if turn.role != "customer"][-1:]
                chosen = selection.after_reply(told, text, self.rare_term(text))
                fixed = compose_reply(chosen, [hit.passage for hit in evidence])
                result.check = {
                    "verdict": "from the passages", "sentences": len(split_sentences(fixed)),
                    "selected_by": selection.by, "best_sentence_score": round(selection.best, 3),
                }  # fmt: skip
        if fixed is not None:
            result.text = fixed
            handoff = route.decision is Decision.handoff and route.language is None
            result.outside_hours = handoff and self.outside_hours()
        return selection, evidence

    async def worded_by_model(
        self,
        turns: Sequence[Turn],
        summary: str,
        query: str,
        selection: Selection,
        evidence: Sequence[Hit],
        result: TurnResult,
        started: float,
    ) -> AsyncIterator[str]:
        """The word and check stages: the model's reply streamed sentence by sentence, each sentence checked against
        the passages before the customer sees it; one that fails is replaced by the passages' own sentences. Fills in
        `result` (text, model, tokens, the check's verdict); `started` is when the turn began."""
        text = turns[-1].text if turns else ""
        next_state = result.state
        # The prompt carries only the passages that hold the best answer sentences: fewer tokens for the model to
        # read, and less for a 135M model to wander off into. The check reads every relevant passage: a true
        # sentence from one the ranking put lower is still supported.
        ranked = selection.ranked
        holding = {candidate.passage for candidate in selection.chosen()}
        prompted = [hit for number, hit in enumerate(evidence) if number in holding] or evidence
        prompt_started = time.perf_counter()
        prompt = self.build_prompt(turns, next_state, summary, prompted)
        result.stages_ms["prompt"] = _ms(prompt_started)
        result.prompt_tokens, result.dropped_turns = prompt.tokens, prompt.dropped_turns
        # build_prompt brings the summary back exactly when turns had to be dropped.
        result.summary_used = bool(summary and prompt.dropped_turns)
        result.model = self.models.current()
        said_by_customer = " ".join(turn.text for turn in turns if turn.role == "customer")
        checker = GroundingChecker(
            [hit.passage.text for hit in evidence], context=f"{said_by_customer}\n{render_slots(next_state.slots)}",
            products=self.pack.products, titles=[hit.passage.title for hit in evidence],
        )  # fmt: skip
        guard = LeakGuard(self.pack.system_prompt)
        sent: list[str] = []  # sentences released to the customer
        held: list[str] = []  # pleasantries waiting for the first sentence with substance
        written = ""  # everything the model wrote, for the trace when it is replaced
        buffer = ""
        out: list[str] = []  # exactly what was streamed
        failures: list[dict] = []
        llm_started = time.perf_counter()
        result.stages_ms["before_llm"] = _ms(started)

        def emit(text: str) -> list[str]:
            # A checked sentence still streams word by word, as the customer is used to seeing it arrive.
            pieces = _words(text)
            if pieces and out:
                pieces[0] = " " + pieces[0]
            out.extend(pieces)
            return pieces

        # The kind of fact the question asks for, when the best passage sentence states it ("within 90 days" for
        # "how long ..."): the model's first sentence must state it too, not talk around it.
        asked_fact = bool(ranked) and holds_asked_fact(text, ranked[0].sentence)
        # The figures of the best passage sentence ("12% off", "2 hours"): a first sentence that states none of them
        # talks around the answer ("Yes, there is a discount.") or picks another one ("no more than 4 hours").
        best_figures = {value for value, _ in numbers(ranked[0].sentence)} if ranked else set()

        def judge(sentence: str) -> list[str]:
            reasons = secret_reasons(sentence, said_by_customer) + list(checker.check_sentence(sentence).reasons)
            if not reasons and not sent and evidence and not checker.relevant_to(query, sentence):
                reasons.append("does not answer the question")
            if not reasons and not sent and asked_fact and not holds_asked_fact(text, sentence):
                reasons.append("does not state what the question asks for")
            if not reasons and not sent and best_figures and not best_figures & {v for v, _ in numbers(sentence)}:
                reasons.append("does not state the figure the best passage sentence gives")
            if not reasons and sent and set(content_stems(sentence)) <= set(content_stems(" ".join(sent))):
                reasons.append("repeats what was already said")
            return reasons

        def release(sentences: Sequence[str]) -> list[str]:
            """The sentences that pass, in order, up to the first that fails (recorded in `failures`)."""
            passed: list[str] = []
            for sentence in sentences:
                if not content_stems(sentence) and not secret_reasons(sentence, said_by_customer):
                    held.append(sentence)  # "Sure!" passes with whatever follows it
                    continue
                reasons = judge(sentence)
                if reasons:
                    failures.append({"sentence": sentence, "reasons": reasons})
                    return passed
                passed += [*held, sentence]
                sent.extend([*held, sentence])
                held.clear()
            return passed

        # With help passages to fall back on, the model has `first_sentence_within_s` to write a first sentence that
        # passes the check; after that the customer gets the passages' own sentences at once and the model's reply
        # is cancelled (which also frees the model for other customers when it is busy).
        stream = aiter(self.llm.stream(to_langchain(prompt.messages), model=result.model))
        late = False
        try:
            while True:
                wait = None
                if not sent and evidence and self.first_sentence_within_s is not None:
                    wait = max(0.0, llm_started + self.first_sentence_within_s - time.perf_counter())
                try:
                    event = await asyncio.wait_for(anext(stream), wait)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    late = True
                    break
                if isinstance(event, ReplyDone):
                    result.model = event.model
                    result.prompt_tokens = event.prompt_tokens or prompt.tokens
                    result.completion_tokens = event.completion_tokens
                    break
                if "llm_first_token" not in result.stages_ms:
                    result.stages_ms["llm_first_token"] = _ms(llm_started)
                written += event
                buffer += guard.feed(event)
                if guard.leaked:
                    break
                # A sentence is complete once the next one has started; check it, then send it.
                sentences = split_sentences(buffer)
                if len(sentences) > 1:
                    buffer = sentences[-1] + (" " if buffer[-1:].isspace() else "")
                    for sentence in release(sentences[:-1]):
                        if "first_sentence" not in result.stages_ms:
                            result.stages_ms["first_sentence"] = _ms(llm_started)
                        for piece in emit(sentence):
                            yield piece
                    if failures:
                        break
        finally:
            await stream.aclose()
        if result.completion_tokens is None and written:
            # Cut off before the server's usage report (the check stopped it, or it was late): count what arrived.
            reply = {"role": "assistant", "content": written}
            empty = {"role": "assistant", "content": ""}
            result.completion_tokens = max(1, self.counter.count_message(reply) - self.counter.count_message(empty))
        if late:
            reason = f"no checked sentence within {self.first_sentence_within_s:g} s"
            failures.append({"sentence": written.strip(), "reasons": [reason]})
        if guard.leaked:
            result.leak_blocked = True
            result.check = {"verdict": "blocked: repeats the instructions"}
            out.append("\n" + REFUSAL)
            yield out[-1]
        else:
            if not failures:
                buffer += guard.flush()
                for sentence in release(split_sentences(buffer)):
                    for piece in emit(sentence):
                        yield piece
                if held and not failures:
                    # Only pleasantries: fine for small talk or after an answer, not as the answer to a question.
                    if evidence and not sent:
                        failures.append({"sentence": " ".join(held), "reasons": ["does not answer the question"]})
                    else:
                        for piece in emit(" ".join(held)):
                            yield piece
                        sent.extend(held)
            if failures:
                result.replaced = written.strip()
                replacement = self.fallback(selection, sent, [hit.passage for hit in evidence]) or (
                    "" if sent else SMALL_TALK_FALLBACK
                )
                result.check = {"verdict": "replaced", "failures": failures, "kept_sentences": len(sent)}
                for piece in emit(replacement):
                    yield piece
            else:
                result.check = {"verdict": "passed", "sentences": len(sent)}
        result.stages_ms["llm_total"] = _ms(llm_started)
        result.text = "".join(out).strip()

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
