"""Learned answer selection: which help-article sentences answer a question, and whether any does.

A selector is a model trained on the company's own questions and content (finetune/selection.py) that gives the
probability that the help content answers a question, from what the encoder, the words and retrieval say of its best
candidate sentences; below its threshold the reply is "not sure", above it the best candidates are the answer.
Versions live in their registry like the intent classifiers and are swapped in while the app runs. Without one (the
default, `SUPPORTBOT_ANSWER_SELECTION=rules`) the scores' rules decide (`by_rules`).
"""

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bot.grounding import (
    ANSWER_TYPE_BONUS,
    CLOSE_TO_BEST,
    LEXICAL_WEIGHT,
    Candidate,
    asks_for_fact,
    asks_how_to,
    choose_sentences,
    content_stems,
    holds_asked_fact,
    names_a_rare_term,
    rank_sentences,
    word_overlap,
)
from bot.intent_net import settled
from bot.knowledge import Hit, KnowledgeIndex
from bot.text import REFERS_BACK, words

# Below this, the best passage sentence does not answer the question (word overlap + encoder cosine of the
# sentence under its article's title, see bot/grounding.rank_sentences): the help content does not cover it,
# whatever retrieval returned. Chosen with the float32 encoder on two development sets: the pack's intent examples
# that ask what an article answers (159) against its out-of-scope examples (29), where every value from 0.52 to 0.56
# keeps 82 % of the first and lets 3 % of the second through, and the development questions of
# tests/bench/grounded_questions.yaml, where the best uncovered one scores 0.50 and the lowest covered one 0.55.
ANSWERABLE = 0.54
# A best sentence that holds a word of the question the help content uses only once or twice (a rare, specific term)
# answers from this score on: the content speaks to exactly what was asked even when the rest is worded otherwise.
SPECIFIC_ANSWERABLE = 0.4
SELECTOR_MARKER = "selector.json"
FORMAT = 1


class SelectorError(Exception):
    """A selector folder is missing, incomplete, or of a format this code cannot read."""


@dataclass(frozen=True)
class SelectionConfig:
    """How the selector's probabilities become an answer."""

    answers: float = 0.5
    """The help content answers the question from this probability on; below it the reply is "not sure". Replaced by
    the value each trained version chose on its held-out questions (selector.json)."""

    def __post_init__(self) -> None:
        if not 0 < self.answers < 1:
            raise ValueError("answers is a probability between 0 and 1")


FEATURES = (
    "best_score", "best_semantic", "best_lexical", "mean_semantic", "second_gap", "answer_type", "rare_term",
    "passage", "passage_dense", "passage_lexical", "relevant_passages",
)  # fmt: skip
"""What the selector reads of a question's candidates (see `question_features`)."""


def question_features(
    question: str, text: str, ranked: Sequence[Candidate], hits: Sequence[Hit], *, frequency: Counter[str]
) -> dict[str, float]:
    """A question's candidates as the selector reads them (`ranked` best first by the cheap ranking, from the passages
    of `hits`; `text` is the customer's own message): the best sentence's score, encoder cosine (under its article's
    title) and share of the question's words; the mean cosine of the best three; how far the best stands above the
    next; whether the best states the kind of fact asked for and a word of the message the help content rarely uses;
    the best passage's retrieval scores and how many passages passed retrieval's relevance bar."""
    best = ranked[0]
    top = ranked[:3]
    return {
        "best_score": best.score,
        "best_semantic": best.semantic,
        "best_lexical": best.lexical,
        "mean_semantic": sum(c.semantic for c in top) / len(top),
        "second_gap": best.rank - ranked[1].rank if len(ranked) > 1 else best.rank,
        "answer_type": float(asks_for_fact(question) and holds_asked_fact(question, best.sentence)),
        "rare_term": float(names_a_rare_term(text, best.sentence, frequency)),
        "passage": max(h.score for h in hits),
        "passage_dense": max(h.dense for h in hits),
        "passage_lexical": max(h.lexical for h in hits),
        "relevant_passages": float(sum(h.relevant for h in hits)),
    }


class AnswerSelector:
    """A logistic model over `FEATURES`, trained on the company's own questions and content (finetune/selection.py):
    the probability that the help content answers the question, read from its best candidates."""

    def __init__(
        self, weights: dict[str, float], bias: float, *, config: SelectionConfig | None = None, name: str = ""
    ) -> None:
        missing = set(FEATURES) - set(weights)
        if missing:
            raise SelectorError(f"the selector has no weight for {sorted(missing)}")
        self.weights = {feature: float(weights[feature]) for feature in FEATURES}
        self.bias = float(bias)
        self.config = config or SelectionConfig()
        self.name = name

    def probability(self, features: dict[str, float]) -> float:
        """Settled (rounded, so that every CPU's kernels give the same decisions)."""
        z = self.bias + sum(self.weights[name] * features[name] for name in FEATURES)
        return settled(1 / (1 + math.exp(-max(-60.0, min(60.0, z)))))


def load_selector(folder: Path) -> AnswerSelector:
    """The selector saved in `folder`; SelectorError when it is incomplete or of another format."""
    marker = folder / SELECTOR_MARKER
    if not marker.exists():
        raise SelectorError(f"{folder}: no {SELECTOR_MARKER} (not a selector, or its training did not finish)")
    try:
        meta = json.loads(marker.read_text())
        if meta.get("format") != FORMAT:
            raise SelectorError(f"{folder}: selector format {meta.get('format')}, this version reads {FORMAT}")
        model = meta["model"]
        return AnswerSelector(
            model["weights"], model["bias"], config=SelectionConfig(**meta["config"]), name=folder.name
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SelectorError(f"{folder}: {error}") from error


@dataclass(frozen=True)
class Selection:
    """The select stage's outcome: the candidate sentences best first, and whether any of them answers."""

    ranked: list[Candidate]
    answerable: bool
    best: float  # the best candidate's score: the selector's probability, or the rules' score
    floor: float  # a companion sentence ranks at least this
    by: str  # the selector version that decided, or "rules"
    hits: Sequence[Hit] = ()  # the passages the candidates come from (`Candidate.passage` indexes them)

    def chosen(self, said: Sequence[str] = ()) -> list[Candidate]:
        """The one to three sentences that answer, less those whose words the customer was already told (`said`)."""
        already = _stems_of(said)
        picked = choose_sentences(self.ranked, floor=self.floor)
        return [c for c in picked if not _told(c, already)]

    def after_reply(self, said: Sequence[str], text: str, rare_term: Callable[[Candidate], bool]) -> list[Candidate]:
        """The sentences that answer the customer's newest message `text` after the bot told them `said`;
        `rare_term` says whether a candidate holds a rare term of `text` (as for `by_rules`).

        When the best candidate is what the customer was already told, the message is a follow-up about something
        else ("and to <another place>?") or the question again. A sentence not told that holds a word of `text` the
        told reply does not (what the follow-up adds) answers when it would answer on its own
        (`answerable_by_rules`); else, when the message adds no word a candidate holds and points back to what was
        told (the price of "it" after a reply about one item), what was told of the answer again; else the
        companions not told yet; else the answer again."""
        already = _stems_of(said)
        if not said or not self.ranked or not _told(self.ranked[0], already):
            return self.chosen(said) or self.chosen()
        added = set(content_stems(text)) - already
        holding = [c for c in self.ranked if added & set(content_stems(c.sentence))]  # what the follow-up adds
        if not holding and set(words(text)) & REFERS_BACK:
            return [candidate for candidate in self.chosen() if _told(candidate, already)]
        speaking = [c for c in holding if not _told(c, already)]
        if speaking and answerable_by_rules(speaking[0].score, lambda: rare_term(speaking[0])):
            return choose_sentences(speaking, floor=CLOSE_TO_BEST * speaking[0].rank)
        return self.chosen(said) or self.chosen()


def _stems_of(said: Sequence[str]) -> set[str]:
    return set(content_stems(" ".join(said), courtesy=True))


def _told(candidate: Candidate, already: set[str]) -> bool:
    """Whether every word of `candidate` is among the stems the customer was already told (`already`)."""
    return set(content_stems(candidate.sentence, courtesy=True)) <= already


def rank_candidates(index: KnowledgeIndex, question: str, hits: Sequence[Hit]) -> list[Candidate]:
    """Every sentence of the passages of `hits`, best answer to `question` first by the cheap ranking (word overlap,
    the encoder's cosine of the sentence under its article's title, the passage's retrieval score). For a question
    that asks how to do something, the steps of a procedure rank as the procedure does (`procedure_scores`)."""
    cosine = index.sentence_similarity(question, [hit.passage for hit in hits])
    ranked = rank_sentences(
        question, [hit.passage.text for hit in hits], passage_scores=[hit.score for hit in hits],
        similarity=lambda _, sentences: [cosine.get(sentence, 0.0) for sentence in sentences],
    )  # fmt: skip
    if not asks_how_to(question):
        return ranked
    overlap = word_overlap(question, [candidate.sentence for candidate in ranked])
    procedures = procedure_scores(hits, overlap)
    lifted = []
    for candidate in ranked:
        score = procedures.get((candidate.passage, candidate.sentence), candidate.score)
        if score > candidate.score:
            bonus = candidate.rank - candidate.score
            candidate = replace(candidate, score=score, rank=score + bonus)
        lifted.append(candidate)
    return sorted(lifted, key=lambda c: (-c.rank, c.passage))


def procedure_scores(hits: Sequence[Hit], overlap: Callable[[str], float]) -> dict[tuple[int, str], float]:
    """The score of each numbered procedure of the passages of `hits` as one answer to the question, for each of its
    steps (keyed by passage number and sentence): the word overlap (`overlap`) of its heading, lead-in and steps
    together, the encoder's cosine of its passage, and the answer-type bonus a procedure earns for "how do I"."""
    scores = {}
    for number, hit in enumerate(hits):
        passage = hit.passage
        for group in {part.group for part in passage.parts if part.kind == "step"}:
            steps = [sentence for sentence, parts in passage.layout() if any(
                part.group == group and part.kind == "step" for part in parts
            )]  # fmt: skip
            lead = [part.text for part in passage.parts if part.group == group and part.kind == "lead_in"]
            text = " ".join([passage.heading, *lead, *steps])
            score = LEXICAL_WEIGHT * overlap(text) + hit.dense + ANSWER_TYPE_BONUS
            scores.update({(number, step): score for step in steps})
    return scores


def answerable_by_rules(best: float, rare_term: Callable[[], bool]) -> bool:
    """The scores' rule: the best sentence answers from ANSWERABLE on, or from SPECIFIC_ANSWERABLE when it holds a
    rare term of the question (`rare_term`, asked only then)."""
    return best >= ANSWERABLE or (best >= SPECIFIC_ANSWERABLE and rare_term())


def by_rules(ranked: Sequence[Candidate], rare_term: Callable[[Candidate], bool] = lambda _: False) -> Selection:
    """The scores' rules' selection (no selector in service): answered by `answerable_by_rules`, where `rare_term`
    says whether the best candidate holds a rare term of the question; companions within CLOSE_TO_BEST of the
    best."""
    best = max((candidate.score for candidate in ranked), default=0.0)
    answerable = bool(ranked) and answerable_by_rules(best, lambda: rare_term(ranked[0]))
    floor = CLOSE_TO_BEST * ranked[0].rank if ranked else 0.0
    return Selection(list(ranked), answerable, best, floor, "rules")


def select(
    selector: AnswerSelector,
    question: str,
    text: str,
    ranked: Sequence[Candidate],
    hits: Sequence[Hit],
    *,
    frequency: Counter[str],
) -> Selection:
    """The selector's decision on `ranked` (the cheap ranking's order, candidates of the passages of `hits`): whether
    the help content answers at all; the sentences then chosen are the cheap ranking's best."""
    probability = selector.probability(question_features(question, text, ranked, hits, frequency=frequency))
    decided = probability >= selector.config.answers
    return replace(by_rules(ranked), answerable=decided, best=probability, by=selector.name, hits=hits)
