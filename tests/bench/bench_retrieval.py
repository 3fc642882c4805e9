"""Benchmark knowledge-base retrieval: how often the right passage is found, and how fast, at 10,000 passages.

1. The hybrid weight and relevance threshold, measured on the demo pack's intent examples (each names
   the help articles it is about; the out_of_scope intent's examples should find nothing relevant).
2. recall@1 and @3 on the grounded-answers question set (tests/bench/grounded_questions.yaml): a passage
   is right when it matches one of the question's `must` patterns, which a right reply has to state.
3. Search latency (p50, p95) over 10,000 passages of generated help text, with the demo pack's
   articles among them, and the time to build the index and to re-index after one edited article.

Run from the repository root (about two minutes on the 2-core development machine):

    .venv/bin/python tests/bench/bench_retrieval.py --json var/bench-retrieval.json
"""

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot import knowledge  # noqa: E402
from bot.articles import read_articles  # noqa: E402
from bot.domain import default_pack_path, load_pack  # noqa: E402
from bot.knowledge import Article, KnowledgeIndex, SentenceEncoder, split_passages  # noqa: E402

QUESTIONS = ROOT / "tests" / "bench" / "grounded_questions.yaml"
# Articles the grounded benchmark imports into a running app (its `imported` questions); `update` replaces some.
IMPORTED = ROOT / "tests" / "bench" / "imported_help"
TARGETS = {"recall_at_3": 0.95, "latency_ms_p50_10k": 10.0}
WEIGHTS = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]


def sweep(index: KnowledgeIndex) -> dict:
    """Article recall and relevance margins on the pack's own intent examples, for each dense weight."""
    pack = load_pack(default_pack_path())
    in_scope = [(text, set(intent.policies)) for intent in pack.intents if intent.policies for text in intent.examples]
    off_topic = [text for intent in pack.intents if intent.name == "out_of_scope" for text in intent.examples]
    slugs = np.array([passage.article_slug for passage in index.passages])
    scored_in = [(index._scores(text), wanted) for text, wanted in in_scope]
    scored_off = [index._scores(text) for text in off_topic]
    rows = {}
    for weight in WEIGHTS:
        top1 = top3 = 0
        best_in = []
        for (dense, lexical), wanted in scored_in:
            hybrid = weight * dense + (1 - weight) * lexical
            order = np.argsort(-hybrid)[:3]
            top1 += slugs[order[0]] in wanted
            top3 += any(slug in wanted for slug in slugs[order])
            best_in.append(float(hybrid[order[0]]))
        best_off = [float((weight * dense + (1 - weight) * lexical).max()) for dense, lexical in scored_off]
        threshold = knowledge.RELEVANCE_THRESHOLD
        rows[weight] = {
            "article_recall_at_1": top1 / len(in_scope),
            "article_recall_at_3": top3 / len(in_scope),
            "in_scope_above_threshold": sum(score >= threshold for score in best_in) / len(best_in),
            "off_topic_above_threshold": sum(score >= threshold for score in best_off),
            "off_topic_max": max(best_off),
        }
    return {"in_scope_examples": len(in_scope), "off_topic_examples": len(off_topic), "by_dense_weight": rows}


def with_imported(index: KnowledgeIndex) -> dict[str, KnowledgeIndex]:
    """The index the `imported` questions are asked against, at each stage: their articles added to the pack's."""
    stages: dict[str, KnowledgeIndex] = {}
    articles = {article.slug: article for article in index.articles}
    for stage in ("first", "update"):
        articles.update({article.slug: article for _, article in read_articles([IMPORTED / stage])})
        stages[stage] = index.updated(articles.values())
    return stages


def question_recall(index: KnowledgeIndex) -> dict:
    """recall@k of a passage holding the fact a right answer states, on the checker's question set."""
    questions = yaml.safe_load(QUESTIONS.read_text(encoding="utf-8"))
    imported = with_imported(index)
    found = {1: 0, 3: 0}
    counted, misses, relevant = 0, [], 0
    off_topic = off_topic_relevant = 0
    for question in questions:
        kind = question.get("kind", "answer")
        asked = imported[question.get("stage", "first")] if question.get("split") == "imported" else index
        hits = asked.search(question["q"], k=3)
        if kind == "offtopic":
            off_topic += 1
            off_topic_relevant += any(hit.relevant for hit in hits)
            continue
        patterns = [re.compile(pattern, re.IGNORECASE) for pattern in question.get("must", [])]
        if kind != "answer" or not patterns:
            continue
        right = [any(p.search(hit.passage.text) for p in patterns) for hit in hits]
        counted += 1
        found[1] += right[0]
        found[3] += any(right)
        relevant += hits[0].relevant
        if not any(right):
            misses.append(question["q"])
    return {
        "questions": counted,
        "recall_at_1": found[1] / counted,
        "recall_at_3": found[3] / counted,
        "top_hit_relevant": relevant / counted,
        "misses_at_3": misses,
        "off_topic_questions": off_topic,
        "off_topic_with_a_relevant_hit": off_topic_relevant,
    }


# --- 10,000 passages of generated help text ------------------------------------------------------

TOPICS = [
    "delivery", "returns", "warranty", "payment", "account", "gift cards", "assembly", "care", "sizes",
    "subscriptions", "loyalty points", "repairs", "recycling", "installation", "rentals", "student discount",
]  # fmt: skip
THINGS = [
    "desk lamp", "duvet cover", "kettle", "speaker", "charger", "throw blanket", "mug", "smart plug", "pillow",
    "curtain", "rug", "toaster", "floor lamp", "towel", "frying pan", "headphones",
]  # fmt: skip
TEMPLATES = [
    "The {thing} comes with {n} {unit} of {topic} support from the date of delivery.",
    "You can ask for {topic} on a {thing} within {n} {unit} by writing to {mail}.",
    "{Topic} for the {thing} costs ${price} and takes {n} to {m} business days.",
    "We do not offer {topic} for a {thing} bought on sale, and we cannot make exceptions.",
    "To arrange {topic}, open Account > Orders, choose the {thing} and follow the steps shown there.",
    "Every {thing} is checked before it leaves the warehouse in {city}, which handles all {topic} requests.",
    "A {thing} that needs {topic} after {n} {unit} is handled by our partner in {city}.",
    "If the {thing} was a gift, the person who received it can also request {topic}.",
]
CITIES = ["Columbus", "Denver", "Leeds", "Lyon", "Toronto", "Porto", "Austin", "Malmo"]


def synthetic_articles(count: int, seed: int = 0) -> list[Article]:
    """`count` articles of four sections of two or three sentences each: four passages per article."""
    rng = random.Random(seed)
    articles = []
    for number in range(count):
        topic, thing = rng.choice(TOPICS), rng.choice(THINGS)
        paragraphs = []
        for section in range(1, 5):
            sentences = []
            for template in rng.sample(TEMPLATES, rng.choice([2, 3])):
                n = rng.randint(1, 30)
                sentences.append(
                    template.format(
                        thing=rng.choice([thing, rng.choice(THINGS)]),
                        topic=topic,
                        Topic=topic.capitalize(),
                        n=n,
                        m=n + rng.randint(1, 9),
                        unit=rng.choice(["days", "weeks", "months"]),
                        price=f"{rng.randint(2, 99)}.{rng.randint(0, 99):02d}",
                        city=rng.choice(CITIES),
                        mail=f"{topic.split()[0]}@shop{number % 50}.example.com",
                    )  # fmt: skip
                )
            paragraphs.append(f"## {section}. {rng.choice(THINGS).capitalize()} {topic}\n\n" + " ".join(sentences))
        title = f"{topic.capitalize()} for the {thing} ({number})"
        articles.append(Article(f"generated-{number}", title, "\n\n".join(paragraphs)))
    return articles


class CachedEncoder:
    """The real encoder for queries; passage embeddings are kept in a file between runs, so the search
    latency can be measured again in seconds when the machine is quiet (embedding 10,000 passages takes
    minutes). The file is keyed by the passage text, so a changed generator re-embeds what changed."""

    def __init__(self, encoder: SentenceEncoder, path: Path | None) -> None:
        self.encoder, self.path, self.dim = encoder, path, encoder.dim
        self.vectors: dict[str, np.ndarray] = {}
        self.queries: dict[str, np.ndarray] = {}  # set to time a search without its query embedding
        if path is not None and path.exists():
            with np.load(path) as stored:
                self.vectors = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            known = self.queries.get(texts[0])
            return known[None, :] if known is not None else self.encoder.embed(texts)
        missing = [text for text in dict.fromkeys(texts) if text not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.encoder.embed(missing), strict=True))
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(self.path, texts=np.array(list(self.vectors)), vectors=np.stack(list(self.vectors.values())))
        return np.stack([self.vectors[text] for text in texts])


def latency(encoder: SentenceEncoder, passages: int, queries: list[str], cache: Path | None) -> dict:
    pack_articles = load_pack(default_pack_path()).articles
    pack_passages = sum(len(split_passages(article)) for article in pack_articles)
    generated = synthetic_articles(-(-(passages - pack_passages) // 4))
    cached = CachedEncoder(encoder, cache)
    fresh = cache is None or not cache.exists()
    started = time.perf_counter()
    index = KnowledgeIndex.build([*pack_articles, *generated], cached)  # type: ignore[arg-type]
    build_s = time.perf_counter() - started
    for query in queries[:10]:  # warm-up
        index.search(query)
    timings = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k=3)
        timings.append((time.perf_counter() - started) * 1000)
    embed_ms = []
    for query in queries[:200]:
        started = time.perf_counter()
        encoder.embed([query])
        embed_ms.append((time.perf_counter() - started) * 1000)
    cached.queries = {query: encoder.embed([query])[0] for query in set(queries)}
    without_embedding = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k=3)
        without_embedding.append((time.perf_counter() - started) * 1000)
    cached.queries = {}
    edited = [*pack_articles, *generated]
    edited[0] = Article(edited[0].slug, edited[0].title, edited[0].text.replace("30", "45"), 2)
    started = time.perf_counter()
    index.updated(edited)
    update_s = time.perf_counter() - started
    timings.sort()
    return {
        "passages": len(index),
        "build_s": build_s,
        "build_embedded_every_passage": fresh,
        "reindex_after_one_edit_s": update_s,
        "search_ms_p50": statistics.median(timings),
        "search_ms_p95": timings[int(0.95 * (len(timings) - 1))],
        "query_embedding_ms_p50": statistics.median(embed_ms),
        "search_without_query_embedding_ms_p50": statistics.median(without_embedding),
        "vectors_mb": index._vectors.nbytes / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "var" / "bench-retrieval-vectors.npz",
        help="keep the generated passages' embeddings here between runs ('' to embed them every time)",
    )  # fmt: skip
    args = parser.parse_args()

    encoder = SentenceEncoder()
    demo = KnowledgeIndex.build(load_pack(default_pack_path()).articles, encoder)
    results: dict = {"dense_weight": knowledge.DENSE_WEIGHT, "relevance_threshold": knowledge.RELEVANCE_THRESHOLD}
    results["pack_examples"] = sweep(demo)
    results["question_set"] = question_recall(demo)
    questions = [q["q"] for q in yaml.safe_load(QUESTIONS.read_text(encoding="utf-8"))]
    cache = args.cache if str(args.cache) else None
    results["at_scale"] = latency(encoder, args.passages, (questions * 5)[:500], cache)
    results["load_average_1min"] = os.getloadavg()[0]  # other work on the machine slows every number here

    print(f"dense weight {knowledge.DENSE_WEIGHT}, relevance threshold {knowledge.RELEVANCE_THRESHOLD}")
    sweep_rows = results["pack_examples"]
    print(f"pack intent examples: {sweep_rows['in_scope_examples']} in scope, {sweep_rows['off_topic_examples']} off")
    for weight, row in sweep_rows["by_dense_weight"].items():
        print(
            f"  weight {weight:.1f}: article recall@1 {row['article_recall_at_1']:.1%}"
            f" @3 {row['article_recall_at_3']:.1%}"
            f", in scope above threshold {row['in_scope_above_threshold']:.1%}"
            f", off-topic above {row['off_topic_above_threshold']} (max {row['off_topic_max']:.3f})"
        )
    q = results["question_set"]
    print(
        f"question set: {q['questions']} answerable questions, passage recall@1 {q['recall_at_1']:.1%}, "
        f"recall@3 {q['recall_at_3']:.1%} (target {TARGETS['recall_at_3']:.0%}), top hit relevant "
        f"{q['top_hit_relevant']:.1%}; off-topic with a relevant hit {q['off_topic_with_a_relevant_hit']}"
        f"/{q['off_topic_questions']}; misses: {q['misses_at_3']}"
    )
    s = results["at_scale"]
    print(
        f"{s['passages']} passages: search p50 {s['search_ms_p50']:.2f} ms"
        f" (target {TARGETS['latency_ms_p50_10k']:.0f}), p95 {s['search_ms_p95']:.2f} ms,"
        f" of which embedding the query p50 {s['query_embedding_ms_p50']:.2f} ms"
        f" (search alone p50 {s['search_without_query_embedding_ms_p50']:.2f} ms);"
        f" vectors {s['vectors_mb']:.1f} MB; build {s['build_s']:.1f} s"
        f"{'' if s['build_embedded_every_passage'] else ' (embeddings from the cache)'}, "
        f"re-index after one edit {s['reindex_after_one_edit_s']:.2f} s;"
        f" load average {results['load_average_1min']:.1f}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
