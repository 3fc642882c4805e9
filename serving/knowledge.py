"""Keeps the app's knowledge index in step with the knowledge base in the database, in every replica.

Each replica polls the KB's revision (one indexed max() query) and rebuilds its index when it moved,
re-embedding only the passages whose text changed; the replica that saved a change rebuilds at once. Embeddings
come from the database where any replica stored them already (runtime/embeddings.py), so only new text is embedded.
Stored embeddings of texts no article has any more are removed now and then, by one replica at a time.
"""

import asyncio
import logging
import os
import socket
import threading
import time
from datetime import timedelta

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.dialogue import Swappable
from bot.domain import DomainPack
from bot.knowledge import KnowledgeIndex, SentenceEncoder
from conversations import crud
from conversations.knowledge import ArticleDraft, knowledge_revision, seed_articles
from runtime.dialogue import live_articles
from runtime.embeddings import StoredEncoder, reading_ahead, storing, text_hash

logger = logging.getLogger(__name__)

# How often one replica removes the stored embeddings of texts gone from the knowledge base. An edit leaves its old
# texts' rows behind (a few per passage, about 1.6 KB each); hourly keeps that small without a query per poll.
CLEANUP_EVERY = timedelta(hours=1)


class KnowledgeSync:
    """Owns the served KnowledgeIndex: built at start-up, swapped for a new one when the KB changes."""

    def __init__(
        self,
        engine: Engine,
        encoder: SentenceEncoder,
        interval_s: float = 2.0,
        cleanup_every: timedelta = CLEANUP_EVERY,
    ) -> None:
        self.engine = engine
        self.encoder = encoder
        self.interval_s = interval_s
        self.cleanup_every = cleanup_every
        self._cleanup_asked = float("-inf")  # monotonic time this process last asked to clean
        self.revision = -1
        self.index: Swappable[KnowledgeIndex] = Swappable(KnowledgeIndex.build([], encoder))
        self._lock = threading.Lock()  # one rebuild at a time

    @classmethod
    def start(cls, engine: Engine, pack: DomainPack, encoder: SentenceEncoder | None = None) -> "KnowledgeSync":
        """Import the pack's help articles into an empty knowledge base, then index what the KB holds. Without an
        `encoder`, the shipped one, backed by the embeddings stored in `engine`'s database."""
        sync = cls(engine, encoder or StoredEncoder.open(engine))
        with Session(engine) as session:
            drafts = [ArticleDraft(article.slug, article.title, article.text) for article in pack.articles]
            imported = seed_articles(session=session, drafts=drafts, source=f"domain pack {pack.name}")
        if imported:
            logger.info("knowledge base was empty: imported %d help articles from domain pack %s", imported, pack.name)
        sync.refresh()
        return sync

    def refresh(self) -> bool:
        """Rebuild the index if the KB's revision moved since the last build; True when it did."""
        # Held over the rebuild too, so a slower rebuild of an older revision never replaces a newer one.
        with self._lock:
            with Session(self.engine) as session:
                revision = knowledge_revision(session=session)
                if revision == self.revision:
                    return False
                articles = live_articles(session)
            with storing(self.encoder):
                index = self.index.current().updated(articles)
                # Answer ranking reads every sentence's embedding; make them now, not in a customer's turn. They are
                # embedded in small batches, so their stored vectors are read ahead in large ones.
                with reading_ahead(self.encoder, index.sentence_texts()):
                    index.embed_sentences()
            self.index.switch(index)
            self.revision = revision
        logger.info("knowledge base revision %d: %d articles, %d passages", revision, len(articles), len(index))
        return True

    def remove_stale_embeddings(self) -> int | None:
        """Delete the stored embeddings of this encoder that the knowledge base at the served revision no longer
        embeds; returns how many, or None when there is no store or the KB moved meanwhile (nothing is deleted)."""
        if not isinstance(self.encoder, StoredEncoder):
            return None
        with self._lock:  # the served index and its revision, as one pair
            index, revision = self.index.current(), self.revision
        live = {text_hash(text) for text in index.embedded_texts()}
        with Session(self.engine) as session:
            removed = crud.remove_stale_embeddings(
                session=session, encoder=self.encoder.encoder_id, live=live, revision=revision
            )
        if removed:
            logger.info("removed %d stored embeddings of texts no longer in the knowledge base", removed)
        return removed

    def clean_when_due(self) -> None:
        """Remove stale stored embeddings if this replica claims the run (every `cleanup_every`, one replica)."""
        now = time.monotonic()
        if now - self._cleanup_asked < self.cleanup_every.total_seconds():
            return
        self._cleanup_asked = now
        holder = f"{socket.gethostname()}:{os.getpid()}"
        with Session(self.engine) as session:
            claimed = crud.claim_job(
                session=session, name="knowledge-embeddings", every=self.cleanup_every, holder=holder
            )
        if claimed:
            self.remove_stale_embeddings()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await run_in_threadpool(self.refresh)
                await run_in_threadpool(self.clean_when_due)
            except Exception:  # noqa: BLE001 - a failed poll must not stop the app; the next one retries
                logger.exception("could not refresh the knowledge index")
