"""Benchmark an app process's knowledge start: building the index from stored embeddings against from scratch.

Makes N synthetic passages by varying the sentences of the demo pack's help articles (other numbers, products and
cities, one title per generated article), then:

1. from scratch: the real encoder embeds every passage and every sentence (what each process did before), timed
   on `--scratch` passages and, unless N is that small, extrapolated linearly to N (the work is per text);
2. fills the stored embeddings for the N passages: with the real encoder (`--real-fill`, slow: the from-scratch
   time) or with a stand-in that writes hash-seeded unit vectors under its own encoder id (reading a row costs the
   same whatever its numbers);
3. second start: a new engine and the wrapped real encoder build the index from the stored rows; the encoder must
   embed nothing. Then search p50 / p95 at that size (each query embedded by the real encoder) and the RSS.

    .venv/bin/python tests/bench/bench_knowledge_start.py --passages 10000 --url sqlite:///var/k10k.db [--json out.json]
    .venv/bin/python tests/bench/bench_knowledge_start.py --passages 10000 --url sqlite:///var/k10k.db --second-only

The second command is a pod starting on a filled store: a process that built no other index, whose RSS is a pod's.
It prints READY on a line of its own once the index is built, so that a parent can time a pod's start to ready
(tests/bench/bench_knowledge_pods.py does, at several sizes on SQLite and PostgreSQL); `--fill-only` only fills.
"""

import argparse
import hashlib
import json
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.domain import default_pack_path, load_pack  # noqa: E402
from bot.knowledge import Article, KnowledgeIndex, SentenceEncoder, tokenize  # noqa: E402
from bot.text import split_sentences  # noqa: E402
from conversations.db import make_engine, upgrade_db  # noqa: E402
from runtime.embeddings import StoredEncoder, encoder_id, reading_ahead, storing  # noqa: E402
from tests.utils.encoders import CountingEncoder  # noqa: E402

PRODUCTS = ["desk lamp", "duvet cover", "kettle", "speaker", "charger", "mug", "smart plug", "rug", "toaster", "pan"]
CITIES = ["Columbus", "Denver", "Leeds", "Lyon", "Toronto", "Porto", "Austin", "Malmo"]


class StandInEncoder(SentenceEncoder):
    """Unit vectors seeded by the text's hash: fills the store in seconds instead of the encoder's minutes."""

    def __init__(self, dim: int) -> None:
        self.dim, self.threads = dim, 1

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            row = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


def source_sentences() -> list[tuple[str, str]]:
    """(article title, sentence) for every sentence of the demo pack's help articles, headings left out."""
    found = []
    for article in load_pack(default_pack_path()).articles:
        body = "\n".join(line for line in article.text.splitlines() if not line.lstrip().startswith("#"))
        found += [(article.title, s) for s in split_sentences(re.sub(r"\s+", " ", body)) if len(s.split()) > 3]
    return found


def vary(sentence: str, rng: random.Random) -> str:
    sentence = re.sub(r"\b\d+\b", lambda _: str(rng.randint(1, 90)), sentence)
    return sentence.replace("order", rng.choice(["order", f"{rng.choice(PRODUCTS)} order"]), 1)


def synthetic_articles(passages: int, seed: int = 0) -> list[Article]:
    """Articles of four sections of two or three varied demo-pack sentences: four passages each."""
    rng = random.Random(seed)
    sentences = source_sentences()
    articles = []
    for number in range(-(-passages // 4)):
        title, _ = rng.choice(sentences)
        same_topic = [s for t, s in sentences if t == title] or [s for _, s in sentences]
        sections = []
        for section in range(1, 5):
            picked = [vary(s, rng) for s in rng.sample(same_topic, min(len(same_topic), rng.choice([2, 3])))]
            sections.append(
                f"## {section}. {rng.choice(PRODUCTS).capitalize()} in {rng.choice(CITIES)}\n\n" + " ".join(picked)
            )
        articles.append(Article(f"generated-{number}", f"{title} ({number})", "\n\n".join(sections)))
    return articles


def bench_queries(count: int) -> list[str]:
    """Distinct customer-like questions, so that none comes from the index's cache of query embeddings."""
    rng = random.Random(2)
    sentences = source_sentences()
    return [
        f"{vary(rng.choice(sentences)[1], rng).rstrip('.')} for my {rng.choice(PRODUCTS)} in {rng.choice(CITIES)}?"
        for _ in range(count)
    ]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def build(articles: list[Article], encoder: SentenceEncoder) -> tuple[KnowledgeIndex, float]:
    """The index as KnowledgeSync.refresh builds it at start."""
    started = time.perf_counter()
    with storing(encoder):
        index = KnowledgeIndex.build(articles, encoder)
        with reading_ahead(encoder, index.sentence_texts()):
            index.embed_sentences()
    return index, time.perf_counter() - started


def fill(
    args: argparse.Namespace,
    articles: list[Article],
    counting: CountingEncoder,
    engine: Engine,
    fill_id: str,
    results: dict,
) -> None:
    """Time a start from scratch on `--scratch` passages, then store the embeddings of `articles`."""
    scratch_articles = synthetic_articles(min(args.scratch, args.passages), seed=1)
    scratch, scratch_s = build(scratch_articles, counting)  # what every process did at start before
    scratch_passages = len(scratch)
    results["scratch"] = {"passages": scratch_passages, "texts_embedded": len(counting.embedded), "build_s": scratch_s}
    del scratch

    filler = StoredEncoder(counting if args.real_fill else StandInEncoder(counting.dim), engine, encoder_id=fill_id)
    counting.embedded.clear()
    index, fill_s = build(articles, filler)
    passages = len(index)
    results["fill"] = {"with": "real encoder" if args.real_fill else "stand-in vectors", "build_s": fill_s}
    results["from_scratch_s"] = fill_s if args.real_fill else scratch_s * passages / scratch_passages
    results["from_scratch_extrapolated"] = not args.real_fill
    del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--scratch", type=int, default=400, help="passages embedded from scratch to time it")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--url", help="database URL (default: a new SQLite file)")
    parser.add_argument("--real-fill", action="store_true", help="fill the store with the real encoder")
    parser.add_argument(
        "--second-only",
        action="store_true",
        help="the store at --url is filled already (by a run with the same --passages): time only the second start, "
        "in a process that built no other index, for its RSS",
    )
    parser.add_argument("--fill-only", action="store_true", help="fill the store and stop, for a --second-only run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    url = args.url or f"sqlite:///{tempfile.mkdtemp(prefix='bench-knowledge-')}/store.db"
    engine = make_engine(url)
    upgrade_db(engine)
    results: dict = {"passages_asked": args.passages, "database": engine.dialect.name}

    started = time.perf_counter()
    counting = CountingEncoder()
    shipped_id = encoder_id()
    results["encoder_load_and_id_s"] = time.perf_counter() - started
    results["rss_mb_encoder_loaded"] = rss_mb()  # the process before any index: Python, torch, the encoder

    articles = synthetic_articles(args.passages)
    fill_id = shipped_id if args.real_fill else "bench-stand-in/float32"
    if not args.second_only:
        fill(args, articles, counting, engine, fill_id, results)
    if args.fill_only:
        write(results, args.json)
        return

    second_engine = make_engine(url)  # a new process: its own engine on the same database
    counting.embedded.clear()
    index, second_s = build(articles, StoredEncoder(counting, second_engine, encoder_id=fill_id))
    assert not counting.embedded, f"the second start embedded {len(counting.embedded)} texts"
    print("READY", flush=True)
    results["passages"] = len(index)
    results["second_start_s"] = second_s
    results["rss_mb_after_second_start"] = rss_mb()

    queries = bench_queries(args.queries)
    for query in queries[:10]:
        index.search(query)
    timings = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k=3)
        timings.append((time.perf_counter() - started) * 1000)
    results["search_ms_p50"], results["search_ms_p95"] = percentiles(timings)
    cached = []  # the same queries again: their embeddings come from the index's cache, so this is the search alone
    for query in queries:
        started = time.perf_counter()
        index.search(query, k=3)
        cached.append((time.perf_counter() - started) * 1000)
    results["search_without_query_embedding_ms_p50"], results["search_without_query_embedding_ms_p95"] = percentiles(
        cached
    )
    lexical = []  # the BM25 half alone (tokenize and score every passage), to weigh against a database's search
    for query in queries:
        started = time.perf_counter()
        tokens = [token for token in tokenize(query) if token in index._idf]
        if tokens and index._bm25 is not None:
            index._bm25.get_scores(tokens)
        lexical.append((time.perf_counter() - started) * 1000)
    results["bm25_ms_p50"], results["bm25_ms_p95"] = percentiles(lexical)
    results["rss_mb_max"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write(results, args.json)


def write(results: dict, path: Path | None) -> None:
    print(json.dumps(results, indent=2))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
