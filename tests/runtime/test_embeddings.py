"""The encoder backed by stored embeddings: a second start over the same help articles embeds nothing, reads back
exactly the vectors the first computed, keeps customer questions out of the database, and answers without it; the
rows of texts an edit removed are cleaned up by one replica, never while it serves an older revision."""

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bot.domain import default_pack_path, load_pack
from bot.knowledge import KnowledgeIndex
from conversations.db import make_engine, upgrade_db
from conversations.knowledge import ArticleDraft, list_articles, save_article, save_articles
from conversations.models import StoredEmbedding
from runtime.embeddings import StoredEncoder, encoder_id, text_hash
from serving.knowledge import KnowledgeSync
from tests.utils.encoders import CountingEncoder


@pytest.fixture(scope="module")
def counting() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture(scope="module")
def shipped_id() -> str:
    return encoder_id()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade_db(engine)
    yield engine
    engine.dispose()


def stored_rows(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(StoredEmbedding)).one()


def test_a_second_start_embeds_nothing_and_reads_back_the_same_vectors(
    db_url: str, engine: Engine, counting: CountingEncoder, shipped_id: str
) -> None:
    articles = load_pack(default_pack_path()).articles
    first = StoredEncoder(counting, engine, encoder_id=shipped_id)
    counting.embedded.clear()
    with first.storing():
        built = KnowledgeIndex.build(articles, first)
        built.embed_sentences()
    passages = [f"{p.title}\n{p.text}" for p in built.passages]
    with first.storing():
        computed = first.embed(passages)  # what the first process would have, from the rows it stored
    embedded_first = len(counting.embedded)
    assert embedded_first > len(built)  # every passage and every sentence
    assert stored_rows(engine) > len(built)

    counting.embedded.clear()
    other = make_engine(db_url)  # another process: its own engine, the same database
    try:
        second = StoredEncoder(counting, other, encoder_id=shipped_id)
        with second.storing():
            rebuilt = KnowledgeIndex.build(articles, second)
            assert rebuilt.embed_sentences() > 0  # the index asked for every sentence ...
            read_back = second.embed(passages)
    finally:
        other.dispose()
    assert counting.embedded == []  # ... and the encoder ran for none of them
    assert np.array_equal(read_back, computed)
    questions = [
        "Can I pay with PayPal?",
        "how long do i have to send a lamp back",
        "my parcel never arrived",
        "I forgot my password",
        "do you ship to Canada?",
        "what is the capital of France",
    ]
    for question in questions:  # the same passages in the same order, with the same scores
        assert rebuilt.search(question, k=5) == built.search(question, k=5)


def test_vectors_read_back_equal_the_encoders_own(engine: Engine, counting: CountingEncoder, shipped_id: str) -> None:
    texts = ["Returns: You can return an item within 30 days.", "Payments: We take cards and PayPal."]
    own = counting.embed(texts)
    stored = StoredEncoder(counting, engine, encoder_id=shipped_id)
    with stored.storing():
        stored.embed(texts)
    counting.embedded.clear()
    with stored.storing():
        again = stored.embed(list(reversed(texts)) + texts)
    assert counting.embedded == []
    assert again.dtype == np.float32
    assert np.array_equal(again, np.concatenate([own[::-1], own]))


def test_another_encoder_id_does_not_read_these_vectors(
    engine: Engine, counting: CountingEncoder, shipped_id: str
) -> None:
    texts = ["Delivery: Orders ship within two working days."]
    shipped = StoredEncoder(counting, engine, encoder_id=shipped_id)
    with shipped.storing():
        shipped.embed(texts)
    counting.embedded.clear()
    retrained = StoredEncoder(counting, engine, encoder_id=shipped_id.replace("sha256:", "sha256:0"))
    with retrained.storing():
        retrained.embed(texts)
    assert counting.embedded == texts


def test_customer_questions_are_not_stored(engine: Engine, counting: CountingEncoder, shipped_id: str) -> None:
    stored = StoredEncoder(counting, engine, encoder_id=shipped_id)
    with stored.storing():
        index = KnowledgeIndex.build(load_pack(default_pack_path()).articles[:2], stored)
    rows = stored_rows(engine)
    assert index.search("my email is jane@example.com, where is my order?")
    assert stored_rows(engine) == rows


def test_without_a_usable_database_the_encoder_still_answers(tmp_path: Path, counting: CountingEncoder) -> None:
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no storedembedding table: every query fails
    stored = StoredEncoder(counting, unmigrated, encoder_id="any")
    texts = ["Returns: You can return an item within 30 days."]
    with stored.storing():
        vectors = stored.embed(texts)
    unmigrated.dispose()
    assert np.array_equal(vectors, counting.embed(texts))


def test_a_second_app_replica_embeds_nothing_at_start(
    engine: Engine, counting: CountingEncoder, shipped_id: str
) -> None:
    pack = load_pack(default_pack_path())
    counting.embedded.clear()
    first = KnowledgeSync.start(engine, pack, StoredEncoder(counting, engine, encoder_id=shipped_id))
    assert counting.embedded != []
    counting.embedded.clear()
    second = KnowledgeSync.start(engine, pack, StoredEncoder(counting, engine, encoder_id=shipped_id))
    assert counting.embedded == []
    assert len(second.index.current()) == len(first.index.current()) > 0


def test_the_app_knowledge_stores_with_the_shipped_encoder_id(tmp_path: Path, shipped_id: str) -> None:
    """KnowledgeSync without an encoder (as serving/services.py starts it) stores under the shipped encoder's id."""
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    upgrade_db(engine)
    sync = KnowledgeSync.start(engine, load_pack(default_pack_path()))
    with Session(engine) as session:
        encoders = set(session.exec(select(StoredEmbedding.encoder)).all())
    engine.dispose()
    assert encoders == {shipped_id}
    assert isinstance(sync.encoder, StoredEncoder)


def stored_hashes(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(StoredEmbedding.text_hash)).all())


def edit_first_article(engine: Engine, sentence: str) -> str:
    """Append `sentence` to the first help article (a new version, as the console saves it); returns its slug."""
    with Session(engine) as session:
        article = list_articles(session=session)[0]
        draft = ArticleDraft(article.slug, article.title, f"{article.text}\n\n{sentence}")
        save_article(session=session, draft=draft, changed_by="test")
        return article.slug


def test_an_edited_articles_old_embeddings_are_removed(
    engine: Engine, counting: CountingEncoder, shipped_id: str
) -> None:
    sync = KnowledgeSync.start(
        engine, load_pack(default_pack_path()), StoredEncoder(counting, engine, encoder_id=shipped_id)
    )
    before = stored_hashes(engine)
    slug = edit_first_article(engine, "Gift cards can be used with every payment method.")
    assert sync.refresh()
    live = {text_hash(text) for text in sync.index.current().embedded_texts()}
    orphaned = before - live  # the edited article's old passage (its text changed), nothing else
    assert orphaned and len(orphaned) < len(before) // 4
    assert stored_hashes(engine) == before | live

    assert sync.remove_stale_embeddings() == len(orphaned)
    assert stored_hashes(engine) == live
    assert sync.remove_stale_embeddings() == 0
    # What is left is all a new replica needs: it embeds nothing and finds the edit.
    counting.embedded.clear()
    replica = KnowledgeSync.start(
        engine, load_pack(default_pack_path()), StoredEncoder(counting, engine, encoder_id=shipped_id)
    )
    assert counting.embedded == []
    edited = next(p for p in replica.index.current().passages if "Gift cards can be used" in p.text)
    assert edited.article_slug == slug
    assert replica.index.current().search(edited.text)[0].passage == edited


def test_a_replica_behind_the_knowledge_base_removes_nothing(
    engine: Engine, counting: CountingEncoder, shipped_id: str
) -> None:
    """A replica still serving an older revision would count the new texts as stale: it leaves every row alone."""
    pack = load_pack(default_pack_path())
    behind = KnowledgeSync.start(engine, pack, StoredEncoder(counting, engine, encoder_id=shipped_id))
    edit_first_article(engine, "Gift cards can be used with every payment method.")
    ahead = KnowledgeSync.start(engine, pack, StoredEncoder(counting, engine, encoder_id=shipped_id))
    rows = stored_hashes(engine)
    new = {text_hash(text) for text in ahead.index.current().embedded_texts()} - {
        text_hash(text) for text in behind.index.current().embedded_texts()
    }
    assert new and new <= rows

    assert behind.remove_stale_embeddings() is None
    assert stored_hashes(engine) == rows
    assert behind.refresh()
    assert behind.remove_stale_embeddings() == len(rows) - len(stored_hashes(engine)) > 0
    assert new <= stored_hashes(engine)


def test_one_replica_cleans_per_period(engine: Engine, counting: CountingEncoder, shipped_id: str) -> None:
    pack = load_pack(default_pack_path())
    replicas = [
        KnowledgeSync.start(engine, pack, StoredEncoder(counting, engine, encoder_id=shipped_id)) for _ in range(2)
    ]
    edit_first_article(engine, "Gift cards can be used with every payment method.")
    for replica in replicas:
        assert replica.refresh()
    rows = stored_hashes(engine)
    replicas[0].clean_when_due()
    cleaned = stored_hashes(engine)
    assert cleaned < rows
    edit_first_article(engine, "Gift cards never expire.")
    for replica in replicas:
        replica.refresh()
        replica.clean_when_due()  # not due for another hour: the edit's old rows stay
    assert cleaned - stored_hashes(engine) == set()
    assert len(stored_hashes(engine)) > len(cleaned)


def test_a_start_reads_the_stored_vectors_in_few_queries(
    engine: Engine, counting: CountingEncoder, shipped_id: str
) -> None:
    """The sentences are embedded 64 at a time; their stored vectors are read 500 at a time all the same."""
    pack = load_pack(default_pack_path())
    copies = [ArticleDraft(f"{a.slug}-{n}", f"{a.title} ({n})", a.text) for n in range(8) for a in pack.articles]
    with Session(engine) as session:
        save_articles(session=session, drafts=copies, changed_by="test")
    KnowledgeSync.start(engine, pack, StoredEncoder(counting, engine, encoder_id=shipped_id))
    texts = stored_rows(engine)
    reads: list[str] = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "storedembedding" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        counting.embedded.clear()
        KnowledgeSync.start(engine, pack, StoredEncoder(counting, engine, encoder_id=shipped_id))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert counting.embedded == []
    assert texts > 640  # more than 10 batches of 64
    assert len(reads) <= 2 * math.ceil(texts / 500)
