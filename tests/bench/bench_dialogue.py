"""The dialogue manager's own cost per turn (everything but the LLM), and a 60-turn context check.

The LLM is replaced by an instant scripted model so only classification, routing, slot extraction,
prompt building and token counting are timed. Uses the promoted intent classifier if there is one.

    .venv/bin/python tests/bench/bench_dialogue.py --data-dir var --turns 300
"""

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bot.context import ChatTemplateCounter, Turn
from bot.dialogue import DialogueManager, Swappable, TurnResult
from bot.domain import default_pack_path, load_pack
from bot.llm import ChatModel, ReplyDone
from bot.routing import DialogueState, RuleRouter
from core.settings import Settings
from runtime.dialogue import load_promoted_classifier, routing_config

REPLY = "Thanks for your message. You can return items within 30 days of delivery for a full refund."


class InstantModel(ChatModel):
    async def stream(self, messages: Sequence, *, model: str) -> AsyncIterator[str | ReplyDone]:
        for word in REPLY.split(" "):
            yield word + " "
        yield ReplyDone(model=model, prompt_tokens=None, completion_tokens=20)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(args: argparse.Namespace) -> dict:
    settings = Settings(data_dir=args.data_dir)
    pack = load_pack(default_pack_path())
    name, classifier = load_promoted_classifier(settings)
    dialogue = DialogueManager(
        pack=pack, llm=InstantModel(), counter=ChatTemplateCounter(settings.base_model_dir), models=Swappable("m"),
        classifier=Swappable(classifier), router=RuleRouter(pack, routing_config(settings, classifier)),
        context_tokens=settings.vllm_max_model_len, reply_tokens=settings.max_reply_tokens, summary_model="base",
    )  # fmt: skip
    utterances = [example for intent in pack.intents for example in intent.examples]
    overhead: list[float] = []
    turns: list[Turn] = []
    state = DialogueState()
    max_prompt = 0
    for index in range(args.turns):
        text = "My order is LL-104233." if index == 1 else utterances[(index * 7) % len(utterances)]
        turns.append(Turn("customer", text, id=len(turns) + 1))
        started = time.perf_counter()
        async for event in dialogue.respond(turns=turns, state=state):
            if isinstance(event, TurnResult):
                result = event
        total = (time.perf_counter() - started) * 1000
        llm = result.stages_ms.get("llm_total", 0.0)
        overhead.append(total - llm)
        state = DialogueState(slots=result.state.slots)  # keep the conversation with the bot
        max_prompt = max(max_prompt, result.prompt_tokens or 0)
        turns.append(Turn("bot", result.text or "", id=len(turns) + 1))
        if index == 59:
            sixty = {"prompt_tokens": result.prompt_tokens, "dropped_turns": result.dropped_turns,
                     "slots_kept": result.state.slots}  # fmt: skip
    return {
        "classifier": name,
        "turns": args.turns,
        "overhead_ms_p50": round(statistics.median(overhead), 2),
        "overhead_ms_p95": round(percentile(overhead, 0.95), 2),
        "max_prompt_tokens": max_prompt,
        "prompt_budget": settings.vllm_max_model_len - settings.max_reply_tokens,
        "turn_60": sixty,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    for key, value in results.items():
        print(f"{key:<20} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
