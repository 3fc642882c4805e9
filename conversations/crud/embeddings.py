"""Text embeddings kept in the database, so that every app process reads what one of them computed.

Rows are keyed by (encoder id, sha256 of the text); a row, once written, never changes, so concurrent writers
of the same text simply keep the first one (INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL). Rows of
texts no article has any more are removed by `remove_stale_embeddings`.
"""

from collections.abc import Collection, Mapping, Sequence

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, delete, select

from conversations.knowledge import knowledge_revision
from conversations.models import StoredEmbedding

# Hashes per lookup and rows per insert: well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
EMBEDDING_BATCH = 500


def stored_embeddings(*, session: Session, encoder: str, hashes: Sequence[str]) -> dict[str, bytes]:
    """The stored vectors of `encoder` among `hashes`, by hash; hashes with none stored are absent."""
    found: dict[str, bytes] = {}
    unique = list(dict.fromkeys(hashes))
    for start in range(0, len(unique), EMBEDDING_BATCH):
        batch = unique[start : start + EMBEDDING_BATCH]
        rows = session.exec(
            select(StoredEmbedding.text_hash, StoredEmbedding.vector).where(
                StoredEmbedding.encoder == encoder, col(StoredEmbedding.text_hash).in_(batch)
            )
        )
        found.update((text_hash, bytes(vector)) for text_hash, vector in rows)
    return found


def store_embeddings(*, session: Session, encoder: str, rows: Mapping[str, bytes]) -> int:
    """Store `encoder`'s vector for each text hash in `rows` unless one is stored already; returns how many
    were new. Commits each batch."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # Sorted, so that two processes storing overlapping texts take PostgreSQL's row locks in the same order
    # and one waits for the other instead of deadlocking.
    ordered = sorted(rows.items())
    added = 0
    for start in range(0, len(ordered), EMBEDDING_BATCH):
        batch = ordered[start : start + EMBEDDING_BATCH]
        statement = (
            insert(StoredEmbedding)
            .values([{"encoder": encoder, "text_hash": text_hash, "vector": vector} for text_hash, vector in batch])
            .on_conflict_do_nothing(index_elements=["encoder", "text_hash"])
            .returning(col(StoredEmbedding.text_hash))  # rowcount is -1 for this statement on psycopg
        )
        added += len(session.exec(statement).all())  # type: ignore[call-overload]
        session.commit()
    return added


def remove_stale_embeddings(*, session: Session, encoder: str, live: Collection[str], revision: int) -> int | None:
    """Delete `encoder`'s stored vectors whose text hash is not in `live`, the hashes of every text the knowledge
    base at `revision` embeds; returns how many went, or None, deleting nothing, when the knowledge base is no
    longer at `revision` by the end (another replica may be storing the new texts: the next run cleans).

    Safe beside replicas that store: a replica stores a text only after the article change that brought it was
    committed, so any row this run saw belongs to a revision committed before the final check, which then fails
    and rolls the deletion back; rows stored after the first read are never in the list deleted."""
    live = set(live)
    stored = session.exec(select(StoredEmbedding.text_hash).where(StoredEmbedding.encoder == encoder)).all()
    stale = sorted(text_hash for text_hash in stored if text_hash not in live)
    for start in range(0, len(stale), EMBEDDING_BATCH):
        batch = stale[start : start + EMBEDDING_BATCH]
        session.exec(  # type: ignore[call-overload]
            delete(StoredEmbedding).where(
                col(StoredEmbedding.encoder) == encoder, col(StoredEmbedding.text_hash).in_(batch)
            )
        )
    if knowledge_revision(session=session) != revision:
        session.rollback()
        return None
    session.commit()
    return len(stale)
