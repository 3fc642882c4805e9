"""Benchmark the intent classifier on BANKING77: full data, 10-shot, latency, out-of-scope detection.

Reads the data set from ../shared/data/banking77/ (never copied into the project). Trains with the
product's recipe (finetune.intents.ClassifierRecipe); `--split validation` scores on a part cut
from train.csv instead of test.csv, which is where recipe changes are to be tried. Run from the
repository root:

    .venv/bin/python tests/bench/bench_intents.py --json var/bench-intents.json
    .venv/bin/python tests/bench/bench_intents.py --quick          # a smoke run of a few minutes
"""

import argparse
import csv
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.intents import EncoderIntentClassifier, load_classifier  # noqa: E402
from finetune.intent_report import evaluate_classifier  # noqa: E402
from finetune.intents import (  # noqa: E402
    ClassifierRecipe,
    split_examples,
    train_intent_classifier,
)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
TARGETS = {"full_accuracy": 0.94, "few_shot_accuracy": 0.87, "latency_ms_p50": 5.0}
Rows = list[tuple[str, str]]


def read_rows(path: Path) -> Rows:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def sample_per_intent(rows: Rows, shots: int, seed: int) -> Rows:
    by_intent: dict[str, list[str]] = {}
    for text, intent in rows:
        by_intent.setdefault(intent, []).append(text)
    rng = random.Random(seed)
    return [(text, intent) for intent in sorted(by_intent) for text in rng.sample(sorted(by_intent[intent]), shots)]


@dataclass
class Setup:
    recipe: ClassifierRecipe
    workdir: Path
    intent_names: bool = True
    """Train on each intent's name in words ("card arrival") as its description, as the product trains
    on a pack's intent names and descriptions (BANKING77 has names only)."""


def train(rows: Rows, setup: Setup, name: str) -> tuple[EncoderIntentClassifier, dict]:
    started = time.monotonic()
    names = {intent: [intent.replace("_", " ")] for _, intent in rows} if setup.intent_names else None
    meta = train_intent_classifier(rows, output_dir=setup.workdir / name, recipe=setup.recipe, intent_texts=names)
    print(f"  trained {name} on {len(rows)} rows in {time.monotonic() - started:.0f} s", flush=True)
    return load_classifier(setup.workdir / name), meta


def full_data(train_rows: Rows, test_rows: Rows, setup: Setup) -> dict:
    classifier, meta = train(train_rows, setup, "full")
    load = os.getloadavg()[0]
    report = evaluate_classifier(classifier, test_rows)
    return {
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "latency_ms_p50": report.latency_ms_p50,
        "latency_ms_p95": report.latency_ms_p95,
        "load_average_during_latency": load,
        "confused": report.confused[:5],
        "training_seconds": meta["training"]["seconds"],
        "temperature": meta["temperature"],
        "threshold": meta["threshold"],
        "margin": meta["margin"],
        "held_out_ece": meta["calibration"].get("ece_after"),
    }


def few_shot(train_rows: Rows, test_rows: Rows, setup: Setup, shots: int, seeds: int) -> dict:
    runs = []
    for seed in range(seeds):
        classifier, meta = train(sample_per_intent(train_rows, shots, seed), setup, f"shots-{seed}")
        report = evaluate_classifier(classifier, test_rows)
        runs.append({"seed": seed, "accuracy": report.accuracy, "macro_f1": report.macro_f1})
        print(f"  seed {seed}: accuracy {report.accuracy:.4f}", flush=True)
    accuracies = [run["accuracy"] for run in runs]
    f1s = [run["macro_f1"] for run in runs]
    return {
        "shots": shots,
        "accuracy_mean": statistics.fmean(accuracies),
        "accuracy_std": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
        "macro_f1_mean": statistics.fmean(f1s),
        "macro_f1_std": statistics.stdev(f1s) if len(runs) > 1 else 0.0,
        "runs": runs,
    }


def out_of_scope(train_rows: Rows, test_rows: Rows, setup: Setup, held_out_intents: int) -> dict:
    """Train without some intents; their test messages should fall under the threshold or margin."""
    intents = sorted({intent for _, intent in train_rows})
    unseen = set(random.Random(0).sample(intents, held_out_intents))
    classifier, _ = train([row for row in train_rows if row[1] not in unseen], setup, "oos")
    threshold, margin = classifier.recommended["threshold"], classifier.recommended["margin"]
    in_scope = [row for row in test_rows if row[1] not in unseen]
    outside = [row for row in test_rows if row[1] in unseen]
    texts = [text for text, _ in in_scope + outside]
    predictions = [classifier.predict(text) for text in texts]

    def accepted(prediction) -> bool:
        return prediction.confidence >= threshold and prediction.margin >= margin

    inside_predictions, outside_predictions = predictions[: len(in_scope)], predictions[len(in_scope) :]
    right = [p.intent == intent for p, (_, intent) in zip(inside_predictions, in_scope, strict=True)]
    kept = [accepted(p) for p in inside_predictions]
    return {
        "unseen_intents": sorted(unseen),
        "threshold": threshold,
        "margin": margin,
        "in_scope_rows": len(in_scope),
        "oos_rows": len(outside),
        "in_scope_accuracy": sum(r and k for r, k in zip(right, kept, strict=True)) / len(in_scope),
        "in_scope_accuracy_without_rejection": sum(right) / len(in_scope),
        "in_scope_rejected": 1 - sum(kept) / len(in_scope),
        "oos_recall": sum(not accepted(p) for p in outside_predictions) / len(outside),
    }


def print_table(results: dict) -> None:
    full, shots, oos = results.get("full"), results.get("few_shot"), results.get("out_of_scope")
    rows = []
    if full:
        rows += [
            ("full: test accuracy", f"{full['accuracy']:.4f}", f">= {TARGETS['full_accuracy']}"),
            ("full: test macro-F1", f"{full['macro_f1']:.4f}", ""),
            ("latency p50 (ms)", f"{full['latency_ms_p50']:.2f}", f"<= {TARGETS['latency_ms_p50']}"),
            (
                "latency p95 (ms)",
                f"{full['latency_ms_p95']:.2f}",
                f"(load avg {full['load_average_during_latency']:.1f})",
            ),
            ("full: training (s)", f"{full['training_seconds']:.0f}", ""),
        ]
    if shots:
        rows += [
            (
                f"{shots['shots']}-shot accuracy ({len(shots['runs'])} seeds)",
                f"{shots['accuracy_mean']:.4f} ± {shots['accuracy_std']:.4f}",
                f">= {TARGETS['few_shot_accuracy']}",
            ),
            (f"{shots['shots']}-shot macro-F1", f"{shots['macro_f1_mean']:.4f} ± {shots['macro_f1_std']:.4f}", ""),
        ]
    if oos:
        rows += [
            ("OOS: threshold / margin", f"{oos['threshold']:.3f} / {oos['margin']:.3f}", ""),
            ("OOS: in-scope accuracy (accepted & right)", f"{oos['in_scope_accuracy']:.4f}", ""),
            ("OOS: in-scope accuracy, no rejection", f"{oos['in_scope_accuracy_without_rejection']:.4f}", ""),
            ("OOS: in-scope rejected", f"{oos['in_scope_rejected']:.4f}", ""),
            (f"OOS: recall ({len(oos['unseen_intents'])} unseen intents)", f"{oos['oos_recall']:.4f}", ""),
        ]
    width = max(len(row[0]) for row in rows)
    print(f"\n{'measure':<{width}}  {'value':>17}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>17}  {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.csv and test.csv")
    parser.add_argument("--split", choices=["test", "validation"], default="test",
                        help="score on test.csv, or on 10%% of train.csv held out (for trying recipes)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a small smoke run: subsets, 2 seeds")
    parser.add_argument("--only", choices=["full", "few_shot", "out_of_scope"], action="append")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--oos-intents", type=int, default=10)
    parser.add_argument("--recipe", type=json.loads, default={}, help="recipe overrides, e.g. '{\"epochs\": 3}'")
    parser.add_argument("--no-intent-names", action="store_true", help="train on the examples alone")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    train_rows = read_rows(args.data / "train.csv")
    if args.split == "validation":
        train_rows, test_rows = split_examples(train_rows, 0.1, seed=1234)
    else:
        test_rows = read_rows(args.data / "test.csv")
    seeds = args.seeds
    if args.quick:
        train_rows = sample_per_intent(train_rows, 20, seed=99)
        test_rows = random.Random(0).sample(test_rows, 600)
        seeds = min(seeds, 2)
    recipe = ClassifierRecipe(**args.recipe)
    parts = args.only or ["full", "few_shot", "out_of_scope"]
    results: dict = {"split": args.split, "quick": args.quick, "intent_names": not args.no_intent_names,
                     "recipe": asdict(recipe), "targets": TARGETS}  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-intents-") as tmp:
        setup = Setup(recipe, Path(tmp), intent_names=not args.no_intent_names)
        if "full" in parts:
            print("full training set", flush=True)
            results["full"] = full_data(train_rows, test_rows, setup)
        if "few_shot" in parts:
            print(f"{args.shots}-shot, {seeds} seeds", flush=True)
            results["few_shot"] = few_shot(train_rows, test_rows, setup, args.shots, seeds)
        if "out_of_scope" in parts:
            print(f"out of scope: {args.oos_intents} intents held out", flush=True)
            results["out_of_scope"] = out_of_scope(train_rows, test_rows, setup, args.oos_intents)
    results["seconds"] = round(time.monotonic() - started, 1)
    print_table(results)
    print(f"\ntotal {results['seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
