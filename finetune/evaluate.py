"""Compares a candidate adapter with the one in service on held-out conversations.

Metrics: assistant-turn loss and perplexity, ROUGE-L of generated replies against the references, and
the domain pack's must-pass checks. Loss and ROUGE-L are also reported per source (the company's own
conversations, "store", and the domain pack's "seed" ones): the gate decides on the company's and uses the
seeds as a guard against forgetting. Generation goes through the running vLLM server.

Where both models were scored turn by turn and check by check, the gate compares them pair by pair with a bootstrap
confidence interval, and a sampled score (ROUGE-L, the bare model's checks) vetoes only a difference the interval
puts wholly below zero: two candidates that differ by noise get the same decision.
"""

import logging
import math
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bot.context import relevant_policies, system_text
from bot.domain import Check, DomainPack
from finetune.dataset import DatasetRecord
from finetune.safety_checks import CHECKS_NAMED, PACK, judged_checks

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+")
# A run scores the model in service in a thread beside the candidate (finetune/worker.py). Loading a model changes
# process-wide state of transformers and torch for a moment (initialisation functions, the meta device), and two
# loads at once left one model with weights holding no data ("Cannot copy out of meta tensor", with a model server
# that answered at once); so models load one at a time, and only the loss computation overlaps.
_LOADING = threading.Lock()


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


def check_passed(check: Check, reply: str) -> bool:
    """Whether `reply` holds one of the check's expected phrases (when it has any) and none of its forbidden ones."""
    reply = reply.lower()
    expected = not check.expect_any or any(phrase.lower() in reply for phrase in check.expect_any)
    return expected and not any(phrase.lower() in reply for phrase in check.expect_none)


@dataclass
class GateConfig:
    """How much worse than the adapter in service a candidate may be and still be promoted."""

    loss_tolerance: float = 0.02
    """Relative increase of held-out loss allowed (0.02 = 2 %)."""
    rouge_tolerance: float = 0.01
    """Absolute drop of ROUGE-L allowed."""
    checks_tolerance: int = 0
    """Fewer passed must-pass checks allowed: those answered as customers get them when both were scored so,
    else the bare model's."""
    seed_checks_tolerance: int = 2
    """Fewer must-pass checks passed by the bare model allowed when the checks as customers get them and the
    company's conversations decide: then the bare model's answers only guard against forgetting."""
    seed_loss_tolerance: float = 0.10
    """Relative increase of loss on the seed conversations allowed when the company's conversations decide."""
    seed_rouge_tolerance: float = 0.05
    """Absolute drop of ROUGE-L on the seed conversations allowed when the company's conversations decide."""
    confidence: float = 0.95
    """Confidence of the paired bootstrap intervals: a sampled score vetoes only when its whole interval lies below
    zero (and the drop exceeds its tolerance)."""
    resamples: int = 2000
    """Bootstrap resamples; the seed is fixed, so the same scores always give the same interval."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1 or self.resamples < 100:
            raise ValueError("confidence must be in [0.5, 1) and resamples at least 100")


@dataclass(frozen=True)
class Difference:
    """Candidate minus the model in service on the same items, with a bootstrap confidence interval of the mean."""

    mean: float
    low: float
    high: float
    items: int

    @property
    def worse(self) -> bool:
        """The whole interval lies below zero: the candidate is worse beyond what resampling explains."""
        return self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:+.3f} (interval {self.low:+.3f} to {self.high:+.3f}, {self.items} paired)"


def paired_difference(
    candidate: Sequence[float], in_service: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000
) -> Difference | None:
    """The mean of `candidate[i] - in_service[i]` and its percentile bootstrap interval; None without pairs. Both
    lists must score the same items in the same order."""
    if len(candidate) != len(in_service) or not candidate:
        return None
    differences = np.asarray(candidate, dtype=np.float64) - np.asarray(in_service, dtype=np.float64)
    rows = np.random.default_rng(0).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[rows].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Difference(round(float(differences.mean()), 4), round(float(low), 4), round(float(high), 4),
                      len(differences))  # fmt: skip


@dataclass
class ModelScores:
    """Scores of one served model (adapter or base) on the evaluation set."""

    model: str
    loss: float | None = None
    perplexity: float | None = None
    rouge_l: float | None = None
    turns: int = 0
    """Assistant turns whose generated replies were scored with ROUGE-L."""
    checks_passed: int = 0
    checks_total: int = 0
    failed_checks: list[str] = field(default_factory=list)
    customer_checks_passed: int = 0
    """The must-pass checks as customers get them: answered by the whole dialogue (finetune/customer_checks.py)."""
    customer_checks_total: int = 0
    failed_customer_checks: dict[str, str] = field(default_factory=dict)
    """Each failed check's id and the reply a customer would have got."""
    samples: list[dict] = field(default_factory=list)
    by_source: dict[str, dict] = field(default_factory=dict)
    """Per source ("store", "seed"): conversations, turns, loss and ROUGE-L on that source's held-out part."""
    turn_rouge: dict[str, list[float]] = field(default_factory=dict)
    """ROUGE-L of each scored turn, per source ("all" when not split by source), in the evaluation set's order: what
    the gate pairs with the other model's."""
    check_results: dict[str, bool] = field(default_factory=dict)
    """Each bare-model must-pass check's id and whether it passed."""
    customer_check_results: dict[str, bool] = field(default_factory=dict)
    """Each must-pass check as customers get them: id and whether it passed."""
    checks_from: str = PACK
    """Which checks were run: the pack's checks.yaml ("pack"), or generic safety checks for a pack without one."""


def assistant_loss(
    base_model_dir: Path, adapter_dir: Path | None, records: Sequence[DatasetRecord], pack: DomainPack, threads: int = 1
) -> float:
    """Mean loss on the assistant turns of `records`, for the base model or base + adapter."""
    total, count = assistant_loss_sums(base_model_dir, adapter_dir, {"all": records}, pack, threads)["all"]
    return total / max(count, 1)


def assistant_loss_sums(
    base_model_dir: Path,
    adapter_dir: Path | None,
    groups: dict[str, Sequence[DatasetRecord]],
    pack: DomainPack,
    threads: int = 1,
) -> dict[str, tuple[float, int]]:
    """Summed assistant-turn loss and its token count for each group of records, loading the model once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.attention import use_packed_attention
    from finetune.devices import training_device
    from finetune.seed import with_system
    from finetune.sft import assistant_loss_sum, load_examples

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    with _LOADING:
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir)
        else:
            from peft import LoraConfig, get_peft_model

            # A zero-initialised LoRA leaves the base model's outputs unchanged and gives the same code path.
            model = get_peft_model(model, LoraConfig(r=1, target_modules=["q_proj"], task_type="CAUSAL_LM"))
        device = training_device()
        model.to(device)
    # On a CPU, rows share system texts as in training (finetune/sft.py): each is computed once per row.
    share = device.type == "cpu"
    if share:
        use_packed_attention(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums = {}
    for name, records in groups.items():
        conversations = [with_system(pack, r.messages, r.intent) for r in records]
        examples = load_examples(tokenizer, conversations, 1024, system_counts=not share)
        sums[name] = assistant_loss_sum(model, examples, pad_id, packed=share)
    return sums


def by_source(records: Sequence[DatasetRecord]) -> dict[str, list[DatasetRecord]]:
    """Records grouped by source, the company's own ("store") first."""
    groups: dict[str, list[DatasetRecord]] = {}
    for record in sorted(records, key=lambda record: record.source != "store"):
        groups.setdefault(record.source, []).append(record)
    return groups


def source_scores(*, records: Sequence[DatasetRecord], max_turns: int = 40, **generation: Any) -> ModelScores:
    """`generation_scores` on each source's records, each with its own budget of `max_turns` turns, so a source
    with many short conversations does not crowd out the other; the must-pass checks run once. The overall
    ROUGE-L is the mean over all scored turns. `generation`: generation_scores's other arguments."""
    groups = by_source(records)
    scores = generation_scores(records=[], max_turns=0, **generation)
    weighted, turns = 0.0, 0
    for source, group in groups.items():
        part = generation_scores(records=group, max_turns=max_turns, **{**generation, "max_checks": 0})
        count = part.turns
        scores.by_source[source] = {"conversations": len(group), "turns": count, "rouge_l": part.rouge_l}
        scores.turn_rouge[source] = part.turn_rouge.get("all", [])
        scores.samples += [{**sample, "source": source} for sample in part.samples[: 5 // len(groups) + 1]]
        if part.rouge_l is not None:
            weighted, turns = weighted + part.rouge_l * count, turns + count
    scores.rouge_l = round(weighted / turns, 4) if turns else None
    scores.turns = turns
    return scores


def with_source_losses(scores: ModelScores, sums: dict[str, tuple[float, int]]) -> ModelScores:
    """The overall and per-source losses from `assistant_loss_sums` over `by_source` groups."""
    for source, (total, count) in sums.items():
        scores.by_source.setdefault(source, {})["loss"] = round(total / max(count, 1), 4) if count else None
    total = sum(total for total, _ in sums.values())
    count = sum(count for _, count in sums.values())
    return with_loss(scores, total / max(count, 1))


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
    checks_from, checks = judged_checks(pack)
    checks = checks[:max_checks]
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

    scores = ModelScores(model=model, checks_from=checks_from)
    rouges = []
    for (prompt, reference), reply in zip(turns, replies, strict=False):
        rouges.append(rouge_l(reply, reference))
        if len(scores.samples) < 5:
            scores.samples.append({"prompt": prompt[-1]["content"], "reply": reply, "reference": reference})
    for check, reply in zip(checks, replies[len(turns) :], strict=True):
        scores.checks_total += 1
        scores.check_results[check.id] = check_passed(check, reply)
        if scores.check_results[check.id]:
            scores.checks_passed += 1
        else:
            scores.failed_checks.append(check.id)
    scores.rouge_l = round(sum(rouges) / len(rouges), 4) if rouges else None
    scores.turns = len(rouges)
    scores.turn_rouge = {"all": [round(value, 4) for value in rouges]} if rouges else {}
    return scores


def with_loss(scores: ModelScores, loss: float) -> ModelScores:
    scores.loss = round(loss, 4)
    scores.perplexity = round(math.exp(min(loss, 50)), 3)
    return scores


def _worse(candidate: dict, in_service: dict, loss_tolerance: float, rouge_tolerance: float, where: str) -> list[str]:
    """Why `candidate`'s loss or ROUGE-L (dicts with those keys) is worse than `in_service`'s beyond the tolerances."""
    reasons = []
    loss, theirs = candidate.get("loss"), in_service.get("loss")
    if loss is not None and theirs is not None and loss > theirs * (1 + loss_tolerance):
        reasons.append(f"{where}held-out loss {loss} is worse than {theirs}")
    rouge, theirs = candidate.get("rouge_l"), in_service.get("rouge_l")
    if rouge is not None and theirs is not None and rouge < theirs - rouge_tolerance:
        reasons.append(f"{where}ROUGE-L {rouge} is worse than {theirs}")
    return reasons


class _Gate:
    """One comparison of a candidate with the model in service: the reasons to keep it out and the paired
    differences measured on the way."""

    def __init__(self, candidate: ModelScores, in_service: ModelScores, config: GateConfig) -> None:
        self.candidate, self.in_service, self.config = candidate, in_service, config
        self.reasons: list[str] = []
        self.differences: dict[str, dict] = {}

    def paired(self, name: str, mine: Sequence[float], theirs: Sequence[float]) -> Difference | None:
        difference = paired_difference(mine, theirs, confidence=self.config.confidence,
                                       resamples=self.config.resamples)  # fmt: skip
        if difference is not None:
            self.differences[name] = asdict(difference)
        return difference

    def rouge(self, part: str, candidate: dict, in_service: dict, loss_tolerance: float, rouge_tolerance: float,
              where: str) -> None:  # fmt: skip
        """Loss by its tolerance; ROUGE-L, where both were scored turn by turn, by its paired interval."""
        prefix = f"{where}: " if where else ""
        mine, theirs = self.candidate.turn_rouge.get(part, []), self.in_service.turn_rouge.get(part, [])
        difference = self.paired(f"ROUGE-L, {where or 'held-out conversations'}", mine, theirs)
        if difference is None:
            self.reasons += _worse(candidate, in_service, loss_tolerance, rouge_tolerance, prefix)
            return
        self.reasons += _worse(candidate, {**in_service, "rouge_l": None}, loss_tolerance, 0.0, prefix)
        if difference.worse and difference.mean < -rouge_tolerance:
            rouge, worse_than = candidate.get("rouge_l"), in_service.get("rouge_l")
            self.reasons.append(f"{prefix}ROUGE-L {rouge} is worse than {worse_than}, by {difference}")

    def checks(self, guard: bool) -> None:
        """The must-pass checks as customers get them by count (greedy replies: no sampling noise); the bare
        model's by count, or, when they only guard against forgetting and were scored check by check, by interval."""
        config, candidate, in_service = self.config, self.candidate, self.in_service
        if candidate.customer_checks_total > 0 and in_service.customer_checks_total > 0:
            passed, theirs = candidate.customer_checks_passed, in_service.customer_checks_passed
            if passed < theirs - config.checks_tolerance:
                self.reasons.append(f"passes {passed} must-pass checks as customers get them, in service {theirs}")
        shared = [key for key in candidate.check_results if key in in_service.check_results]
        difference = self.paired("bare model's must-pass checks", [float(candidate.check_results[k]) for k in shared],
                                 [float(in_service.check_results[k]) for k in shared])  # fmt: skip
        passed, theirs = candidate.checks_passed, in_service.checks_passed
        fewer = passed < theirs - (config.seed_checks_tolerance if guard else config.checks_tolerance)
        if fewer and (not guard or difference is None or difference.worse):
            where = "forgetting: the bare model " if guard else ""
            shown = f", by {difference}" if guard and difference is not None else ""
            self.reasons.append(f"{where}passes {passed} must-pass checks, in service {theirs}{shown}")


def gate(candidate: ModelScores, in_service: ModelScores | None, config: GateConfig) -> dict:
    """Whether the candidate may replace the model in service, with the reasons, the paired differences (with their
    intervals) and a one-line summary.

    When both were scored on the company's own conversations ("store"), those decide with the normal
    tolerances, and the seed conversations only guard against forgetting: they block a candidate only when it
    is worse there by more than the seed tolerances. Without company conversations, the overall scores decide.
    ROUGE-L scored turn by turn vetoes only when its paired interval lies wholly below zero and the mean drop
    exceeds the tolerance; loss, a deterministic sum over the same references, keeps its relative tolerance.

    The must-pass checks as customers get them (both models scored so) allow `checks_tolerance` fewer passes.
    The bare model's checks then guard against forgetting with `seed_checks_tolerance` (and, scored check by
    check, only a drop the interval confirms) when the company's conversations decide; otherwise, and whenever
    the checks as customers get them are missing, they allow `checks_tolerance`.
    """
    if in_service is None:
        return {"promote": True, "reasons": ["nothing in service"]}
    judged = _Gate(candidate, in_service, config)
    store = "store" in candidate.by_source and "store" in in_service.by_source
    if store:
        decided_on = "company's conversations"
        judged.rouge("store", candidate.by_source["store"], in_service.by_source["store"], config.loss_tolerance,
                     config.rouge_tolerance, "company's conversations")  # fmt: skip
        if "seed" in candidate.by_source and "seed" in in_service.by_source:
            judged.rouge("seed", candidate.by_source["seed"], in_service.by_source["seed"], config.seed_loss_tolerance,
                          config.seed_rouge_tolerance, "forgetting on seed conversations")  # fmt: skip
    else:
        decided_on = "all held-out conversations"
        judged.rouge("all", asdict(candidate), asdict(in_service), config.loss_tolerance, config.rouge_tolerance, "")
    as_customers = candidate.customer_checks_total > 0 and in_service.customer_checks_total > 0
    judged.checks(guard=as_customers and store)  # the bare model's answers only guard against forgetting
    measured = "; ".join(f"{name} {Difference(**values)}" for name, values in judged.differences.items())
    evidence = _evidence(candidate, in_service, store)
    if judged.reasons:
        summary = f"not promoted: {judged.reasons[0]}" + (f" ({len(judged.reasons) - 1} more)" if
                                                           len(judged.reasons) > 1 else "")  # fmt: skip
        return {"promote": False, "reasons": judged.reasons, "decided_on": decided_on, "evidence": evidence,
                "differences": judged.differences, "summary": f"{summary}; {evidence}"}  # fmt: skip
    seeds = "seed" in candidate.by_source and "seed" in in_service.by_source
    fine = [("not worse on the company's conversations" + ("; seed conversations within the forgetting tolerance"
             if seeds else "")) if store else "not worse on any metric"]  # fmt: skip
    if measured:
        fine.append(f"measured: {measured}")
    return {"promote": True, "reasons": fine, "decided_on": decided_on, "evidence": evidence,
            "differences": judged.differences, "summary": f"promoted: {fine[0]}; {evidence}"}  # fmt: skip


def _evidence(candidate: ModelScores, in_service: ModelScores, store: bool) -> str:
    """What the decision rested on, in words: which held-out conversations (how many turns, paired or not) and which
    checks, so a reader sees at once whether the pack's seeds and checks took part."""
    named = {
        "store": "the company's held-out conversations",
        "seed": "the pack's seed conversations as a forgetting guard",
    }
    both = [part for part in named if part in candidate.by_source and part in in_service.by_source]
    parts = []
    for part in both if store else ["all"]:
        mine, theirs = candidate.turn_rouge.get(part, []), in_service.turn_rouge.get(part, [])
        paired = mine and len(mine) == len(theirs)
        how = f"ROUGE-L of {len(mine)} turns, paired bootstrap" if paired else "mean loss and ROUGE-L"
        parts.append(f"{named.get(part, 'all held-out conversations')} ({how})")
    if "seed" not in both:
        parts.append("no seed conversations")
    total = max(candidate.customer_checks_total, candidate.checks_total)
    parts.append(f"{total} {CHECKS_NAMED.get(candidate.checks_from, 'checks')}" if total else "no checks")
    return "evidence: " + ", ".join(parts)


def report(candidate: ModelScores, in_service: ModelScores | None, decision: dict) -> dict:
    return {
        "candidate": asdict(candidate),
        "in_service": asdict(in_service) if in_service else None,
        "decision": decision,
    }
