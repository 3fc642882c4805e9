"""Text embeddings kept in the database, so that every app process reads what one of them computed.

Rows are keyed by (encoder id, sha256 of the text); a row, once written, never changes, so concurrent writers
of the same text simply keep the first one (INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL).
"""

from collections.abc import Mapping, Sequence

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

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
