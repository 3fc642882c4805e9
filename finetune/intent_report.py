"""How well an intent classifier does on labelled messages: accuracy, macro-F1, confusions, latency."""

import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bot.intents import IntentClassifier


@dataclass
class IntentReport:
    """How a classifier did on labelled utterances."""

    examples: int
    accuracy: float
    macro_f1: float
    confused: list[tuple[str, str, int]]
    """The most frequent (true intent, predicted intent, count) mistakes, most frequent first."""
    latency_ms_p50: float
    latency_ms_p95: float
    per_intent_f1: dict[str, float]
    unknown_labels: int = 0
    """Examples whose intent the classifier does not know (counted as mistakes)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_classifier(
    classifier: IntentClassifier, examples: Sequence[tuple[str, str]], *, top_confusions: int = 10
) -> IntentReport:
    """Accuracy, macro-F1 over the true intents, the most confused pairs, and per-message latency.

    Every message goes through `predict` one at a time, as in service, and is timed.
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    for text, _ in examples[:5]:  # warm-up: first calls pay for lazy initialisation
        classifier.predict(text)
    predicted, latencies = [], []
    for text, _ in examples:
        started = time.perf_counter()
        predicted.append(classifier.predict(text).intent)
        latencies.append((time.perf_counter() - started) * 1000)
    truth = [intent for _, intent in examples]
    known = set(classifier.labels)
    pairs = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    f1 = {}
    for intent in sorted(set(truth)):
        true_positive = sum(1 for t, p in zip(truth, predicted, strict=True) if t == p == intent)
        predicted_count = predicted.count(intent)
        actual = truth.count(intent)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / actual
        f1[intent] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    latencies.sort()
    return IntentReport(
        examples=len(examples),
        accuracy=sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(examples),
        macro_f1=statistics.fmean(f1.values()),
        confused=[(t, p, n) for (t, p), n in pairs.most_common(top_confusions)],
        latency_ms_p50=_percentile(latencies, 0.5),
        latency_ms_p95=_percentile(latencies, 0.95),
        per_intent_f1={intent: round(value, 4) for intent, value in f1.items()},
        unknown_labels=sum(1 for t in truth if t not in known),
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
