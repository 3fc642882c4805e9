"""Answer selection on a development set, in process: the rules against a trained answer selector.

Answers each question of a question file (by default dev_paraphrase.yaml: customers' own wording, follow-ups with
`before`, one earlier message or a list of them; dev_multiturn.yaml has three-turn ones) the way the app does by
default (answers from the passages, real encoder, real intent classifier) and grades every reply as
bench_grounded.py does (right / safe / wrong / miss).

Usage:
  python tests/bench/bench_selection.py                      # the rules, no selector
  python tests/bench/bench_selection.py --train var/bench-selection/selector   # train one, then answer with it
  python tests/bench/bench_selection.py --selector DIR       # answer with a selector trained before
  --imported: the imported split of grounded_questions.yaml, with tests/bench/imported_help/first beside the pack's
  articles (the selector trained on both).
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_grounded import grade  # noqa: E402
from bench_kernel_sets import BASE_MODEL, trained_classifier  # noqa: E402

HERE = Path(__file__).parent
DEV = HERE / "dev_paraphrase.yaml"
IMPORTED = HERE / "imported_help" / "first"


def build(imported: bool):  # noqa: ANN201 - the bench's own wiring
    from bot.articles import article_files, read_articles
    from bot.domain import default_pack_path, load_pack
    from bot.knowledge import KnowledgeIndex, SentenceEncoder

    pack = load_pack(default_pack_path())
    articles = list(pack.articles)
    if imported:
        articles += [article for _, article in read_articles(article_files([IMPORTED]))]
    return pack, KnowledgeIndex.build(articles, SentenceEncoder())


def train(pack, index, folder: Path) -> dict:  # noqa: ANN001
    from finetune.selection import pack_material, selection_examples, train_selector

    started = time.perf_counter()
    examples = selection_examples(index, pack_material(pack))
    print(f"{len(examples)} questions read in {time.perf_counter() - started:.1f} s", flush=True)
    meta = train_selector(examples, output_dir=folder)
    shown = ("questions", "by_source", "seconds", "held_out", "rules_held_out", "model")
    print(json.dumps({k: meta[k] for k in shown}))
    return meta


def earlier_messages(item: dict) -> list[str]:
    """The customer messages before `q`, oldest first: `before` is one message or a list of them."""
    before = item.get("before") or []
    return [before] if isinstance(before, str) else list(before)


def answer(items: Sequence[dict], pack, index, selector_dir: Path | None) -> list[dict]:  # noqa: ANN001
    from langchain_core.messages import BaseMessage

    from bot.context import ChatTemplateCounter, Turn
    from bot.dialogue import DialogueManager, Swappable, TurnResult
    from bot.intents import load_classifier
    from bot.llm import ChatModel, ReplyDone
    from bot.routing import DialogueState, RoutingConfig, RuleRouter
    from bot.selection import load_selector

    class FixedLine(ChatModel):
        async def stream(self, messages: Sequence[BaseMessage], *, model: str) -> AsyncIterator[str | ReplyDone]:
            yield "Happy to help!"
            yield ReplyDone(model=model, prompt_tokens=None, completion_tokens=3)

    classifier = load_classifier(trained_classifier())
    config = RoutingConfig(confidence_threshold=classifier.threshold, margin=classifier.margin)
    selector = load_selector(selector_dir) if selector_dir else None
    dialogue = DialogueManager(
        pack=pack, llm=FixedLine(), counter=ChatTemplateCounter(BASE_MODEL), models=Swappable("domain"),
        classifier=Swappable(classifier), router=RuleRouter(pack, config), context_tokens=2048, reply_tokens=200,
        summary_model="base", knowledge=Swappable(index), selector=Swappable(selector), answers_from="passages",
    )  # fmt: skip

    async def turn(turns: list[Turn], state: DialogueState) -> TurnResult:
        async for event in dialogue.respond(turns=turns, state=state):
            if isinstance(event, TurnResult):
                return event
        raise RuntimeError("no TurnResult")

    rows = []
    for item in items:
        turns, state = [], DialogueState()
        for earlier in earlier_messages(item):
            turns.append(Turn("customer", earlier))
            first = asyncio.run(turn(turns, state))
            turns.append(Turn("bot", first.text or ""))
            state = first.state
        turns.append(Turn("customer", item["q"]))
        started = time.perf_counter()
        result = asyncio.run(turn(turns, state))
        verdict, why = grade(item, result.text or "")
        rows.append({
            "q": item["q"], "before": item.get("before"), "kind": item.get("kind", "answer"), "reply": result.text,
            "grade": verdict, "why": why, "ms": round((time.perf_counter() - started) * 1000, 1),
            "rank_ms": result.stages_ms.get("rank"), "check": result.check,
        })  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=DEV)
    parser.add_argument("--imported", action="store_true", help="the imported split, with its articles")
    parser.add_argument("--selector", type=Path, help="answer with the selector in this folder")
    parser.add_argument("--train", type=Path, help="train a selector into this folder first, then answer with it")
    parser.add_argument("--out", type=Path, help="write every graded reply here as JSON lines")
    parser.add_argument("--quiet", action="store_true", help="print only the replies that are not right")
    args = parser.parse_args()

    items = yaml.safe_load(args.questions.read_text())
    if args.imported:
        items = [
            i for i in yaml.safe_load((HERE / "grounded_questions.yaml").read_text()) if i.get("split") == "imported"
        ]
        items = [i for i in items if i.get("stage", "first") == "first"]
    elif args.questions.name == "grounded_questions.yaml":
        items = [i for i in items if not i.get("split")]
    pack, index = build(args.imported)
    selector_dir = args.selector
    if args.train:
        train(pack, index, args.train)
        selector_dir = args.train
    rows = answer(items, pack, index, selector_dir)
    for row in rows:
        if not args.quiet or row["grade"] != "right":
            before = "".join(f"[{message}] " for message in earlier_messages(row))
            print(f"[{row['grade']:5}] {before}{row['q']}\n        -> {(row['reply'] or '')[:240]!r} ({row['why']})")
    if args.out:
        args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    counts = Counter(row["grade"] for row in rows)
    kinds = Counter((row["kind"], row["grade"]) for row in rows)
    follow = Counter(row["grade"] for row in rows if row["before"])
    print(
        f"\n{'selector ' + str(selector_dir) if selector_dir else 'rules'}: {len(rows)} questions - right "
        f"{counts['right']} ({100 * counts['right'] / len(rows):.1f} %), safe {counts['safe']}, "
        f"wrong {counts['wrong']}, miss {counts['miss']}"
    )
    print("  by kind: " + ", ".join(f"{kind}/{g}: {n}" for (kind, g), n in sorted(kinds.items())))
    if follow:
        print(f"  follow-ups: right {follow['right']} of {sum(follow.values())}")
    ranks = [row["rank_ms"] for row in rows if row["rank_ms"] is not None]
    if ranks:
        print(f"  select stage: p50 {statistics.median(ranks):.1f} ms, max {max(ranks):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
