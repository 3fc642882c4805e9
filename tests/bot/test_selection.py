"""The select stage: a selector's probability decides whether the help content answers; what it reads; loading."""

import json
from collections import Counter
from pathlib import Path

import pytest

from bot.articles import Article
from bot.grounding import Candidate, names_a_rare_term, sentence_frequency
from bot.knowledge import KnowledgeIndex, SentenceEncoder
from bot.selection import (
    FEATURES,
    SELECTOR_MARKER,
    AnswerSelector,
    SelectionConfig,
    SelectorError,
    by_rules,
    load_selector,
    question_features,
    rank_candidates,
    select,
)

ARTICLES = [
    Article(
        "shipping", "Shipping",
        "Standard shipping takes 3 to 5 business days. Express shipping takes 1 to 2 business days and costs $14.95.",
    ),
    Article("returns", "Returns", "## How long do I have?\n\nYou can return most items within 30 days of delivery."),
]  # fmt: skip


@pytest.fixture(scope="module")
def index() -> KnowledgeIndex:
    return KnowledgeIndex.build(ARTICLES, SentenceEncoder())


def by_cosine(answers: float = 0.5) -> AnswerSelector:
    # A hand-made model: the best sentence's cosine decides, an even chance at 0.45.
    weights = {name: 0.0 for name in FEATURES} | {"best_semantic": 10.0}
    return AnswerSelector(weights, -4.5, config=SelectionConfig(answers=answers), name="selector-v1")


def decide(index: KnowledgeIndex, selector: AnswerSelector, question: str):  # noqa: ANN201
    hits = index.search(question, k=4)
    ranked = rank_candidates(index, question, hits)
    return select(selector, question, question, ranked, hits, frequency=sentence_frequency(index.text))


def test_a_covered_question_is_answered_with_the_best_sentence(index: KnowledgeIndex) -> None:
    selection = decide(index, by_cosine(), "how long does express delivery take")
    assert selection.answerable and selection.by == "selector-v1"
    assert selection.chosen()[0].sentence.startswith("Express shipping takes 1 to 2 business days")


def test_an_uncovered_question_is_not(index: KnowledgeIndex) -> None:
    selection = decide(index, by_cosine(), "do you sell gift wrapping for birthdays")
    assert not selection.answerable
    assert selection.best < 0.5


def test_the_threshold_is_the_versions_own(index: KnowledgeIndex) -> None:
    question = "how long does express delivery take"
    best = decide(index, by_cosine(), question).best
    assert not decide(index, by_cosine(answers=min(0.99, best + 0.01)), question).answerable


def test_the_features_read_the_best_candidates_and_retrieval(index: KnowledgeIndex) -> None:
    question = "how much is express shipping"
    hits = index.search(question, k=4)
    ranked = rank_candidates(index, question, hits)
    features = question_features(question, question, ranked, hits, frequency=Counter())
    assert set(features) == set(FEATURES)
    assert features["best_semantic"] == ranked[0].semantic and features["answer_type"] == 1.0
    assert features["passage"] == max(hit.score for hit in hits)


def test_chosen_sentences_leave_out_what_the_customer_was_told() -> None:
    ranked = [
        Candidate("Express shipping costs $14.95.", 0.9, 0, 0, 0, 0.9),
        Candidate("Standard shipping takes 3 to 5 business days.", 0.8, 0, 0, 0, 0.8),
        Candidate("Returns are free.", 0.2, 0, 0, 0, 0.2),
    ]
    selection = by_rules(ranked)
    assert [c.sentence for c in selection.chosen()] == [ranked[0].sentence, ranked[1].sentence]
    told = ["Express shipping costs $14.95 on any order."]
    assert [c.sentence for c in selection.chosen(told)] == [ranked[1].sentence]


def test_a_follow_up_gets_what_it_adds_and_not_the_last_answer_again() -> None:
    us = Candidate("Standard shipping to the US takes 3 to 5 business days and costs $5.95.", 0.9, 0, 0, 0, 1.4)
    express = Candidate("Express shipping takes 1 to 2 business days.", 0.6, 0, 0, 0, 1.0)
    canada = Candidate("Orders to Canada arrive in 6 to 9 business days.", 0.45, 0, 0, 0, 0.8)
    returns = Candidate("Returns are free within 30 days.", 0.3, 0, 0, 1, 0.5)
    frequency = sentence_frequency(" ".join(c.sentence for c in (us, express, canada, returns)))
    told = [us.sentence]
    selection = by_rules([us, express, canada, returns])

    def after_reply(said: list[str], text: str) -> list[Candidate]:
        return selection.after_reply(said, text, lambda c: names_a_rare_term(text, c.sentence, frequency))

    # The place the follow-up names is in a sentence the customer was not told: that sentence answers, not the
    # best one (told) nor one that says nothing of what the follow-up adds.
    assert after_reply(told, "and to canada?") == [canada]
    # Asked again, or about what the reply already said: the answer again.
    assert after_reply(told, "so how much was it?") == [us]
    # After another reply, the best sentences as usual.
    assert after_reply(["Returns are free."], "how long") == selection.chosen()


def test_a_follow_up_that_points_back_to_the_answer_gets_it_again_and_one_that_asks_for_more_gets_the_rest() -> None:
    waterfall = Candidate("The Waterfall tour on e-bikes costs $129 and runs on weekends.", 0.9, 0, 0, 0, 1.4)
    sunset = Candidate("The Sunset tour costs $45 and runs on Fridays.", 0.8, 0, 0, 0, 1.3)
    selection = by_rules([waterfall, sunset])
    told = [waterfall.sentence]
    # "That one" is the tour the customer was told about, not the other one ranked close to it.
    assert selection.after_reply(told, "how much is that one", lambda _: False) == [waterfall]
    # Words no candidate holds ("whats", "seats") select nothing: still the told tour.
    assert selection.after_reply(told, "whats the price of it for 2 seats", lambda _: False) == [waterfall]
    # Nothing added and nothing pointed back to: what the reply left out.
    assert selection.after_reply(told, "anything else?", lambda _: False) == [sunset]


def test_a_folder_without_its_marker_or_of_another_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SelectorError, match="no selector.json"):
        load_selector(tmp_path)
    (tmp_path / SELECTOR_MARKER).write_text(json.dumps({"format": 99}))
    with pytest.raises(SelectorError, match="format 99"):
        load_selector(tmp_path)
    weights = {name: 0.5 for name in FEATURES}
    (tmp_path / SELECTOR_MARKER).write_text(
        json.dumps({"format": 1, "model": {"weights": weights, "bias": -1.0}, "config": {"answers": 0.6}})
    )
    loaded = load_selector(tmp_path)
    assert loaded.config.answers == 0.6 and loaded.weights == weights and loaded.name == tmp_path.name
