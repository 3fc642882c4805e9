"""Benchmark a pod's knowledge start to ready, its search latency and its memory, at several sizes on SQLite and
PostgreSQL; with `--fts`, PostgreSQL's full-text search over the same passages, timed against the in-memory BM25.

For each database and size: bench_knowledge_start.py fills a new store (stand-in vectors), then a new process
starts on it as a pod would (`--second-only`) and is timed from its spawn to the READY line it prints once its
index is built (Python, torch and the encoder loaded, the encoder id hashed, the vectors read, the index built).
PostgreSQL is a private server started here, as the test suite starts its own (tests/utils/postgres.py).

    .venv/bin/python tests/bench/bench_knowledge_pods.py --sizes 10000 100000 --fts [--json var/pods.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.knowledge import split_passages  # noqa: E402
from conversations.db import make_engine  # noqa: E402
from tests.bench.bench_knowledge_start import bench_queries, percentiles, synthetic_articles  # noqa: E402
from tests.utils.postgres import PostgresServer  # noqa: E402

START = ROOT / "tests" / "bench" / "bench_knowledge_start.py"
# Passages a full-text query returns, ranked: as many as a hybrid ranking would rescore.
FTS_LIMIT = 50
# The passages with any of the query's words (plainto_tsquery ANDs them; BM25 scores a passage with any of them).
ANY_WORD = (
    "(SELECT replace(plainto_tsquery('english', :q)::text, ' & ', ' | ')::tsquery AS query) AS q WHERE tsv @@ query"
)


def pod(url: str, passages: int, queries: int, folder: Path) -> dict:
    """Fill a store at `url`, then time a new process's start on it to READY; its results with that time."""
    common = ["--passages", str(passages), "--url", url, "--queries", str(queries)]
    fill = [sys.executable, str(START), *common, "--scratch", "100", "--fill-only", "--json", str(folder / "fill.json")]
    subprocess.run(fill, check=True, stdout=subprocess.DEVNULL)
    started = time.perf_counter()
    command = [sys.executable, str(START), *common, "--second-only", "--json", str(folder / "pod.json")]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    ready_s = None
    for line in child.stdout:
        if line.strip() == "READY":
            ready_s = time.perf_counter() - started
            break
    child.communicate()
    if child.returncode or ready_s is None:
        raise RuntimeError(f"the pod run failed ({child.returncode})")
    results = json.loads((folder / "pod.json").read_text())
    results["pod_start_to_ready_s"] = ready_s
    results["fill"] = json.loads((folder / "fill.json").read_text())
    return results


def full_text_search(url: str, passages: int, queries: int) -> dict:
    """PostgreSQL full-text search (GIN index, words OR-ed as BM25 takes them, ts_rank) over the same passages."""
    engine = make_engine(url)
    texts = [
        f"{p.title}. {p.text}"
        for article in synthetic_articles(passages)
        for p in split_passages(article)  # the passages bench_knowledge_start.py indexes
    ]
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE bench_fts (id serial PRIMARY KEY, body text NOT NULL, "
                "tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED)"
            )
        )
        for start in range(0, len(texts), 1000):
            connection.execute(text("INSERT INTO bench_fts (body) VALUES (:body)"), [
                {"body": body} for body in texts[start : start + 1000]
            ])  # fmt: skip
        connection.execute(text("CREATE INDEX bench_fts_tsv ON bench_fts USING gin (tsv)"))
        connection.execute(text("ANALYZE bench_fts"))
    search = text(
        f"SELECT id, ts_rank(tsv, query) AS rank FROM bench_fts, {ANY_WORD} ORDER BY rank DESC, id LIMIT :limit"
    )
    count = text(f"SELECT count(*) FROM bench_fts, {ANY_WORD}")
    timings, matched = [], []
    with engine.connect() as connection:
        for query in bench_queries(queries)[:10]:
            connection.execute(search, {"q": query, "limit": FTS_LIMIT}).all()
        for query in bench_queries(queries):
            started = time.perf_counter()
            connection.execute(search, {"q": query, "limit": FTS_LIMIT}).all()
            timings.append((time.perf_counter() - started) * 1000)
            matched.append(connection.execute(count, {"q": query}).scalar_one())
    engine.dispose()
    p50, p95 = percentiles(timings)
    return {"fts_ms_p50": p50, "fts_ms_p95": p95, "fts_passages_matched_median": statistics.median(matched)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--fts", action="store_true", help="also time PostgreSQL full-text search")
    parser.add_argument("--fts-queries", type=int, default=50, help="queries for it (a second each at 100,000)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-pods-"))
    server = PostgresServer.start() if "postgresql" in args.databases else None
    rows = []
    try:
        for database in args.databases:
            for size in args.sizes:
                if server is not None and database == "postgresql":
                    url = server.url(server.create_database())
                else:
                    url = f"sqlite:///{folder / f'store-{size}.db'}"
                results = pod(url, size, args.queries, folder)
                if args.fts and database == "postgresql":
                    results.update(full_text_search(url, size, args.fts_queries))
                results["load_average"] = os.getloadavg()
                rows.append(results)
                print(json.dumps(results), flush=True)
    finally:
        if server is not None:
            server.stop()

    print(
        "\n| database | passages | pod start to ready | search p50 / p95 | cached query p50 / p95 "
        "| BM25 p50 / p95 | RSS after start / max |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['database']} | {r['passages']:,} | {r['pod_start_to_ready_s']:.1f} s "
            f"| {r['search_ms_p50']:.1f} / {r['search_ms_p95']:.1f} ms "
            f"| {r['search_without_query_embedding_ms_p50']:.1f} / {r['search_without_query_embedding_ms_p95']:.1f} ms "
            f"| {r['bm25_ms_p50']:.2f} / {r['bm25_ms_p95']:.2f} ms "
            f"| {r['rss_mb_after_second_start']:,.0f} / {r['rss_mb_max']:,.0f} MB |"
        )
    for r in rows:
        if "fts_ms_p95" in r:
            print(
                f"PostgreSQL full-text search, {r['passages']:,} passages: p50 {r['fts_ms_p50']:.1f} ms, "
                f"p95 {r['fts_ms_p95']:.1f} ms ({r['fts_passages_matched_median']:,.0f} passages matched per query, "
                f"median) against BM25 in memory p95 {r['bm25_ms_p95']:.2f} ms"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
