"""Training data and training for the answer selector (bot/selection.py), from the company's own material only.

Questions come from the help content itself (FAQ headings, and questions made from each sentence's own words,
lower-cased, misspelt, after a short story), the pack's seed conversations and intent examples, and the reviewed
conversations and answered gaps of the store. Each is read as the dialogue reads it (retrieval, the cheap ranking of
the candidate sentences) and labelled covered when one of its best candidates is an answer. Out-of-scope examples,
and the same questions asked again with their answer's article left out of retrieval (about the business, but not
covered), are labelled not covered. The selector is a logistic model over the question's features
(bot/selection.question_features); its threshold is chosen on held-out questions.
"""

import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bot.articles import Article
from bot.context import Turn, retrieval_query
from bot.domain import DomainPack
from bot.grounding import COURTESY, Candidate, content_stems, numbers, sentence_frequency
from bot.knowledge import KnowledgeIndex, SentenceEncoder
from bot.routing import RoutingConfig
from bot.selection import (
    FEATURES,
    FORMAT,
    SELECTOR_MARKER,
    AnswerSelector,
    SelectionConfig,
    SelectorError,
    answerable_by_rules,
    load_selector,
    question_features,
    rank_candidates,
)
from bot.text import NEGATIONS, STOPWORDS, split_sentences, words
from core.settings import Settings
from runtime.registry import promote, selector_registry

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]

# Question frames for a sentence's own words, by the kind of fact the sentence states. Customers' messages are short,
# lower case and often not questions at all; the frames only shape the words, the model has to read past them.
_FRAMES = {
    "amount": ["how much {w}", "what does {w} cost", "{w} price", "is there a fee for {w}", "{w} how much"],
    "duration": ["how long {w}", "when {w}", "how many days {w}", "{w} how long does it take", "{w} time"],
    "any": [
        "{w}?", "what about {w}", "can i {w}", "do you {w}", "is {w} possible", "question about {w}",
        "how does {w} work", "{w} info please", "what is the policy on {w}", "how do i {w}", "tell me about {w}",
    ],
}  # fmt: skip
_STORIES = [
    "hi, quick question.", "so i placed an order last week and", "sorry to bother you but", "hello there,",
    "i was wondering", "my friend told me to ask,", "ok so", "before i buy anything,",
]  # fmt: skip


@dataclass(frozen=True)
class Example:
    """A question as the selector reads it, with whether the help content answers it."""

    question: str
    features: dict[str, float]
    label: int  # 1: one of its best candidates answers it; 0: the help content does not cover it
    source: str


@dataclass
class SelectorRecipe:
    """How the selector is trained; the defaults are what first start uses."""

    questions_per_sentence: int = 2
    """Questions made from each help sentence's own words."""
    left_out: float = 0.5
    """Share of the questions with an answer that are asked a second time with their answer's article left out of
    retrieval: the same wording, about the business, that the help content then does not cover."""
    held_out: float = 0.2
    """Share of the questions kept out of training to measure the version and choose its threshold."""
    wrong_cost: float = 3.0
    """How many right answers one wrong answer costs when the threshold is chosen on the held-out questions."""
    regularisation: float = 1e-3
    seed: int = 13

    def __post_init__(self) -> None:
        if not 0 < self.held_out < 0.5:
            raise ValueError("held_out must be between 0 and 0.5")
        if not 0 <= self.left_out <= 1:
            raise ValueError("left_out must be between 0 and 1")
        if self.questions_per_sentence < 0 or self.wrong_cost <= 0 or self.regularisation < 0:
            raise ValueError("questions_per_sentence, wrong_cost and regularisation must not be negative")


@dataclass
class Material:
    """What the selector learns from besides the help content: conversations (each a list of {role, content}
    messages, customer turns as "user") and messages that no article answers."""

    conversations: list[list[dict[str, str]]] = field(default_factory=list)
    reviewed: list[list[dict[str, str]]] = field(default_factory=list)
    out_of_scope: list[str] = field(default_factory=list)
    examples: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    """Customers' messages with the articles that answer them (the pack's intent examples and their intents'
    policies): the answer is in one of those articles, which sentence is not known."""


def pack_material(pack: DomainPack, reviewed: Iterable[list[dict[str, str]]] = ()) -> Material:
    """The pack's seed conversations and out-of-scope examples, with `reviewed` conversations of the store."""
    scope = set(RoutingConfig().scope_intents)
    return Material(
        conversations=[
            [{"role": m.role, "content": m.content} for m in seed.messages] for seed in pack.seed_conversations()
        ],
        reviewed=list(reviewed),
        out_of_scope=[example for intent in pack.intents if intent.name in scope for example in intent.examples],
        examples=[
            (example, frozenset(intent.policies)) for intent in pack.intents if intent.policies
            for example in intent.examples
        ],
    )  # fmt: skip


# --- Questions from the help content -----------------------------------------------------------------


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def customer_wording(question: str, rng: random.Random) -> str:
    """`question` as customers type it: lower case mostly, sometimes a typo, a story before it, no question mark."""
    text = question.lower() if rng.random() < 0.8 else question
    if rng.random() < 0.3:
        tokens = text.split()
        long = [i for i, token in enumerate(tokens) if len(token) >= 5 and token.isalpha()]
        if long:
            i = rng.choice(long)
            tokens[i] = _typo(tokens[i], rng)
            text = " ".join(tokens)
    if rng.random() < 0.25:
        text = f"{rng.choice(_STORIES)} {text[0].lower()}{text[1:]}"
    if rng.random() < 0.5:
        text = text.rstrip("?")
    return text


def _kind(sentence: str) -> str:
    units = {unit for _, unit in numbers(sentence)}
    if units & {"$", "%"}:
        return "amount"
    if units & {"minute", "hour", "day", "week", "month", "year"}:
        return "duration"
    return "any"


_NOT_OWN = STOPWORDS | NEGATIONS | COURTESY  # words that do not make a sentence this one


def sentence_questions(sentence: str, title: str, idf: dict[str, float], rng: random.Random, count: int) -> list[str]:
    """Questions a customer could ask that `sentence` answers, in its own rarest words with a question frame."""
    own = [w for w in dict.fromkeys(words(sentence)) if w not in _NOT_OWN and not w.isdigit()]
    if not own:
        return []
    by_rarity = sorted(own, key=lambda w: -idf.get(w, 0.0))
    questions = []
    for _ in range(count):
        size = min(len(own), rng.randint(2, 4))
        # Mostly the rarest words (what makes the sentence this one), sometimes a word of the title instead.
        chosen = by_rarity[: size + 1]
        rng.shuffle(chosen)
        picked = chosen[:size]
        if rng.random() < 0.3:
            topic = [w for w in words(title) if w not in STOPWORDS]
            if topic:
                picked[-1] = rng.choice(topic)
        frame = rng.choice(_FRAMES[_kind(sentence)] if rng.random() < 0.7 else _FRAMES["any"])
        questions.append(customer_wording(frame.format(w=" ".join(picked)), rng))
    return questions


def _is_question(heading: str) -> bool:
    return heading.rstrip().endswith("?")


# --- Positives from conversations --------------------------------------------------------------------


def stated_sentences(reply: str, sentences: Iterable[str], *, support: float = 0.7) -> set[str]:
    """The help sentences a reply states: for each reply sentence, the help sentence holding most of its content
    words, if it holds at least `support` of them."""
    pool = [(sentence, set(content_stems(sentence))) for sentence in sentences]
    stated = set()
    for said in split_sentences(reply):
        stems = set(content_stems(said))
        if len(stems) < 2:
            continue
        best, share = None, 0.0
        for sentence, theirs in pool:
            overlap = len(stems & theirs) / len(stems)
            if overlap > share:
                best, share = sentence, overlap
        if best is not None and share >= support:
            stated.add(best)
    return stated


def _questions_in(messages: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """(retrieval query, the reply to it) for each customer turn answered by the next message."""
    found = []
    turns: list[Turn] = []
    for number, message in enumerate(messages):
        role = "customer" if message["role"] == "user" else "bot"
        turns.append(Turn(role, message["content"]))
        following = messages[number + 1] if number + 1 < len(messages) else None
        if role == "customer" and following is not None and following["role"] != "user":
            found.append((retrieval_query(turns), following["content"]))
    return found


# --- Examples ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """A question the selector learns from: the help sentences that answer it, where it came from, and the articles
    those sentences are in."""

    question: str
    answers: frozenset[str]
    source: str
    articles: frozenset[str] = frozenset()


def asked_questions(index: KnowledgeIndex, material: Material, recipe: SelectorRecipe) -> list[Asked]:
    """The questions made from the help content in `index` and from `material`, each with its answers."""
    rng = random.Random(recipe.seed)
    passages = index.passages
    sentences = [(p, s) for p in passages for s in split_sentences(p.text)]
    frequency = Counter(w for _, s in sentences for w in set(words(s)))
    idf = {w: math.log(1 + len(sentences) / n) for w, n in frequency.items()}
    asked: list[Asked] = []
    for passage in passages:
        own = split_sentences(passage.text)
        where = frozenset({passage.article_slug})
        if _is_question(passage.heading):
            for _ in range(2):
                asked.append(Asked(customer_wording(passage.heading, rng), frozenset(own), "heading", where))
        for sentence in own:
            for question in sentence_questions(sentence, passage.title, idf, rng, recipe.questions_per_sentence):
                asked.append(Asked(question, frozenset({sentence}), "sentence", where))
    article_of = {s: p.article_slug for p, s in sentences}
    for source, conversations in (("seed", material.conversations), ("reviewed", material.reviewed)):
        for messages in conversations:
            for question, reply in _questions_in(messages):
                stated = stated_sentences(reply, list(article_of))
                if stated:
                    asked.append(Asked(question, frozenset(stated), source, frozenset(article_of[s] for s in stated)))
    asked += [Asked(text, frozenset(), "out_of_scope") for text in material.out_of_scope]
    asked += [Asked(text, frozenset(), "example", articles) for text, articles in material.examples]
    # The same wording once more with its answer's articles left out: about the business, but not covered.
    answered = [a for a in asked if (a.answers or a.source == "example") and a.articles]
    for item in rng.sample(answered, round(len(answered) * recipe.left_out)):
        asked.append(Asked(item.question, item.answers, "left_out", item.articles))
    return asked


def _still_stated(answers: Iterable[str], candidates: Sequence[Candidate], *, share: float = 0.6) -> bool:
    """Whether one of `candidates` holds most of the words of one of `answers`."""
    for answer in answers:
        stems = set(content_stems(answer))
        if stems and any(len(stems & set(content_stems(c.sentence))) >= share * len(stems) for c in candidates):
            return True
    return False


def selection_examples(
    index: KnowledgeIndex,
    material: Material | None = None,
    *,
    recipe: SelectorRecipe | None = None,
    k: int = 4,
    on_progress: ProgressFn | None = None,
) -> list[Example]:
    """Every training and held-out example: each question's candidates as the dialogue finds them (retrieval's top `k`
    passages, their sentences by the cheap ranking) read as the selector reads them. A question the content answers
    is kept only when one of the three best candidates is an answer (no selector could answer it right otherwise);
    one it does not cover is always kept."""
    recipe = recipe or SelectorRecipe()
    frequency = sentence_frequency(index.text)
    examples = []
    asked = asked_questions(index, material or Material(), recipe)
    for number, item in enumerate(asked, 1):
        if on_progress is not None:
            on_progress(number, len(asked), 0.0)
        hits = index.search(item.question, k=k + 4 if item.source == "left_out" else k)
        if item.source == "left_out":
            hits = [hit for hit in hits if hit.passage.article_slug not in item.articles][:k]
        ranked = rank_candidates(index, item.question, hits) if hits else []
        if not ranked:
            continue
        covered = item.source not in ("left_out", "out_of_scope")
        if not covered and _still_stated(item.answers, ranked[:3]):
            continue  # another article says the same: left out, the question is still covered
        if covered and not any(
            c.sentence in item.answers
            or (item.source == "example" and hits[c.passage].passage.article_slug in item.articles)
            for c in ranked[:3]
        ):
            continue
        features = question_features(item.question, item.question, ranked, hits, frequency=frequency)
        examples.append(Example(item.question, features, int(covered), item.source))
    return examples


def split_examples(examples: Sequence[Example], held_out: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Training and held-out examples; one question (in any of its sources) stays on one side."""
    questions = sorted({example.question for example in examples})
    random.Random(seed).shuffle(questions)
    kept = set(questions[: round(len(questions) * held_out)])
    return [e for e in examples if e.question not in kept], [e for e in examples if e.question in kept]


# --- Measuring ---------------------------------------------------------------------------------------


@dataclass
class Decisions:
    """Question-level outcomes on held-out examples at one threshold."""

    threshold: float
    answered: int  # covered, and passed the threshold
    not_sure: int  # covered, did not pass
    guessed: int  # not covered, passed: an answer would be a guess
    declined: int  # not covered, did not pass

    @property
    def questions(self) -> int:
        return self.answered + self.not_sure + self.guessed + self.declined


def decisions(examples: Sequence[Example], probabilities: Sequence[float], threshold: float) -> Decisions:
    counts = Counter((e.label, p >= threshold) for e, p in zip(examples, probabilities, strict=True))
    return Decisions(threshold, counts[1, True], counts[1, False], counts[0, True], counts[0, False])


def choose_threshold(examples: Sequence[Example], probabilities: Sequence[float], *, wrong_cost: float) -> Decisions:
    """The threshold that answers most covered held-out questions while a guess costs `wrong_cost` answers."""
    outcomes = [decisions(examples, probabilities, step / 100) for step in range(2, 99, 2)]
    return max(outcomes, key=lambda o: (o.answered - wrong_cost * o.guessed, -o.threshold))


def held_out_accuracy(outcome: Decisions | None) -> float:
    """Share of held-out questions decided right: answered when covered, declined when not."""
    if outcome is None or not outcome.questions:
        return 0.0
    return round((outcome.answered + outcome.declined) / outcome.questions, 4)


def score_examples(selector: AnswerSelector, examples: Sequence[Example]) -> list[float]:
    return [selector.probability(example.features) for example in examples]


def rules_decisions(examples: Sequence[Example]) -> Decisions:
    """How the scores' rules (the dialogue without a selector) decide the same questions."""
    answered = [
        float(answerable_by_rules(e.features["best_score"], lambda e=e: bool(e.features["rare_term"])))
        for e in examples
    ]
    return decisions(examples, answered, 0.5)


# --- Training ----------------------------------------------------------------------------------------


def fit(examples: Sequence[Example], *, regularisation: float, iterations: int = 200) -> tuple[dict[str, float], float]:
    """Logistic regression of being covered on the examples' features (L2-regularised, fitted by L-BFGS)."""
    features = torch.tensor([[e.features[name] for name in FEATURES] for e in examples], dtype=torch.float64)
    labels = torch.tensor([float(e.label) for e in examples], dtype=torch.float64)
    weights = torch.zeros(len(FEATURES), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ weights + bias, labels)
        loss = loss + regularisation * (weights**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    fitted = weights.detach()
    return {name: round(float(w), 4) for name, w in zip(FEATURES, fitted, strict=True)}, round(float(bias.detach()), 4)


def train_selector(
    examples: Sequence[Example],
    *,
    output_dir: Path,
    recipe: SelectorRecipe | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit the selector on `examples` (held-out questions kept aside), choose its threshold on the held-out ones, and
    save it in `output_dir` (selector.json, written last)."""
    recipe = recipe or SelectorRecipe()
    started = time.perf_counter()
    train, held = split_examples(examples, recipe.held_out, recipe.seed)
    if len({e.label for e in train}) < 2:
        raise ValueError("training needs questions the help content answers and ones it does not: is it empty?")
    weights, bias = fit(train, regularisation=recipe.regularisation)
    selector = AnswerSelector(weights, bias)
    chosen = choose_threshold(held, score_examples(selector, held), wrong_cost=recipe.wrong_cost) if held else None
    rules = rules_decisions(held) if held else None
    config = SelectionConfig(answers=chosen.threshold if chosen else SelectionConfig().answers)
    meta = {
        **(extra_meta or {}),
        "format": FORMAT,
        "kind": "answer_selector",
        "recipe": asdict(recipe),
        "model": {"weights": weights, "bias": bias},
        "config": asdict(config),
        "questions": len(examples),
        "by_source": dict(Counter(e.source for e in examples)),
        "seconds": round(time.perf_counter() - started, 2),
        "held_out": asdict(chosen) if chosen else None,
        "rules_held_out": asdict(rules) if rules else None,
        "metrics": {
            "held_out_accuracy": held_out_accuracy(chosen),
            "rules_held_out_accuracy": held_out_accuracy(rules),
        },
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SELECTOR_MARKER).write_text(json.dumps(meta, indent=2))
    return meta


# --- Versions: train, gate, promote --------------------------------------------------------------------

PROMOTE_TOLERANCE = 0.01
"""A new selector is promoted unless it decides this share of held-out questions fewer right than the one in service
(both measured on the new version's held-out questions, so on the same questions and the current help content)."""


@dataclass
class TrainedSelector:
    """A selector version just trained, the gate's verdict, and why."""

    name: str
    meta: dict[str, Any]
    promoted: bool
    reason: str


def train_selector_version(
    settings: Settings,
    pack: DomainPack,
    articles: Sequence[Article],
    *,
    reviewed: Iterable[list[dict[str, str]]] = (),
    recipe: SelectorRecipe | None = None,
    encoder: SentenceEncoder | None = None,
    on_progress: ProgressFn | None = None,
    on_start: Callable[[str], None] | None = None,
) -> TrainedSelector:
    """Train a selector on `articles` (the live help content), the pack's conversations and examples and `reviewed`
    conversations, and promote it unless the one in service decides its held-out questions better."""
    recipe = recipe or SelectorRecipe()
    registry = selector_registry(settings.selectors_dir)
    settings.selectors_dir.mkdir(parents=True, exist_ok=True)
    name = registry.next_name()
    if on_start is not None:
        on_start(name)
    index = KnowledgeIndex.build(articles, encoder or SentenceEncoder())
    examples = selection_examples(index, pack_material(pack, reviewed), recipe=recipe, on_progress=on_progress)
    meta = train_selector(
        examples, output_dir=registry.path(name), recipe=recipe, extra_meta={"articles": len(articles)}
    )
    active = registry.active()
    after = meta["metrics"]["held_out_accuracy"]
    rules = meta["metrics"]["rules_held_out_accuracy"]
    # The first version replaces the scores' rules only where it decides the held-out questions better than they do.
    promoted = after >= rules
    reason = f"held-out questions decided right: {after:.3f} vs {rules:.3f} for the scores' rules"
    if active is not None:
        _, held = split_examples(examples, recipe.held_out, recipe.seed)
        try:
            current = load_selector(registry.path(active))
        except SelectorError as error:
            reason = f"{active} cannot be read ({error})"
        else:
            before = held_out_accuracy(decisions(held, score_examples(current, held), current.config.answers))
            promoted = after >= before - PROMOTE_TOLERANCE
            reason = f"held-out questions decided right: {after:.3f} vs {before:.3f} for {active}"
    if promoted:
        promote(registry, name)
    logger.info("answer selector %s trained: %s; %s", name, "promoted" if promoted else "not promoted", reason)
    return TrainedSelector(name=name, meta=meta, promoted=promoted, reason=reason)
