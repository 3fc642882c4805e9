"""Keeps the app's knowledge index in step with the knowledge base in the database, in every replica.

Each replica polls the KB's revision (one indexed max() query) and rebuilds its index when it moved,
re-embedding only the passages whose text changed; the replica that saved a change rebuilds at once. Embeddings
come from the database where any replica stored them already (runtime/embeddings.py), so only new text is embedded.
"""

import asyncio
import logging
import threading

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.dialogue import Swappable
from bot.domain import DomainPack
from bot.knowledge import KnowledgeIndex, SentenceEncoder
from conversations.knowledge import ArticleDraft, knowledge_revision, seed_articles
from runtime.dialogue import live_articles
from runtime.embeddings import StoredEncoder, storing

logger = logging.getLogger(__name__)


class KnowledgeSync:
    """Owns the served KnowledgeIndex: built at start-up, swapped for a new one when the KB changes."""

    def __init__(self, engine: Engine, encoder: SentenceEncoder, interval_s: float = 2.0) -> None:
        self.engine = engine
        self.encoder = encoder
        self.interval_s = interval_s
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
                # Answer ranking reads every sentence's embedding; make them now, not in a customer's turn.
                index.embed_sentences()
            self.index.switch(index)
            self.revision = revision
        logger.info("knowledge base revision %d: %d articles, %d passages", revision, len(articles), len(index))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await run_in_threadpool(self.refresh)
            except Exception:  # noqa: BLE001 - a failed poll must not stop the app; the next one retries
                logger.exception("could not refresh the knowledge index")
