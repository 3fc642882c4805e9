"""Train, calibrate and evaluate the intent classifier from labelled utterances (a domain pack's examples).

The result is a classifier folder that `bot.intents.load_classifier` reads; see `train_intent_classifier`.
"""

import logging
import math
import os
import random
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from bot.domain import DomainPack
from bot.intent_net import IntentNet
from bot.intents import (
    EncoderIntentClassifier,
    encoder_info,
    encoder_path,
    expected_calibration_error,
)
from finetune.intent_report import evaluate_classifier

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, float], None]
"""Called after each optimiser step with (step, total steps, loss)."""


class ClassifierTrainingError(Exception):
    """The examples cannot train a classifier (too few, or a single intent)."""


@dataclass
class ClassifierRecipe:
    """Hyper-parameters of one intent-classifier training run.

    Defaults were picked on BANKING77's train split (a validation part cut from it) and the demo
    pack's held-out split; tests/bench/bench_intents.py reports what they give.
    """

    train_layers: int = 6
    """Upper encoder layers fine-tuned; the lower ones stay as all-MiniLM-L6-v2 has them, and their
    output is computed once per example, so each training step costs about train_layers/6 of a full one.
    All 6 (with head_learning_rate 1e-3) beat the upper 2 on BANKING77 validation by 0.5 points with 10
    examples per intent and 0.9 with the full train split, for about 2.5 times the training time."""
    epochs: float = 4.0
    """Passes over the training split."""
    min_steps: int = 250
    """At least this many optimiser steps, so a small pack still trains long enough."""
    batch_size: int = 32
    """Utterances per optimiser step."""
    learning_rate: float = 3e-4
    """Peak learning rate of the encoder layers, reached after warmup and then decayed linearly."""
    head_learning_rate: float = 1e-3
    """Peak learning rate of the intent vectors and the logit scale. They start at each intent's mean
    example embedding; 1e-3 kept them nearer it than 3e-3 and gained 0.5 points of 10-shot BANKING77
    validation accuracy (3e-4 did as well)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rates up linearly."""
    weight_decay: float = 0.01
    """AdamW weight decay of the encoder layers."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing. 0.1 cost 2 points of 10-shot BANKING77 validation accuracy;
    temperature scaling does the calibrating instead."""
    max_length: int = 64
    """Tokens kept per utterance; customer messages beyond it are cut."""
    holdout_fraction: float = 0.2
    """Share of each intent's examples kept out of training to calibrate and measure the classifier."""
    max_holdout_per_intent: int = 10
    """At most this many held-out examples per intent; beyond a few hundred in all, more examples
    teach the classifier more than they refine one temperature."""
    refit_min_share: float = 0.1
    """When the held-out part is at least this share of the examples (small packs, few-shot), a
    second run trains on all examples with the same recipe and is the one kept, with the first run's
    temperature, threshold and held-out metrics; 1 never refits."""
    in_scope_rejection: float = 0.05
    """Share of correctly classified held-out messages the recommended threshold may turn away; the
    threshold is the confidence at this quantile, kept within [min_threshold, max_threshold]."""
    min_threshold: float = 0.3
    """Lowest recommended confidence threshold."""
    max_threshold: float = 0.7
    """Highest recommended confidence threshold."""
    margin: float = 0.1
    """Recommended top-1 minus top-2 margin below which a message counts as ambiguous."""
    memory_weight: float = 0.5
    """Weight of the example memory: each intent's logit gains this times the head's scale times the
    cosine to the intent's nearest training example (`EncoderIntentClassifier`); 0 keeps no memory.
    On BANKING77 validation 0.5 gained 0.4 points with 10 examples per intent (mean of 5 seeds) and 0.3
    with the full train split; 1.0 gained as much with few examples and less with many."""
    quantize: bool = False
    """Run the classifier with int8 weights: about 4x faster a message on CPU (2.4 against 10 ms) and within
    noise in accuracy, but its confidences then depend on the CPU's int8 kernels (bot/intent_net.py); loading
    serves every classifier in float32."""
    max_minutes: float = 30.0
    """Wall-clock bound of the training loop; the learning-rate schedule is cut short there."""
    seed: int = 0
    """Seed of the held-out split, batch order and dropout."""
    threads: int = 2
    """CPU threads for torch during training."""

    def __post_init__(self) -> None:
        if not 0 <= self.train_layers <= 12:
            raise ValueError("train_layers must be between 0 and the encoder's number of layers")
        if self.epochs <= 0 or self.min_steps < 0 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive and min_steps not negative")
        if self.learning_rate <= 0 or self.head_learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning rates must be positive and weight_decay not negative")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("warmup_ratio and label_smoothing must be in [0, 1)")
        if self.max_length < 8:
            raise ValueError("max_length must be at least 8 tokens")
        if not 0 < self.holdout_fraction < 1 or self.max_holdout_per_intent < 1:
            raise ValueError("holdout_fraction must be in (0, 1) and max_holdout_per_intent positive")
        if not 0 < self.refit_min_share <= 1:
            raise ValueError("refit_min_share must be in (0, 1]")
        if not 0 <= self.in_scope_rejection < 1:
            raise ValueError("in_scope_rejection must be in [0, 1)")
        if not 0 <= self.min_threshold <= self.max_threshold <= 1 or not 0 <= self.margin < 1:
            raise ValueError("need 0 <= min_threshold <= max_threshold <= 1 and margin in [0, 1)")
        if self.memory_weight < 0:
            raise ValueError("memory_weight must not be negative")
        if self.max_minutes <= 0 or self.threads < 1:
            raise ValueError("max_minutes and threads must be positive")


def examples_from_pack(pack: DomainPack) -> list[tuple[str, str]]:
    """The pack's example utterances as (text, intent) pairs, in pack order."""
    return [(example, intent.name) for intent in pack.intents for example in intent.examples]


def intent_texts_from_pack(pack: DomainPack) -> dict[str, list[str]]:
    """What the pack says each intent is: its name in words ("order status") and its description."""
    return {intent.name: [intent.name.replace("_", " "), intent.description] for intent in pack.intents}


def split_examples(
    examples: Sequence[tuple[str, str]], holdout_fraction: float, seed: int, max_per_intent: int | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A per-intent (stratified) split into training and held-out examples; deterministic for a seed.

    Each intent keeps at least one training example, and gives at least one held-out example when it
    has two or more.
    """
    by_intent: dict[str, list[str]] = {}
    for text, intent in examples:
        by_intent.setdefault(intent, []).append(text)
    rng = random.Random(seed)
    train, held_out = [], []
    for intent in sorted(by_intent):
        texts = sorted(by_intent[intent])
        rng.shuffle(texts)
        count = 0 if len(texts) < 2 else min(len(texts) - 1, max(1, round(len(texts) * holdout_fraction)))
        if max_per_intent is not None:
            count = min(count, max_per_intent)
        held_out += [(text, intent) for text in texts[:count]]
        train += [(text, intent) for text in texts[count:]]
    return train, held_out


def _cleaned(examples: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The examples with runs of white space made single spaces, and blank ones dropped."""
    return [(" ".join(text.split()), intent) for text, intent in examples if text.strip()]


def held_out_examples(examples: Sequence[tuple[str, str]], recipe: ClassifierRecipe) -> list[tuple[str, str]]:
    """The examples `train_intent_classifier` keeps out of training under this recipe."""
    cleaned = _cleaned(examples)
    return split_examples(cleaned, recipe.holdout_fraction, recipe.seed, recipe.max_holdout_per_intent)[1]


def train_intent_classifier(
    examples: list[tuple[str, str]],
    *,
    output_dir: Path,
    recipe: ClassifierRecipe | None = None,
    on_progress: ProgressCallback | None = None,
    intent_texts: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Fine-tune all-MiniLM-L6-v2's upper layers and a cosine head on (text, intent) examples.

    `intent_texts` says in words what each intent is (`intent_texts_from_pack`: its name and
    description). They are trained on as extra examples of their intent, never held out, which helps
    most where intents have few examples (BANKING77 with 10 per intent: +1.2 points of validation
    accuracy, from the intents' names alone); texts of intents without examples are ignored.

    A stratified held-out split (recipe.holdout_fraction) is kept out of training; the classifier's
    temperature is fitted on it, its metrics measured on it, and the recommended threshold read from
    it. Where that split is a large share of the examples, the classifier is then trained again on
    all of them (recipe.refit_min_share). The folder is written to `<output_dir>.partial` and renamed
    when complete, so an interrupted run never looks like a classifier. Returns what classifier.json
    holds.
    """
    recipe = recipe or ClassifierRecipe()
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists; classifier folders are never overwritten")
    cleaned = _cleaned(examples)
    counts = Counter(intent for _, intent in cleaned)
    if len(counts) < 2:
        raise ClassifierTrainingError(f"need examples of at least two intents, got {sorted(counts)}")
    started = time.monotonic()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        train, held_out = split_examples(cleaned, recipe.holdout_fraction, recipe.seed, recipe.max_holdout_per_intent)
        labels = sorted(counts)
        described = _cleaned(
            [
                (text, intent)
                for intent, texts in sorted((intent_texts or {}).items())
                if intent in counts
                for text in texts
            ]
        )
        refit = bool(held_out) and len(held_out) >= recipe.refit_min_share * len(cleaned)
        planned = _planned_steps(len(train) + len(described), recipe) + (
            _planned_steps(len(cleaned) + len(described), recipe) if refit else 0
        )
        deadline = started + recipe.max_minutes * 60

        def progress(offset: int) -> Callable[[int, float], None]:
            def report_step(step: int, loss: float) -> None:
                if on_progress is not None:
                    on_progress(offset + step, planned, loss)

            return report_step

        fit_started = time.monotonic()
        classifier, stats = _fit(train + described, labels, recipe, progress(0), deadline)
        if refit and not _refit_fits(stats, time.monotonic() - fit_started, planned, deadline):
            # No time left to train again on every example (a slow or busy machine): the classifier just trained
            # is the one, rather than a refit that the deadline would stop early or before its first step.
            refit = False
        calibration = calibrate(classifier, held_out, recipe)
        report = evaluate_classifier(classifier, held_out) if held_out else None
        if held_out and not refit and recipe.memory_weight:
            # Measured and calibrated, the held-out examples join the memory, which needs no training:
            # +0.3 points of BANKING77 validation accuracy with its full train split.
            classifier.remember(held_out, keep=True)
        if refit:
            final, refit_stats = _fit(cleaned + described, labels, recipe, progress(stats["steps"]), deadline)
            final.temperature, final.threshold, final.margin = (
                classifier.temperature,
                classifier.threshold,
                classifier.margin,
            )
            classifier, stats = final, {**stats, "refit_on_all": refit_stats}
    finally:
        torch.set_num_threads(previous_threads)

    meta: dict[str, Any] = {
        "encoder": {**encoder_info(), "pooling": "mean", "fine_tuned_layers": recipe.train_layers},
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "examples": {
            "train": len(cleaned) if refit else len(train),
            "held_out": len(held_out),
            "intents": len(labels),
            "refit_on_all": refit,
            "intent_texts": len(described),
        },
        "training": {**stats, "seconds": round(time.monotonic() - started, 1)},
        "calibration": calibration,
        "metrics": report.to_dict() if report else {},
        "recipe": asdict(recipe),
    }
    staging = output_dir.with_name(output_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    classifier.save(staging, extra=meta)
    os.replace(staging, output_dir)
    logger.info(
        "intent classifier trained on %d examples of %d intents in %.0f s: held-out accuracy %s, "
        "temperature %.2f, threshold %.2f",
        len(train),
        len(labels),
        meta["training"]["seconds"],
        f"{report.accuracy:.3f}" if report else "n/a",
        classifier.temperature,
        classifier.threshold,
    )
    return {**meta, **classifier.recommended, "temperature": classifier.temperature, "labels": labels}


# --- Training -----------------------------------------------------------------------------------


def _refit_fits(first: dict[str, Any], seconds: float, planned: int, deadline: float) -> bool:
    """Whether the refit on every example can take all its steps before `deadline`: the first fit took all of its
    own, and its pace (`seconds` for `first["steps"]`) leaves time for the rest of the `planned` steps."""
    steps = first["steps"]
    if steps < first["planned_steps"] or steps == 0:
        return False
    return time.monotonic() + seconds / steps * (planned - steps) <= deadline


def _planned_steps(examples: int, recipe: ClassifierRecipe) -> int:
    return max(recipe.min_steps, math.ceil(recipe.epochs * math.ceil(examples / recipe.batch_size)))


def _fit(
    train: list[tuple[str, str]],
    labels: list[str],
    recipe: ClassifierRecipe,
    on_step: Callable[[int, float], None],
    deadline: float,
) -> tuple[EncoderIntentClassifier, dict[str, Any]]:
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    path = encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    net = IntentNet(AutoModel.from_pretrained(path), len(labels))
    if recipe.train_layers > net.num_layers:
        raise ValueError(f"train_layers is {recipe.train_layers} but the encoder has {net.num_layers} layers")
    frozen = net.num_layers - recipe.train_layers
    index = {label: position for position, label in enumerate(labels)}
    targets = torch.tensor([index[intent] for _, intent in train])
    ids = [
        torch.tensor(row)
        for row in tokenizer([text for text, _ in train], truncation=True, max_length=recipe.max_length)["input_ids"]
    ]

    # One pass in eval mode: the frozen layers' output (kept, so training starts above it) and the
    # sentence embeddings the intent vectors start from (each intent's mean, as nearest-centroid).
    net.eval()
    cached: list[torch.Tensor] = [torch.empty(0)] * len(train)
    pooled = torch.empty(len(train), net.weight.shape[1])
    with torch.inference_mode():
        for batch in _batches(ids, 128, None):
            input_ids, mask = _pad([ids[i] for i in batch])
            lower = net.run_layers(net.embed_tokens(input_ids), mask, 0, frozen)
            for row, i in enumerate(batch):
                cached[i] = lower[row, : len(ids[i])].clone()
            upper = net.run_layers(lower, mask, frozen)
            pooled[batch] = F.normalize(_masked_mean(upper, mask), dim=-1)
    with torch.no_grad():
        centroids = torch.zeros_like(net.weight).index_add_(0, targets, pooled)
        net.weight.copy_(F.normalize(centroids, dim=-1))

    for parameter in net.encoder.parameters():
        parameter.requires_grad_(False)
    trained = [p for layer in net.encoder.encoder.layer[frozen:] for p in layer.parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    groups = [{"params": [net.weight, net.scale], "lr": recipe.head_learning_rate, "weight_decay": 0.0}]
    if trained:
        groups.append({"params": trained, "lr": recipe.learning_rate, "weight_decay": recipe.weight_decay})
    optimizer = torch.optim.AdamW(groups)
    total = _planned_steps(len(train), recipe)
    warmup = int(recipe.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (step + 1) / (warmup + 1) if step < warmup else max(0.0, (total - step) / (total - warmup)),
    )

    net.train()
    step, losses = 0, []
    while step < total and time.monotonic() < deadline:
        for batch in _batches(cached, recipe.batch_size, rng):
            hidden, mask = _pad([cached[i] for i in batch])
            upper = net.run_layers(hidden, mask, frozen)
            logits = net.head(_masked_mean(upper, mask))
            loss = F.cross_entropy(logits, targets[batch], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            on_step(step, losses[-1])
            if step >= total or time.monotonic() >= deadline:
                break
    if step < total:
        logger.warning(
            "intent classifier training stopped at the %.0f-minute bound: %d of %d steps",
            recipe.max_minutes,
            step,
            total,
        )
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    classifier = EncoderIntentClassifier(
        net,
        tokenizer,
        labels,
        max_length=recipe.max_length,
        quantize=recipe.quantize,
        threads=1,
        memory_weight=recipe.memory_weight,
    )
    if recipe.memory_weight:
        classifier.remember(train)
    stats = {
        "steps": step,
        "planned_steps": total,
        "first_loss": round(statistics.fmean(losses[:10]), 4) if losses else None,
        "last_loss": round(statistics.fmean(losses[-10:]), 4) if losses else None,
    }
    return classifier, stats


def _batches(items: Sequence[torch.Tensor], size: int, rng: random.Random | None) -> list[list[int]]:
    """Index batches of similar lengths, so little padding is computed; shuffled when rng is given."""
    order = list(range(len(items)))
    if rng is not None:
        rng.shuffle(order)
    batches = []
    # Sorting within windows of 50 batches keeps the order random while grouping lengths.
    for start in range(0, len(order), size * 50):
        window = sorted(order[start : start + size * 50], key=lambda i: items[i].shape[0])
        batches += [window[i : i + size] for i in range(0, len(window), size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(row.shape[0] for row in rows)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        mask[index, : row.shape[0]] = 1
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return padded, mask


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


# --- Calibration --------------------------------------------------------------------------------


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The softmax temperature that minimises the negative log-likelihood of the targets.

    A 1-D search over log-temperature: the NLL is convex in 1/T, so a golden-section search finds
    the optimum without an optimiser's learning rate to tune. Bounded to [0.05, 20].
    """
    low, high = math.log(0.05), math.log(20.0)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), targets))

    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(60):
        if nll(c) < nll(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return math.exp((a + b) / 2)


def calibrate(
    classifier: EncoderIntentClassifier, held_out: list[tuple[str, str]], recipe: ClassifierRecipe
) -> dict[str, Any]:
    """Fit the temperature and pick the recommended threshold on held-out examples, in place.

    Logits come from `predict`'s own path (one unpadded message at a time, int8), so the calibration
    holds for what is served.
    """
    classifier.margin = recipe.margin
    known = [(text, intent) for text, intent in held_out if intent in classifier.labels]
    if not known:
        classifier.threshold = recipe.min_threshold
        return {"held_out": 0, "note": "no held-out examples: temperature 1"}
    logits = torch.cat([classifier.logits([text]) for text, _ in known])
    targets = torch.tensor([classifier.labels.index(intent) for _, intent in known])
    before = torch.softmax(logits, dim=-1)
    classifier.temperature = fit_temperature(logits, targets)
    after = classifier.probabilities(logits)
    confidence, predicted = after.max(-1)
    correct = (predicted == targets).tolist()
    right = sorted(value for value, ok in zip(confidence.tolist(), correct, strict=True) if ok)
    quantile = right[int(recipe.in_scope_rejection * len(right))] if right else recipe.min_threshold
    classifier.threshold = round(min(recipe.max_threshold, max(recipe.min_threshold, quantile)), 3)
    return {
        "held_out": len(known),
        "temperature": round(classifier.temperature, 4),
        "nll_before": round(float(F.nll_loss(before.log(), targets)), 4),
        "nll_after": round(float(F.nll_loss(after.log(), targets)), 4),
        "ece_before": round(expected_calibration_error(before.max(-1).values.tolist(), correct), 4),
        "ece_after": round(expected_calibration_error(confidence.tolist(), correct), 4),
        "threshold": classifier.threshold,
        "margin": classifier.margin,
    }


# --- Evaluation ---------------------------------------------------------------------------------
