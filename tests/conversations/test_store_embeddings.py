"""Stored embeddings: read back as written, one row per (encoder, text) however many processes store it at once."""

import threading

import numpy as np
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from conversations import crud
from conversations.db import make_engine
from conversations.models import StoredEmbedding


def vector(seed: int) -> bytes:
    return np.random.default_rng(seed).standard_normal(384).astype("<f4").tobytes()


def count_rows(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(StoredEmbedding)).one()


def test_stored_vectors_read_back_by_encoder_and_hash(session: Session) -> None:
    rows = {f"{i:064x}": vector(i) for i in range(1200)}  # more than one batch each way
    assert crud.store_embeddings(session=session, encoder="model-a", rows=rows) == 1200
    found = crud.stored_embeddings(session=session, encoder="model-a", hashes=[*rows, "f" * 64])
    assert found == rows
    assert crud.stored_embeddings(session=session, encoder="model-b", hashes=list(rows)) == {}


def test_storing_a_stored_text_again_keeps_the_first_vector(session: Session) -> None:
    key = "a" * 64
    crud.store_embeddings(session=session, encoder="model-a", rows={key: vector(1)})
    assert crud.store_embeddings(session=session, encoder="model-a", rows={key: vector(2), "b" * 64: vector(3)}) == 1
    found = crud.stored_embeddings(session=session, encoder="model-a", hashes=[key, "b" * 64])
    assert found == {key: vector(1), "b" * 64: vector(3)}


def test_two_processes_storing_the_same_texts_at_once_make_one_row_each(db_url: str, engine: Engine) -> None:
    """Two engines (two app processes) store 3,000 texts, overlapping in opposite orders, at the same moment."""
    rows = {f"{i:064x}": vector(i) for i in range(3000)}
    orders = [dict(list(rows.items())[:2000]), dict(reversed(list(rows.items())[1000:]))]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    added: list[int] = []

    def store(part: dict[str, bytes]) -> None:
        own = make_engine(db_url)
        try:
            with Session(own) as session:
                barrier.wait()
                added.append(crud.store_embeddings(session=session, encoder="model-a", rows=part))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            own.dispose()

    threads = [threading.Thread(target=store, args=(part,)) for part in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(added) == 3000
    assert count_rows(engine) == 3000
    with Session(engine) as session:
        assert crud.stored_embeddings(session=session, encoder="model-a", hashes=list(rows)) == rows
