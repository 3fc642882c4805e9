"""The sentence encoder backed by the embeddings stored in the database: a text any app process embedded once is
read, not embedded again, by every process after it (knowledge passages and their sentences, not customer text).
"""

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from bot.intents import encoder_info, encoder_path
from bot.knowledge import SentenceEncoder
from conversations import crud

logger = logging.getLogger(__name__)

# Stored vectors are little-endian float32, whatever the CPU.
VECTOR_DTYPE = np.dtype("<f4")
# Texts whose stored vectors `reading_ahead` reads at once (ten queries): few round trips, and ~7.5 MB held at a time
# (reading all of them first kept ~300 MB more RSS after a start at 100,000 passages).
READ_AHEAD = 5000


def encoder_id(path: Path | None = None, *, max_length: int = 256) -> str:
    """What identifies the vectors an encoder makes: its name and package version, a digest of every file of the
    model (weights, tokenizer, configuration), the truncation length and the stored number type. Any change to
    one of them gives a new id, so vectors of another model are never read back."""
    path = path or encoder_path()
    digest = hashlib.sha256()
    for file in sorted(item for item in path.rglob("*") if item.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    info = encoder_info()
    return f"{info['name']}@{info['package_version']}/sha256:{digest.hexdigest()[:16]}/max_length={max_length}/float32"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StoredEncoder(SentenceEncoder):
    """A SentenceEncoder (same `embed`, `dim`, `threads`) that, inside `storing()`, reads the vectors of texts the
    database already holds for this encoder, embeds only the others and stores them. Outside `storing()` it is the
    wrapped encoder: customer questions are embedded as before and never written to the database.

    It subclasses SentenceEncoder only so that KnowledgeIndex (typed for it) accepts it; it loads no model itself.
    """

    def __init__(self, encoder: SentenceEncoder, engine: Engine, *, encoder_id: str) -> None:
        self.encoder = encoder
        self.engine = engine
        self.encoder_id = encoder_id
        self.dim = encoder.dim
        self.embedded = 0  # texts the wrapped encoder embedded while storing, for the start-up log
        self._storing = threading.local()  # .on: inside storing(); .ahead: vectors read ahead, by text hash

    @classmethod
    def open(cls, engine: Engine, path: Path | None = None, *, max_length: int = 256) -> "StoredEncoder":
        """The shipped encoder (or the one at `path`), backed by `engine`'s stored embeddings."""
        path = path or encoder_path()
        encoder = SentenceEncoder(path, max_length=max_length)
        return cls(encoder, engine, encoder_id=encoder_id(path, max_length=max_length))

    @property
    def threads(self) -> int | None:
        return self.encoder.threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        self.encoder.threads = value

    @contextmanager
    def storing(self) -> Iterator[None]:
        """Within this block, and in this thread only, embeddings are read from and written to the database."""
        previous = getattr(self._storing, "on", False)
        self._storing.on = True
        try:
            yield
        finally:
            self._storing.on = previous

    @contextmanager
    def reading_ahead(self, texts: Sequence[str]) -> Iterator[None]:
        """Within this block (inside `storing()`, this thread), `texts` are about to be embedded in this order in many
        small batches: their stored vectors are read a window of READ_AHEAD texts at a time (one query per 500), not
        one query per batch."""
        previous = getattr(self._storing, "ahead", None)
        self._storing.ahead = _ReadAhead(self._read, texts)
        try:
            yield
        finally:
            self._storing.ahead = previous

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row per text, in order."""
        if not getattr(self._storing, "on", False) or not texts:
            return self.encoder.embed(texts)
        hashes = [text_hash(text) for text in texts]
        ahead: _ReadAhead | None = getattr(self._storing, "ahead", None)
        found, absent = ahead.take(hashes) if ahead is not None else ({}, set())
        unread = [h for h in dict.fromkeys(hashes) if h not in found and h not in absent]
        if unread:
            found.update(self._read(unread))
        missing = list(dict.fromkeys(h for h in hashes if h not in found))
        if missing:
            by_hash = dict(zip(hashes, texts, strict=True))
            computed = self.encoder.embed([by_hash[h] for h in missing]).astype(VECTOR_DTYPE, copy=False)
            self.embedded += len(missing)
            fresh = dict(zip(missing, computed, strict=True))
            self._write({h: vector.tobytes() for h, vector in fresh.items()})
            found.update(fresh)
        return np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)

    def _read(self, hashes: list[str]) -> dict[str, np.ndarray]:
        try:
            with Session(self.engine) as session:
                rows = crud.stored_embeddings(session=session, encoder=self.encoder_id, hashes=hashes)
        except SQLAlchemyError:
            # The encoder can still answer; the database is the shortcut, not the source.
            logger.exception("could not read stored embeddings; embedding %d texts instead", len(set(hashes)))
            return {}
        size = self.dim * VECTOR_DTYPE.itemsize
        return {h: np.frombuffer(vector, dtype=VECTOR_DTYPE) for h, vector in rows.items() if len(vector) == size}

    def _write(self, rows: dict[str, bytes]) -> None:
        try:
            with Session(self.engine) as session:
                crud.store_embeddings(session=session, encoder=self.encoder_id, rows=rows)
        except SQLAlchemyError:
            # The vectors are computed and used; only the next process will have to compute them again.
            logger.exception("could not store %d embeddings; carrying on with the computed ones", len(rows))


class _ReadAhead:
    """The stored vectors of texts to be embedded in a known order, read a window at a time as the batches reach it."""

    def __init__(self, read: Callable[[list[str]], dict[str, np.ndarray]], texts: Sequence[str]) -> None:
        self.read = read
        self.order = list(dict.fromkeys(text_hash(text) for text in texts))
        self.position = {h: index for index, h in enumerate(self.order)}
        self.start = self.end = 0  # the window read last: order[start:end]
        self.window: dict[str, np.ndarray] = {}

    def take(self, hashes: Sequence[str]) -> tuple[dict[str, np.ndarray], set[str]]:
        """The stored vectors among `hashes`, and those of `hashes` known to have none (read in the window)."""
        known = [h for h in dict.fromkeys(hashes) if h in self.position]
        beyond = [h for h in known if not self.start <= self.position[h] < self.end]
        if beyond:
            self.start = min(self.position[h] for h in beyond)
            self.end = self.start + READ_AHEAD
            self.window = self.read(self.order[self.start : self.end])
        found = {h: self.window[h] for h in known if h in self.window}
        absent = {h for h in known if h not in found and self.start <= self.position[h] < self.end}
        return found, absent


def storing(encoder: SentenceEncoder) -> AbstractContextManager[None]:
    """`encoder.storing()` where the encoder is backed by the database, else nothing."""
    return encoder.storing() if isinstance(encoder, StoredEncoder) else nullcontext()


def reading_ahead(encoder: SentenceEncoder, texts: Sequence[str]) -> AbstractContextManager[None]:
    """`encoder.reading_ahead(texts)` where the encoder is backed by the database, else nothing."""
    return encoder.reading_ahead(texts) if isinstance(encoder, StoredEncoder) else nullcontext()
