"""Retrieval over help articles with the shipped sentence encoder: the right passage comes first,
unrelated questions find nothing relevant, and an edit re-embeds only what it changed."""

import pytest

from bot.domain import default_pack_path, load_pack
from bot.knowledge import Article, KnowledgeIndex
from tests.utils.encoders import CountingEncoder


@pytest.fixture(scope="module")
def encoder() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture(scope="module")
def demo(encoder: CountingEncoder) -> KnowledgeIndex:
    return KnowledgeIndex.build(load_pack(default_pack_path()).articles, encoder)


@pytest.mark.parametrize(
    ("question", "article", "words"),
    [
        ("Can I pay with PayPal?", "payments", "PayPal"),
        ("Do you do exchanges?", "returns", "exchanges"),
        ("Is my new speaker covered by a warranty?", "warranty", "2-year"),
        ("How long does express delivery take?", "shipping", "1 to 2 business days"),
        ("I forgot my password", "accounts", "Forgot password"),
        ("What are your support hours?", "contact_us", "9 am to 6 pm"),
    ],
)
def test_the_passage_that_answers_is_found(demo: KnowledgeIndex, question: str, article: str, words: str) -> None:
    hits = demo.search(question, k=3)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].passage.article_slug == article and hits[0].relevant
    assert any(words in hit.passage.text for hit in hits)  # the prompt carries all three


@pytest.mark.parametrize("question", ["What's the capital of France?", "tell me a joke", "Is it going to rain?"])
def test_unrelated_questions_find_nothing_relevant(demo: KnowledgeIndex, question: str) -> None:
    assert not any(hit.relevant for hit in demo.search(question))


def test_an_edit_re_embeds_only_the_passages_it_changed(demo: KnowledgeIndex, encoder: CountingEncoder) -> None:
    articles = list(demo.articles)
    returns = next(a for a in articles if a.slug == "returns")
    edited = Article("returns", returns.title, returns.text.replace("within 30 days", "within 60 days"), 2)
    added = Article("gift_wrap", "Gift wrapping", "We gift-wrap any order for $4.50. Choose Gift wrap at checkout.")
    encoder.embedded.clear()

    updated = demo.updated([added, *(edited if a.slug == "returns" else a for a in articles if a.slug != "payments")])

    assert len(encoder.embedded) == 2  # the edited passage and the new article; nothing else
    top = updated.search("How many days do I have to return something?")[0]
    assert "within 60 days" in top.passage.text and top.passage.version == 2
    assert updated.search("Do you gift wrap?")[0].passage.article_slug == "gift_wrap"
    assert "payments" not in {hit.passage.article_slug for hit in updated.search("Can I pay with PayPal?", k=5)}
    # The old snapshot still answers as before: requests already running keep a consistent index.
    assert "within 30 days" in demo.search("How many days do I have to return something?")[0].passage.text


def test_an_empty_knowledge_base_finds_nothing(encoder: CountingEncoder) -> None:
    index = KnowledgeIndex.build([], encoder)
    assert index.search("Can I pay with PayPal?") == [] and len(index) == 0


def test_a_turn_embeds_its_question_once_and_each_sentence_once(demo: KnowledgeIndex, encoder: CountingEncoder) -> None:
    question = "Does the warranty cover a lamp I dropped?"
    encoder.embedded.clear()
    hits = demo.search(question)
    similarity = demo.sentence_similarity(question, [hit.passage for hit in hits])
    # Each sentence is read under its article's title, and the question is embedded only once.
    assert encoder.embedded.count(question) == 1
    assert f"{hits[0].passage.title}: " + next(iter(similarity)) in encoder.embedded
    assert any("accidental damage" in sentence for sentence in similarity)
    encoder.embedded.clear()
    assert demo.sentence_similarity(question, [hit.passage for hit in hits]) == similarity
    assert encoder.embedded == []  # the next turn with the same passages embeds nothing
    # An edit keeps the sentences it did not change: only the new one is embedded (and the question, once).
    demo.sentence_similarity(question, demo.passages)
    warranty = next(a for a in demo.articles if a.slug == "warranty")
    edited = Article("warranty", warranty.title, warranty.text + " Bulbs are not covered.", 2)
    updated = demo.updated([edited if a.slug == "warranty" else a for a in demo.articles])
    encoder.embedded.clear()
    scores = updated.sentence_similarity(question, updated.passages)
    assert sorted(encoder.embedded) == sorted([question, f"{warranty.title}: Bulbs are not covered."])
    assert "Bulbs are not covered." in scores
