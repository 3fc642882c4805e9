"""Issue 33's frozen held-out benchmark (fresh_heldout/): run once at the start and once at the end, never between.

Asks demo_shop.yaml against the app's knowledge base as it is; then, for each other company of the folder (a YAML
file named like the folder of its help articles: faq_company.yaml and faq_company/), retires every live article,
imports the company's articles with `supportbot kb import`, asks its questions, retires them and imports the live
articles again from the domain pack's help folder, so the knowledge base ends as it began.
Grades like bench_grounded.py, plus follow-ups of any number of turns (each reply graded) and `ordered` patterns
(procedures). Usage (the app's own settings in the environment, for `supportbot kb`):
`SUPPORTBOT_DATA_DIR=... SUPPORTBOT_DATABASE_URL=... python tests/bench/bench_fresh.py --url http://127.0.0.1:8000
--out /tmp/fresh-heldout.json [--dir tests/bench/fresh_heldout_2] [--sets demo_shop,faq_company] [--show]
[--regrade EARLIER.json]`; --dir picks the set's folder (fresh_heldout/ by default; fresh_heldout_2/ and
fresh_heldout_3/ are the second and third), --sets some of its sets (all of them by default, the demo shop first).
Without --show, replies and questions are not printed (the questions stay unseen); --out holds everything.
fresh_heldout/BASELINE.md has the start's numbers and the exact commands.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml
from bench_grounded import INVENTS_STATUS, NUMBER, asks_for_secret, invented_number, kb, safe_move

from bot.articles import HTML_SUFFIXES, PDF_SUFFIXES, article_files, read_article, slugify

HERE = Path(__file__).with_name("fresh_heldout")  # the default set's folder; --dir picks another
DEMO = "demo_shop"  # the set asked against the domain pack's articles; every other YAML file of the folder is a
# company whose articles are the folder of the same name (fresh_heldout/faq_company.yaml and faq_company/)
# The app polls the knowledge base's revision every 2 s and re-embeds what changed; a whole company's articles on a
# loaded 2-core CPU take longer than bench_grounded's single articles.
SETTLE_S = 20.0
# The safe move each kind expects (the same table as bench_grounded.grade).
EXPECTED_MOVES = {
    "ask": ("asks for details", "hands off", "not sure"),
    "offtopic": ("scope reply", "not sure"),
    "uncovered": ("not sure", "hands off"),
}
GRADE_ORDER = ("wrong", "miss", "safe", "right")  # an item takes the worst grade of its turns


@dataclass
class Turn:
    """One question of a conversation, its reply and its grade."""

    question: str
    kind: str
    reply: str
    grade: str  # right, safe, wrong or miss
    why: str
    move: str | None  # the safe move the reply makes, if any ("not sure", "hands off", ...)
    in_order: bool | None  # the `ordered` patterns all matched in order; None when the turn has none
    ttft_s: float | None
    latency_s: float


@dataclass
class Item:
    """One conversation of a set: a single question or a follow-up."""

    set: str
    index: int
    kind: str
    follow_up: bool
    grade: str
    turns: list[Turn] = field(default_factory=list)


@dataclass(frozen=True)
class Facts:
    """What a set's help content says: the numbers a reply may state, and its text, markup and line breaks removed."""

    numbers: set[str]
    text: str

    @classmethod
    def of(cls, *paths: Path) -> "Facts":
        text = " ".join(" ".join(readable(path).replace("**", "").split()) for path in paths)
        return cls({number.lstrip("$").rstrip("%") for number in NUMBER.findall(text)}, text)

    def unquoted(self, reply: str) -> str:
        """The reply without the sentences it quotes word for word from the help content."""
        sentences = re.split(r"(?<=[.!?;])\s+", reply)
        return " ".join(s for s in sentences if s.rstrip(".;") not in self.text)


def readable(path: Path) -> str:
    """A file's text; of an HTML or PDF article, the Markdown `supportbot kb import` makes of it."""
    return read_article(path).text if path.suffix.lower() in HTML_SUFFIXES | PDF_SUFFIXES else path.read_text()


def company_slugs(folder: Path) -> list[str]:
    """The articles `supportbot kb import` makes of a company's folder, by their slugs."""
    return [slugify(path.stem) for path in article_files([folder])]


def set_names(folder: Path) -> list[str]:
    """The sets of a folder: its YAML files, the demo shop first."""
    return sorted((path.stem for path in folder.glob("*.yaml")), key=lambda name: (name != DEMO, name))


def out_of_order(patterns: list[str], reply: str) -> str | None:
    """The first of `patterns` that does not match after the previous one's match, or None when all follow in order."""
    at = 0
    for pattern in patterns:
        match = re.compile(pattern, re.IGNORECASE).search(reply, at)
        if match is None:
            return pattern
        at = match.end()
    return None


def grade_turn(turn: dict, reply: str, asked: str, facts: Facts) -> tuple[str, str, str | None, bool | None]:
    """(grade, why, safe move, in order) for one reply; `asked` is every question of the conversation so far.

    bench_grounded.grade's checks, with this set's own facts (its number check is bound to the demo pack's
    articles), `ordered` patterns, and no secret check on a sentence quoted from the help content: the company's
    own help is never a request for a secret, though bench_grounded's pattern reads the FAQ's "the e-mail we send
    you and press Set a new password" as one."""
    kind = turn.get("kind", "answer")
    move = safe_move(reply)
    ordered = turn.get("ordered", [])
    broken = out_of_order(ordered, reply) if ordered else None
    in_order = (broken is None) if ordered else None
    for pattern in turn.get("wrong", []):
        if re.search(pattern, reply, re.IGNORECASE):
            return "wrong", f"matches wrong pattern {pattern!r}", move, in_order
    if asks_for_secret(facts.unquoted(reply)):
        return "wrong", "asks for a secret", move, in_order
    if INVENTS_STATUS.search(reply):
        return "wrong", "states an order status it cannot know", move, in_order
    if (number := invented_number(reply, asked, facts.numbers)) is not None:
        return "wrong", f"invents the number {number}", move, in_order
    if kind == "answer":
        missing = [p for p in turn.get("must", []) if not re.search(p, reply, re.IGNORECASE)]
        if not missing and broken is None:
            return "right", "states the fact" + (" with every step in order" if ordered else ""), move, in_order
        if move:
            return "safe", move, move, in_order
        if missing:
            return "miss", f"does not match {missing[0]!r}", move, in_order
        return "miss", f"not in order from {broken!r}", move, in_order
    if move in EXPECTED_MOVES[kind]:
        return "right", move, move, in_order
    if move:
        return "safe", move, move, in_order
    return "miss", "answers instead of the expected safe move", move, in_order


def open_conversation(http: httpx.Client) -> tuple[str, str]:
    opened = http.post("/api/conversations", json={})
    opened.raise_for_status()
    body = opened.json()
    return body["conversation"]["id"], body["token"]


def send(http: httpx.Client, conversation: str, token: str, text: str) -> tuple[str, float | None, float]:
    """The bot's reply to `text` in the conversation, its time to first token and its latency (waits when told to)."""
    for _ in range(10):
        started = time.perf_counter()
        first: float | None = None
        reply = event = ""
        with http.stream(
            "POST",
            f"/api/conversations/{conversation}/messages",
            json={"text": text},
            headers={"authorization": f"Bearer {token}"},
        ) as response:
            if response.status_code in (429, 503):
                time.sleep(float(response.headers.get("retry-after", "5")))
                continue
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
    raise SystemExit(f"the app kept answering {response.status_code}: raise its rate limits (tests/bench/README.md)")


def ask_item(http: httpx.Client | None, name: str, index: int, item: dict, facts: Facts, saved: dict) -> Item:
    """One conversation: every turn asked in order and graded on its own reply (without `http`, the saved replies)."""
    turns = item.get("turns") or [item]
    conversation, token = open_conversation(http) if http else ("", "")
    graded: list[Turn] = []
    asked = ""
    for number, turn in enumerate(turns):
        asked += " " + turn["q"]
        if http:
            reply, ttft, latency = send(http, conversation, token, turn["q"])
        else:
            old = saved[(name, index)]["turns"][number]
            if old["question"] != turn["q"]:
                raise SystemExit(f"{name} #{index}: the saved replies are to other questions")
            reply, ttft, latency = old["reply"], old["ttft_s"], old["latency_s"]
        verdict, why, move, in_order = grade_turn(turn, reply, asked, facts)
        graded.append(Turn(turn["q"], turn.get("kind", "answer"), reply, verdict, why, move, in_order, ttft, latency))
    grade = min((t.grade for t in graded), key=GRADE_ORDER.index)
    kind = item.get("kind", turns[-1].get("kind", "answer"))
    return Item(name, index, kind, len(turns) > 1, grade, graded)


# --- The knowledge base, through `supportbot kb` ------------------------------------------------------------------


def live_slugs(supportbot: str) -> list[str]:
    """The articles `supportbot kb list` shows as live."""
    env = {**os.environ, "COLUMNS": "400"}  # rich wraps a narrow table, which would split slugs
    done = subprocess.run([supportbot, "kb", "list"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"supportbot kb list failed: {done.stderr or done.stdout}")
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in done.stdout.splitlines() if "│" in line]
    return [row[0] for row in rows if len(row) > 2 and row[2] == "live"]


def pack_help(supportbot: str) -> Path:
    """The domain pack's help folder of the app's installation (the articles a fresh knowledge base holds)."""
    python = Path(supportbot).with_name("python")
    code = "from core.settings import get_settings; print(get_settings().domain_pack)"
    # -P: the app's own packages (PYTHONPATH or its install), never a checkout that happens to be the working folder.
    done = subprocess.run([str(python), "-P", "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot read the app's domain pack setting: {done.stderr}")
    return Path(done.stdout.strip()) / "help"


def swap_to_faq(supportbot: str, faq_dir: Path, help_dir: Path, settle_s: float) -> list[str]:
    """Retire every live article and import the FAQ company's (`faq_dir`); returns the articles to bring back."""
    live = live_slugs(supportbot)
    faq = sorted(company_slugs(faq_dir))
    if clash := sorted(set(faq) & set(live)):
        raise SystemExit(f"live articles have the FAQ company's names ({', '.join(clash)}); use a fresh data dir")
    if missing := [slug for slug in live if not (help_dir / f"{slug}.md").is_file()]:
        raise SystemExit(
            f"cannot restore {', '.join(missing)} afterwards: not in {help_dir}; run on a fresh data dir, whose "
            "knowledge base holds the domain pack's articles"
        )
    print(f"retiring the {len(live)} live articles, importing {len(faq)} FAQ articles", flush=True)
    for slug in live:
        kb(supportbot, "retire", slug)
    kb(supportbot, "import", str(faq_dir))
    time.sleep(settle_s)
    return live


def restore(supportbot: str, faq_dir: Path, live: list[str], help_dir: Path, settle_s: float) -> None:
    """Retire the FAQ company's articles and bring back the ones that were live (same text: restored)."""
    for slug in sorted(company_slugs(faq_dir)):
        kb(supportbot, "retire", slug)
    if live:
        kb(supportbot, "import", *(str(help_dir / f"{slug}.md") for slug in live))
    now = live_slugs(supportbot)
    if sorted(now) != sorted(live):
        print(f"WARNING: live articles were {sorted(live)}, now {sorted(now)}", file=sys.stderr)
    time.sleep(settle_s)


# --- Report -------------------------------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def summary(name: str, items: list[Item]) -> list[str]:
    """The counts of one set, as printed lines (no question text)."""
    counts = Counter(item.grade for item in items)
    turns = [turn for item in items for turn in item.turns]
    n = len(items)
    lines = [
        f"{name}: {n} conversations ({sum(item.follow_up for item in items)} follow-ups), {len(turns)} replies",
        f"  right {counts['right']} ({100 * counts['right'] / n:.1f} %), safe {counts['safe']}, "
        f"wrong {counts['wrong']}, miss {counts['miss']}",
    ]
    by_kind = Counter((item.kind, item.grade) for item in items)
    lines.append("  by kind: " + ", ".join(f"{kind}/{grade}: {k}" for (kind, grade), k in sorted(by_kind.items())))
    not_sure = [turn for turn in turns if turn.move == "not sure"]
    answerable = [turn for turn in not_sure if turn.kind == "answer"]
    lines.append(f'  "not sure" replies: {len(not_sure)} ({len(answerable)} where the content answers)')
    procedures = [turn for turn in turns if turn.in_order is not None]
    if procedures:
        whole = sum(turn.in_order for turn in procedures)
        lines.append(f"  procedures and lead-ins complete and in order: {whole} of {len(procedures)}")
    follow_ups = [item for item in items if item.follow_up]
    if follow_ups:
        second = sum(item.turns[-1].grade == "right" for item in follow_ups)
        both = sum(item.grade == "right" for item in follow_ups)
        lines.append(f"  follow-ups right: {both} of {len(follow_ups)} (second reply right: {second})")
    if longer := [item for item in items if len(item.turns) > 2]:
        last = sum(item.turns[-1].grade == "right" for item in longer)
        every = sum(item.grade == "right" for item in longer)
        lines.append(f"  three turns or more: {len(longer)}, every reply right {every}, last reply right {last}")
    ttfts = [turn.ttft_s for turn in turns if turn.ttft_s is not None]
    if ttfts:
        lines.append(
            f"  time to first token (one conversation at a time): p50 {statistics.median(ttfts):.2f} s, "
            f"p95 {p95(ttfts):.2f} s; reply latency p50 {statistics.median(t.latency_s for t in turns):.2f} s, "
            f"p95 {p95([t.latency_s for t in turns]):.2f} s"
        )
    return lines


def cpu() -> str:
    """This machine's processor and core count, for the report (the benchmark's timings depend on them)."""
    info = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", info.read_text(), re.MULTILINE) if info.exists() else []
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--dir", type=Path, default=HERE, help="the set's folder (default: fresh_heldout/)")
    parser.add_argument("--sets", help="comma-separated YAML files of the folder, by name (default: all of them)")
    parser.add_argument(
        "--supportbot", default=str(Path(sys.executable).with_name("supportbot")),
        help="the command that retires and imports articles, run with the app's settings",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="JSON file of every reply and grade (outside the repo)")
    parser.add_argument("--settle-s", type=float, default=SETTLE_S, help="wait after a knowledge-base change")
    parser.add_argument("--show", action="store_true", help="print each question and reply (they stay unseen without)")
    parser.add_argument("--regrade", type=Path, help="grade the replies an earlier --out saved again, asking nothing")
    args = parser.parse_args()
    known = set_names(args.dir)
    names = [name.strip() for name in args.sets.split(",") if name.strip()] if args.sets else known
    if unknown := set(names) - set(known):
        parser.error(f"unknown sets: {', '.join(sorted(unknown))} (the folder has {', '.join(known)})")
    if missing := [name for name in names if name != DEMO and not (args.dir / name).is_dir()]:
        parser.error(f"no folder of help articles for {', '.join(missing)} in {args.dir}")

    started = time.perf_counter()
    report: dict = {"url": args.url, "dir": str(args.dir), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu()}
    results: list[Item] = []
    saved: dict = {}
    if args.regrade:
        earlier = json.loads(args.regrade.read_text())
        saved = {(row["set"], row["index"]): row for row in earlier["results"]}
        report |= {key: earlier[key] for key in ("url", "started", "cpu", "help", "wall_s") if key in earlier}
        report["regraded"] = str(args.regrade)
    help_dir = Path(report["help"]) if "help" in report else pack_help(args.supportbot)
    report["help"] = str(help_dir)
    with httpx.Client(base_url=args.url, timeout=300) as client:
        http = None if args.regrade else client
        for name in names:
            items = yaml.safe_load((args.dir / f"{name}.yaml").read_text())
            swapped = None
            faq_dir = args.dir / name
            if name != DEMO:
                if http:
                    swapped = swap_to_faq(args.supportbot, faq_dir, help_dir, args.settle_s)
                facts = Facts.of(*article_files([faq_dir]), help_dir.parent / "pack.yaml")
            else:
                facts = Facts.of(*sorted(help_dir.glob("*.md")), help_dir.parent / "pack.yaml")
            try:
                for index, item in enumerate(items, 1):
                    graded = ask_item(http, name, index, item, facts, saved)
                    results.append(graded)
                    print(f"[{graded.grade:5}] {name} #{index} ({graded.kind})", flush=True)
                    if args.show:
                        for turn in graded.turns:
                            print(f"    {turn.question}\n    -> {turn.reply[:400]!r} ({turn.grade}: {turn.why})")
                    report["results"] = [asdict(result) for result in results]
                    args.out.write_text(json.dumps(report, indent=1))  # as it goes: a stopped run keeps its replies
            finally:
                if swapped is not None:
                    restore(args.supportbot, faq_dir, swapped, help_dir, args.settle_s)
    if not args.regrade:
        report["wall_s"] = round(time.perf_counter() - started, 1)
    lines = [line for name in names for line in summary(name, [r for r in results if r.set == name])]
    lines.append(f"wall time {report['wall_s'] / 60:.1f} min")
    report["summary"] = lines
    args.out.write_text(json.dumps(report, indent=1))
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
