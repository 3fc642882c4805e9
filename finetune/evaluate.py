"""Compares a candidate adapter with the one in service on held-out conversations.

Metrics: assistant-turn loss and perplexity, ROUGE-L of generated replies against the references, and
the domain pack's must-pass checks. Generation goes through the running vLLM server.
"""

import logging
import math
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bot.context import relevant_policies, system_text
from bot.domain import DomainPack
from finetune.dataset import DatasetRecord

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+")


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (longest common subsequence)."""
    a, b = _TOKEN.findall(candidate.lower()), _TOKEN.findall(reference.lower())
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


@dataclass
class GateConfig:
    """How much worse than the adapter in service a candidate may be and still be promoted."""

    loss_tolerance: float = 0.02
    """Relative increase of held-out loss allowed (0.02 = 2 %)."""
    rouge_tolerance: float = 0.01
    """Absolute drop of ROUGE-L allowed."""
    checks_tolerance: int = 0
    """Fewer passed must-pass checks allowed."""


@dataclass
class ModelScores:
    """Scores of one served model (adapter or base) on the evaluation set."""

    model: str
    loss: float | None = None
    perplexity: float | None = None
    rouge_l: float | None = None
    checks_passed: int = 0
    checks_total: int = 0
    failed_checks: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


def assistant_loss(
    base_model_dir: Path, adapter_dir: Path | None, records: Sequence[DatasetRecord], pack: DomainPack, threads: int = 1
) -> float:
    """Mean loss on the assistant turns of `records`, for the base model or base + adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.devices import training_device
    from finetune.seed import with_system
    from finetune.sft import load_examples, mean_assistant_loss

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    else:
        from peft import LoraConfig, get_peft_model

        # A zero-initialised LoRA leaves the base model's outputs unchanged and gives the same code path.
        model = get_peft_model(model, LoraConfig(r=1, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.to(training_device())
    examples = load_examples(tokenizer, [with_system(pack, r.messages, r.intent) for r in records], 1024)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return mean_assistant_loss(model, examples, pad_id)


def _generate(client: httpx.Client, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
    response = client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0},
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"] or ""


def generation_scores(
    *,
    vllm_url: str,
    model: str,
    records: Sequence[DatasetRecord],
    pack: DomainPack,
    max_turns: int = 40,
    max_checks: int | None = None,
    max_tokens: int = 96,
    concurrency: int = 16,
) -> ModelScores:
    """ROUGE-L on up to `max_turns` assistant turns, and the pack's must-pass checks, through vLLM.

    The replies are requested `concurrency` at a time, so vLLM batches them; greedy decoding keeps
    the scores independent of the order they finish in.
    """
    from finetune.seed import with_system

    turns: list[tuple[list[dict[str, str]], str]] = []  # (prompt, reference reply)
    for record in records:
        conversation = with_system(pack, record.messages, record.intent)
        for index, message in enumerate(conversation):
            if message["role"] == "assistant" and len(turns) < max_turns:
                turns.append((conversation[:index], message["content"]))
    checks = pack.checks[:max_checks]
    check_prompts = [
        [{"role": "system", "content": system_text(pack, relevant_policies(pack, check.prompt))},
         {"role": "user", "content": check.prompt}]
        for check in checks
    ]  # fmt: skip
    with httpx.Client(base_url=vllm_url, timeout=300) as client, ThreadPoolExecutor(max(1, concurrency)) as pool:
        replies = list(
            pool.map(lambda messages: _generate(client, model, messages, max_tokens),
                     [prompt for prompt, _ in turns] + check_prompts)
        )  # fmt: skip

    scores = ModelScores(model=model)
    rouges = []
    for (prompt, reference), reply in zip(turns, replies, strict=False):
        rouges.append(rouge_l(reply, reference))
        if len(scores.samples) < 5:
            scores.samples.append({"prompt": prompt[-1]["content"], "reply": reply, "reference": reference})
    for check, reply in zip(checks, replies[len(turns) :], strict=True):
        reply = reply.lower()
        passed = (not check.expect_any or any(s.lower() in reply for s in check.expect_any)) and not any(
            s.lower() in reply for s in check.expect_none
        )
        scores.checks_total += 1
        if passed:
            scores.checks_passed += 1
        else:
            scores.failed_checks.append(check.id)
    scores.rouge_l = round(sum(rouges) / len(rouges), 4) if rouges else None
    return scores


def with_loss(scores: ModelScores, loss: float) -> ModelScores:
    scores.loss = round(loss, 4)
    scores.perplexity = round(math.exp(min(loss, 50)), 3)
    return scores


def gate(candidate: ModelScores, in_service: ModelScores | None, config: GateConfig) -> dict:
    """Whether the candidate may replace the model in service, with the reasons."""
    if in_service is None:
        return {"promote": True, "reasons": ["nothing in service"]}
    reasons: list[str] = []
    both_loss = candidate.loss is not None and in_service.loss is not None
    if both_loss and candidate.loss > in_service.loss * (1 + config.loss_tolerance):
        reasons.append(f"held-out loss {candidate.loss} is worse than {in_service.loss}")
    both_rouge = candidate.rouge_l is not None and in_service.rouge_l is not None
    if both_rouge and candidate.rouge_l < in_service.rouge_l - config.rouge_tolerance:
        reasons.append(f"ROUGE-L {candidate.rouge_l} is worse than {in_service.rouge_l}")
    if candidate.checks_passed < in_service.checks_passed - config.checks_tolerance:
        reasons.append(f"passes {candidate.checks_passed} must-pass checks, in service {in_service.checks_passed}")
    return {"promote": not reasons, "reasons": reasons or ["not worse on any metric"]}


def report(candidate: ModelScores, in_service: ModelScores | None, decision: dict) -> dict:
    return {
        "candidate": asdict(candidate),
        "in_service": asdict(in_service) if in_service else None,
        "decision": decision,
    }
