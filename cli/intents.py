"""`supportbot intents ...`: train the intent classifier on the domain pack's examples, and evaluate it.

Classifiers are versioned under `<data dir>/classifiers/intent-vN`; the app picks up the promoted one.
"""

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.progress import training_progress
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from finetune.classifiers import TrainedClassifier
    from finetune.intent_report import IntentReport
    from finetune.intents import ClassifierRecipe

intents_app = typer.Typer(
    help="The intent classifier: train it on the domain pack's examples, evaluate it.", no_args_is_help=True
)
console = Console()


def train_pack_classifier(
    settings: Settings, recipe: "ClassifierRecipe | None" = None, console: Console = console
) -> "TrainedClassifier":
    """Train a new classifier version on the configured pack with a progress bar; promoted if not worse."""
    from finetune.classifiers import train_pack_classifier as train

    with training_progress("Training intent classifier {task.fields[name]}", console) as progress:
        task = progress.add_task("train", total=None, loss="-", name="")

        def on_progress(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, loss=f"{loss:.3f}")

        trained = train(
            settings, recipe, on_progress=on_progress, on_start=lambda name: progress.update(task, name=name)
        )
    _print_training(trained.name, trained.meta, trained.promoted, trained.reason, console)
    return trained


def _print_training(name: str, meta: dict[str, Any], promoted: bool, reason: str, console: Console) -> None:
    metrics, training = meta.get("metrics") or {}, meta["training"]
    console.print(
        f"[green]Intent classifier {name} trained[/]: {meta['examples']['train']} examples, "
        f"{meta['examples']['intents']} intents, {training['steps']} steps in {training['seconds']:.0f} s"
    )
    if metrics:
        console.print(
            f"Held-out ({meta['examples']['held_out']} examples): accuracy {metrics['accuracy']:.3f}, "
            f"macro-F1 {metrics['macro_f1']:.3f}, latency p50 {metrics['latency_ms_p50']:.1f} ms "
            f"p95 {metrics['latency_ms_p95']:.1f} ms"
        )
    console.print(
        f"Calibration: temperature {meta['temperature']:.2f}; recommended threshold {meta['threshold']:.2f}, "
        f"margin {meta['margin']:.2f}"
    )
    console.print(f"{'[green]Promoted[/]' if promoted else '[yellow]Not promoted[/]'} ({reason})")


@intents_app.command()
def train(
    epochs: Annotated[float | None, typer.Option(help="Override the recipe's passes over the examples.")] = None,
) -> None:
    """Train a new classifier on the domain pack's examples; promote it if it is not worse."""
    from finetune.intents import ClassifierRecipe

    recipe = ClassifierRecipe(epochs=epochs) if epochs else ClassifierRecipe()
    train_pack_classifier(get_settings(), recipe)


def read_labelled_csv(path: Path) -> list[tuple[str, str]]:
    """(text, intent) pairs from a CSV file with `text` and `category` columns."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"text", "category"} - set(reader.fieldnames or [])
            if missing:
                raise typer.BadParameter(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            rows = [(row["text"], row["category"]) for row in reader if (row["text"] or "").strip()]
    except OSError as error:
        raise typer.BadParameter(f"{path}: cannot read: {error}") from error
    if not rows:
        raise typer.BadParameter(f"{path}: no rows")
    return rows


@intents_app.command()
def evaluate(
    data: Annotated[
        Path | None, typer.Option(help="CSV file with text,category columns; default: the pack's held-out split.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Where to write the JSON report.")] = None,
) -> None:
    """Evaluate the promoted classifier: accuracy, macro-F1, most confused intents, latency."""
    from bot.domain import load_pack
    from bot.intents import load_classifier
    from finetune.intent_report import evaluate_classifier
    from finetune.intents import ClassifierRecipe, examples_from_pack, held_out_examples
    from runtime.registry import classifier_registry

    settings = get_settings()
    registry = classifier_registry(settings.classifiers_dir)
    active = registry.active()
    if active is None:
        console.print("[red]No intent classifier has been promoted yet[/]: run `supportbot intents train`.")
        raise typer.Exit(1)
    classifier = load_classifier(registry.path(active))
    if data is None:
        stored = registry.metadata(active).get("recipe", {})
        recipe = ClassifierRecipe(**{key: stored[key] for key in _SPLIT_FIELDS if key in stored})
        examples = held_out_examples(examples_from_pack(load_pack(settings.domain_pack)), recipe)
        source = f"held-out split of {settings.domain_pack}"
    else:
        examples = read_labelled_csv(data)
        source = str(data)
    with console.status(f"Classifying {len(examples)} messages with {active}..."):
        result = evaluate_classifier(classifier, examples)
    _print_report(active, source, result)
    if report is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report = settings.data_dir / "reports" / f"intents-{active}-{stamp}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"classifier": active, "data": source, **result.to_dict()}, indent=2) + "\n")
    console.print(f"Report written to {report}")


_SPLIT_FIELDS = ("holdout_fraction", "max_holdout_per_intent", "seed")


def _print_report(name: str, source: str, result: "IntentReport") -> None:
    console.print(f"[bold]{name}[/] on {result.examples} messages ({source})")
    console.print(
        f"accuracy {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}, "
        f"latency p50 {result.latency_ms_p50:.1f} ms, p95 {result.latency_ms_p95:.1f} ms"
    )
    if result.unknown_labels:
        console.print(f"[yellow]{result.unknown_labels} messages have intents this classifier does not know[/]")
    if result.confused:
        table = Table("intent", "taken for", "times", title="Most confused")
        for truth, predicted, count in result.confused:
            table.add_row(truth, predicted, str(count))
        console.print(table)
