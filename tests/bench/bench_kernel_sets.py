"""The answer path under several CPU kernel sets on one machine: the same questions must get the same replies.

Each kernel set is a child process whose environment makes PyTorch, oneDNN and MKL pick the kernels of an older
or other CPU (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`, `MKL_ENABLE_INSTRUCTIONS`) or another int8 engine. Each
child answers the development questions of grounded_questions.yaml (those without a split) with the real encoder,
the real intent classifier and the demo pack, the way the app does by default (answers from the passages), and
the parent lists every question whose reply, route or passages differ from the first kernel set's.

Usage: `python tests/bench/bench_kernel_sets.py [--classifier DIR] [--limit N] [--out FILE]`. Without
`--classifier` a classifier is trained once on the pack's examples (about a minute) and kept under var/.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = Path(__file__).with_name("grounded_questions.yaml")
CLASSIFIER_CACHE = ROOT / "var" / "bench-kernel-sets" / "classifier"
BASE_MODEL = ROOT / "var" / "test-data" / "models" / "smollm2-135m-instruct"

# Kernel sets one machine can emulate. The first is the machine's own and the reference.
KERNEL_SETS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "no-simd": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    # int8 products through oneDNN instead of FBGEMM: what another CPU's int8 kernels do to the same weights.
    "onednn-int8": {"SUPPORTBOT_BENCH_QUANTIZED_ENGINE": "onednn"},
}


def development_questions(limit: int | None = None) -> list[str]:
    items = yaml.safe_load(QUESTIONS.read_text())
    questions = [item["q"] for item in items if not item.get("split")]
    return questions[:limit] if limit else questions


def trained_classifier(folder: Path = CLASSIFIER_CACHE) -> Path:
    """The demo pack's intent classifier, trained with the product's recipe once and reused."""
    from bot.domain import default_pack_path, load_pack
    from finetune.intents import ClassifierRecipe, examples_from_pack, train_intent_classifier

    if not (folder / "classifier.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        examples = examples_from_pack(load_pack(default_pack_path()))
        train_intent_classifier(examples, output_dir=folder, recipe=ClassifierRecipe())
    return folder


def answer_all(questions: Sequence[str], classifier_dir: Path, base_model: Path) -> list[dict]:
    """Every question in a fresh conversation, as the app's default dialogue answers it (no model server: small
    talk gets a fixed line, which is all the comparison needs)."""
    engine = os.environ.get("SUPPORTBOT_BENCH_QUANTIZED_ENGINE")
    if engine:
        import torch

        torch.backends.quantized.engine = engine
    from langchain_core.messages import BaseMessage

    from bot.context import ChatTemplateCounter, Turn
    from bot.dialogue import DialogueManager, Swappable, TurnResult
    from bot.domain import default_pack_path, load_pack
    from bot.intents import load_classifier
    from bot.knowledge import KnowledgeIndex, SentenceEncoder
    from bot.llm import ChatModel, ReplyDone
    from bot.routing import DialogueState, RoutingConfig, RuleRouter

    class FixedLine(ChatModel):
        async def stream(self, messages: Sequence[BaseMessage], *, model: str) -> AsyncIterator[str | ReplyDone]:
            yield "Happy to help!"
            yield ReplyDone(model=model, prompt_tokens=None, completion_tokens=3)

    pack = load_pack(default_pack_path())
    classifier = load_classifier(classifier_dir)
    config = RoutingConfig(confidence_threshold=classifier.threshold, margin=classifier.margin)
    dialogue = DialogueManager(
        pack=pack, llm=FixedLine(), counter=ChatTemplateCounter(base_model), models=Swappable("domain"),
        classifier=Swappable(classifier), router=RuleRouter(pack, config), context_tokens=2048, reply_tokens=200,
        summary_model="base", knowledge=Swappable(KnowledgeIndex.build(pack.articles, SentenceEncoder())),
    )  # fmt: skip
    dialogue.answers_from = "passages"

    async def turn(text: str) -> TurnResult:
        async for event in dialogue.respond(turns=[Turn("customer", text)], state=DialogueState()):
            if isinstance(event, TurnResult):
                return event
        raise RuntimeError("no TurnResult")

    replies = []
    for question in questions:
        result = asyncio.run(turn(question))
        replies.append({
            "question": question,
            "reply": result.text,
            "route": f"{result.route.decision.value}:{result.route.intent}",
            "passages": [hit.passage.article_slug for hit in result.hits if hit.relevant],
        })  # fmt: skip
    return replies


def run_kernel_sets(
    questions: Sequence[str], classifier_dir: Path, base_model: Path, sets: dict[str, dict[str, str]] = KERNEL_SETS
) -> dict[str, list[dict]]:
    """Each kernel set's replies, from a child process with that set's environment."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        asked = Path(folder) / "questions.json"
        asked.write_text(json.dumps(list(questions)))
        for name, env in sets.items():
            out = Path(folder) / f"{name}.json"
            command = [sys.executable, __file__, "--child", str(asked), "--classifier", str(classifier_dir),
                       "--base-model", str(base_model), "--out", str(out)]  # fmt: skip
            started = time.perf_counter()
            subprocess.run(command, env={**os.environ, **env}, cwd=ROOT, check=True)
            results[name] = json.loads(out.read_text())
            print(f"{name}: {len(results[name])} questions answered in {time.perf_counter() - started:.0f} s")
    return results


def differences(results: dict[str, list[dict]]) -> list[dict]:
    """Every (kernel set, question) whose reply, route or passages differ from the first kernel set's."""
    reference_name, reference = next(iter(results.items()))
    found = []
    for name, replies in results.items():
        if name == reference_name:
            continue
        for expected, got in zip(reference, replies, strict=True):
            changed = [key for key in ("reply", "route", "passages") if expected[key] != got[key]]
            if changed:
                found.append({"kernels": name, "question": got["question"], "changed": changed,
                              reference_name: expected, name: got})  # fmt: skip
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", type=Path, help="a trained classifier folder (default: trained once)")
    parser.add_argument("--base-model", type=Path, default=BASE_MODEL, help="prepared base model (its tokenizer)")
    parser.add_argument("--limit", type=int, help="only the first N development questions")
    parser.add_argument("--out", type=Path, help="write the differences as JSON here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        replies = answer_all(json.loads(args.child.read_text()), args.classifier, args.base_model)
        args.out.write_text(json.dumps(replies))
        return 0
    if not (args.base_model / "config.json").exists():
        from finetune.prepare import prepare_base_model

        prepare_base_model(args.base_model)
    classifier = args.classifier or trained_classifier()
    questions = development_questions(args.limit)
    found = differences(run_kernel_sets(questions, classifier, args.base_model))
    questions_differing = len({item["question"] for item in found})
    print(f"{questions_differing} of {len(questions)} development questions got another reply, route or passages "
          f"under some kernel set ({len(found)} differences in all)")  # fmt: skip
    for item in found:
        print(f"- [{item['kernels']}] {item['question']!r}: {', '.join(item['changed'])}")
    if args.out:
        args.out.write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
