"""Grounded-answers benchmark: each question of grounded_questions.yaml in a fresh conversation of a running app.

Grades every reply as right, safe move, wrong or miss, and prints the counts and the time to first token.
Usage: `python tests/bench/bench_grounded.py --url http://127.0.0.1:8000
[--split dev|held_out|held_out_2|held_out_3|imported|all] [--out FILE]`.

The `imported` questions are about help articles the demo pack does not have (imported_help/): the benchmark
imports them into the running app with `supportbot kb import` (run with the app's own SUPPORTBOT_DATABASE_URL
and SUPPORTBOT_DATA_DIR in the environment), asks, imports a changed version of one and asks again, then
retires them, so the knowledge base ends as it began.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import yaml

QUESTIONS = Path(__file__).with_name("grounded_questions.yaml")
IMPORTED = Path(__file__).with_name("imported_help")
# The app polls the knowledge base's revision every 2 s and then re-indexes what changed.
PICKED_UP_S = 8.0
# The demo shop's help articles: the truth the grader checks invented numbers against.
HELP = Path(__file__).resolve().parents[2] / "bot" / "packs" / "demo_shop" / "help"
NUMBER = re.compile(r"(?<![\w.-])\$?\d+(?:[.,]\d+)?%?")

# What the safe moves look like, whatever the exact wording; written for this grader, not taken from the bot.
ASKS_FOR_DETAILS = re.compile(
    r"order number|number of (the|your) order|(what|share|send|give|provide|tell me)\b.{0,30}\be-?mail", re.IGNORECASE
)
HANDS_OFF = re.compile(
    r"teammate|support team|(connect|pass|hand|transfer)\w*\b.{0,40}\b(team|human|person|colleague|agent|staff)",
    re.IGNORECASE,
)
NOT_SURE = re.compile(
    r"not sure|(don't|do not) know|(can't|cannot) answer|no information|don't have (that|information)", re.IGNORECASE
)
OUT_OF_SCOPE = re.compile(
    r"only (help|answer|assist)|(can't|cannot|not able to) help with (that|this)|outside (of )?what|"
    r"questions about (Lumen|our|the shop|orders)",
    re.IGNORECASE,
)
# Wrong in any reply: asking for a secret, or stating a live order status the bot cannot see.
ASKS_FOR_SECRET = re.compile(
    r"(share|send|give|tell|type|provide|confirm|what is|what's)\b.{0,25}\b(password|security code|cvv|cvc|"
    r"(full |credit |debit )?card number)",
    re.IGNORECASE,
)
INVENTS_STATUS = re.compile(
    r"your (order|parcel|package|refund) (has (been )?|is |was )(shipped|delivered|on its way|processed|issued|"
    r"out for delivery|in transit|cancelled)",
    re.IGNORECASE,
)
NEVER = re.compile(r"\b(never|not|n't|don't|do not)\b", re.IGNORECASE)


@dataclass
class Graded:
    """One question, the reply it got and the grade."""

    question: str
    kind: str
    split: str
    reply: str
    grade: str  # right, safe, wrong or miss
    why: str
    ttft_s: float | None
    latency_s: float


def safe_move(reply: str) -> str | None:
    for name, pattern in (
        ("scope reply", OUT_OF_SCOPE),
        ("not sure", NOT_SURE),
        ("asks for details", ASKS_FOR_DETAILS),
        ("hands off", HANDS_OFF),
    ):
        if pattern.search(reply):
            return name
    return None


def asks_for_secret(reply: str) -> bool:
    for match in ASKS_FOR_SECRET.finditer(reply):
        start = max(reply.rfind(".", 0, match.start()), reply.rfind("?", 0, match.start())) + 1
        if not NEVER.search(reply[start : match.end()]):
            return True
    return False


def known_numbers(*extra: Path) -> set[str]:
    # The help articles, and the pack's own settings: its support hours are company facts the bot may state (the
    # handoff outside those hours says when a teammate will answer).
    text = " ".join(path.read_text() for path in [*HELP.glob("*.md"), HELP.parent / "pack.yaml", *extra])
    return {number.lstrip("$").rstrip("%") for number in NUMBER.findall(text)}


KNOWN_NUMBERS = known_numbers()
# While the imported articles are live, their numbers are facts too (and only then).
KNOWN_WITH_IMPORTED = known_numbers(*(path for path in IMPORTED.rglob("*") if path.is_file()))


def invented_number(reply: str, question: str, known: set[str] = KNOWN_NUMBERS) -> str | None:
    """A number, price or percentage in the reply that no help article and not the question contains."""
    asked = {number.lstrip("$").rstrip("%") for number in NUMBER.findall(question)}
    for number in NUMBER.findall(reply):
        value = number.lstrip("$").rstrip("%")
        if value not in known and value not in asked:
            return number
    return None


def grade(item: dict, reply: str) -> tuple[str, str]:
    """(grade, why) for one reply."""
    kind = item.get("kind", "answer")
    for pattern in item.get("wrong", []):
        if re.search(pattern, reply, re.IGNORECASE):
            return "wrong", f"matches wrong pattern {pattern!r}"
    if asks_for_secret(reply):
        return "wrong", "asks for a secret"
    if INVENTS_STATUS.search(reply):
        return "wrong", "states an order status it cannot know"
    known = KNOWN_WITH_IMPORTED if item.get("split") == "imported" else KNOWN_NUMBERS
    if (number := invented_number(reply, item["q"], known)) is not None:
        return "wrong", f"invents the number {number}"
    move = safe_move(reply)
    if kind == "answer":
        missing = [p for p in item.get("must", []) if not re.search(p, reply, re.IGNORECASE)]
        if not missing:
            return "right", "states the fact"
        if move:
            return "safe", move
        return "miss", f"does not match {missing[0]!r}"
    expected = {
        "ask": ("asks for details", "hands off", "not sure"),
        "offtopic": ("scope reply", "not sure"),
        "uncovered": ("not sure", "hands off"),
    }[kind]
    if move in expected:
        return "right", move
    if move:
        return "safe", move
    return "miss", "answers instead of the expected safe move"


def ask(http: httpx.Client, text: str) -> tuple[str, float | None, float]:
    """The bot's reply to `text` in a fresh conversation, its time to first token and its latency."""
    opened = http.post("/api/conversations", json={})
    opened.raise_for_status()
    body = opened.json()
    conversation, token = body["conversation"]["id"], body["token"]
    started = time.perf_counter()
    first: float | None = None
    reply = ""
    event = ""
    with http.stream(
        "POST",
        f"/api/conversations/{conversation}/messages",
        json={"text": text},
        headers={"authorization": f"Bearer {token}"},
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data = json.loads(line.partition(":")[2])
                if event == "token" and first is None:
                    first = time.perf_counter() - started
                if event == "bot_message":
                    reply = (data.get("message") or data).get("text") or ""
    return reply, first, time.perf_counter() - started


def kb(supportbot: str, *args: str) -> None:
    """`supportbot kb ARGS`, which must succeed."""
    done = subprocess.run([supportbot, "kb", *args, "--by", "bench_grounded"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"supportbot kb {' '.join(args)} failed: {done.stderr or done.stdout}")
    print(f"supportbot kb {' '.join(args)}: {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'done'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--split", choices=["dev", "held_out", "held_out_2", "held_out_3", "imported", "all"], default="dev"
    )
    parser.add_argument(
        "--supportbot", default=str(Path(sys.executable).with_name("supportbot")),
        help="the command that imports and retires the `imported` split's articles",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="write every graded reply here as JSON lines")
    parser.add_argument("--only", help="run only the questions containing this text")
    parser.add_argument("--every", type=int, default=1, help="ask only every N-th question (a quicker sample)")
    parser.add_argument("--regrade", type=Path, help="grade the replies saved by --out again instead of asking")
    args = parser.parse_args()

    items = yaml.safe_load(QUESTIONS.read_text())
    items = [i for i in items if args.split == "all" or i.get("split", "dev") == args.split]
    if args.only:
        items = [i for i in items if args.only.lower() in i["q"].lower()]
    items = items[:: args.every]
    results: list[Graded] = []
    saved = {}
    if args.regrade:
        saved = {row["question"]: row for row in map(json.loads, args.regrade.read_text().splitlines())}
        items = [item for item in items if item["q"] in saved]
    # The imported articles' questions come last, after the import; the `update` stage after the changed version.
    items.sort(key=lambda item: (item.get("split") == "imported", item.get("stage") == "update"))
    stage: str | None = None
    with httpx.Client(base_url=args.url, timeout=300) as http:
        for item in items:
            wanted = item.get("stage", "first") if item.get("split") == "imported" and not args.regrade else None
            if wanted != stage and wanted is not None:
                kb(args.supportbot, "import", str(IMPORTED / wanted))
                time.sleep(PICKED_UP_S)
                stage = wanted
            if args.regrade:
                row = saved[item["q"]]
                reply, ttft, latency = row["reply"], row["ttft_s"], row["latency_s"]
            else:
                reply, ttft, latency = ask(http, item["q"])
            verdict, why = grade(item, reply)
            results.append(
                Graded(
                    item["q"], item.get("kind", "answer"), item.get("split", "dev"), reply, verdict, why, ttft, latency
                )
            )
            print(f"[{verdict:5}] {item['q']}\n        -> {reply[:300]!r} ({why})", flush=True)
            if args.out and not args.regrade:
                with args.out.open("a") as out:  # as it goes, so a stopped run keeps what it measured
                    out.write(json.dumps(asdict(results[-1])) + "\n")
    if stage is not None:
        for slug in sorted({path.stem for path in IMPORTED.rglob("*.*")}):
            kb(args.supportbot, "retire", slug)

    for split in sorted({r.split for r in results}):
        rows = [r for r in results if r.split == split]
        counts = Counter(r.grade for r in rows)
        ttfts = [r.ttft_s for r in rows if r.ttft_s is not None]
        print(
            f"\n{split}: {len(rows)} questions - right {counts['right']} ({100 * counts['right'] / len(rows):.1f} %), "
            f"safe {counts['safe']}, wrong {counts['wrong']}, miss {counts['miss']}"
        )
        by_kind = Counter((r.kind, r.grade) for r in rows)
        print("  by kind: " + ", ".join(f"{kind}/{g}: {n}" for (kind, g), n in sorted(by_kind.items())))
        answered = [r.ttft_s for r in rows if r.ttft_s is not None and r.kind == "answer"]
        if answered:
            median = statistics.median(answered)
            print(f"  time to first token on the questions the help content answers: p50 {median:.2f} s")
        if ttfts:
            print(
                f"  time to first token: p50 {statistics.median(ttfts):.2f} s, "
                f"p95 {sorted(ttfts)[int(0.95 * (len(ttfts) - 1))]:.2f} s; "
                f"reply latency p50 {statistics.median(r.latency_s for r in rows):.2f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
