"""CLI for the learning loop: `supportbot train`, `evaluate`, `runs`, `promote`, `rollback`.

`train` runs a retraining job in the foreground with a progress bar; `train` and `evaluate` need vLLM
running (start the app first) because replies are generated through it.
"""

import json
import threading
import time
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine
from sqlmodel import Session

from cli.database import open_database
from cli.progress import training_progress
from conversations import crud
from core.settings import Settings, get_settings
from runtime.registry import AdapterNotFound, AdapterRegistry
from runtime.registry import promote as promote_version

console = Console()


def plan_preview(settings: Settings, engine: Engine) -> dict:
    """The app's `RunPlanner`: the trainer's plan for a run an admin queues, loaded only then, so the app starts
    (and runs, where retraining is queued for a worker) without the trainer's modules."""
    from finetune.worker import plan_preview as trainer_plan

    return trainer_plan(settings, engine)


def train(
    steps: Annotated[int | None, typer.Option(help="Override the recipe's maximum training steps.")] = None,
) -> None:
    """Retrain now: dataset from reviewed conversations, new adapter, evaluation, promotion if not worse."""
    from finetune.seed import training_pack
    from finetune.worker import execute_run, plan_summary, prepare_run

    settings = get_settings()
    engine = open_database(settings)
    with Session(engine) as session:
        try:
            run = crud.create_training_run(session=session, trigger="cli")
        except crud.RunAlreadyActive as error:
            console.print(f"[red]A retraining run is already going[/]: {error}")
            raise typer.Exit(1) from error
    overrides = {"max_steps": steps} if steps else None
    plan = asdict(prepare_run(settings, training_pack(settings), engine, overrides).plan)
    console.print(f"Plan: {plan_summary(plan)}")
    for note in plan["notes"]:
        console.print(f"[yellow]{note}[/]")
    worker = threading.Thread(target=execute_run, args=(run.id, settings, overrides), daemon=True)
    worker.start()
    with training_progress("{task.fields[stage]}", console) as progress:
        task = progress.add_task("run", total=None, stage="starting", loss="-")
        while worker.is_alive():
            with Session(engine) as session:
                state = crud.get_training_run(session=session, run_id=run.id).progress
            progress.update(
                task, completed=state.get("step", 0), total=state.get("total"), stage=state.get("stage", ""),
                loss=state.get("loss", "-"),
            )  # fmt: skip
            time.sleep(1)
    with Session(engine) as session:
        run = crud.get_training_run(session=session, run_id=run.id)
    console.print(f"Run {run.id}: [bold]{run.status}[/], adapter {run.adapter}, promoted: {run.promoted}")
    if run.report:
        decision = run.report["decision"]
        console.print(f"Decision: {decision.get('summary', '')}")
        console.print("Evaluation: " + "; ".join(decision["reasons"]))
    if run.error:
        console.print(f"[red]{run.error}[/]")
        raise typer.Exit(1)


class HeldOut(StrEnum):
    all = "all"
    store = "store"
    seed = "seed"


def evaluate(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Adapter versions, or the base model's served name; default: the one in service and base."),
    ] = None,
    source: Annotated[
        HeldOut,
        typer.Option(help="Held-out conversations from the store (logged or imported), the pack's seeds, or both."),
    ] = HeldOut.all,
    max_conversations: Annotated[
        int | None, typer.Option(min=1, help="Most held-out conversations (default SUPPORTBOT_EVAL_MAX_CONVERSATIONS).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the scores and sample replies here as JSON.")] = None,
) -> None:
    """Score adapters on the held-out conversations that training never sees: loss, ROUGE-L, must-pass checks.

    The held-out set is built from the store exactly as retraining builds it (reviewed conversations marked
    for training, corrections in place of the replies they corrected, personal data masked), so a company's
    own transcripts, imported with `supportbot store import`, are scored the same way as the demo's.
    """
    from bot.replicas import first_healthy
    from finetune.dataset import DatasetRecipe
    from finetune.seed import training_pack
    from finetune.worker import model_scores, source_conversations, training_dataset, with_customer_checks

    settings = get_settings()
    pack = training_pack(settings)
    engine = open_database(settings)
    with Session(engine) as session:
        sources = [item for item in source_conversations(session, pack) if source in (HeldOut.all, item.source)]
    dataset = training_dataset(sources, DatasetRecipe())
    records = dataset.held_out(max_conversations or settings.eval_max_conversations)
    if not records:
        console.print(
            f"[red]No held-out conversations[/] among {len(sources)} ({source}): a conversation is held out by "
            "its id (about one in five); mark more reviewed conversations for training, or import some."
        )
        raise typer.Exit(2)
    registry = AdapterRegistry(settings.adapters_dir)
    names = models or [name for name in (registry.active(), settings.served_model_name) if name]
    unknown = [name for name in names if name != settings.served_model_name and name not in registry.versions()]
    if unknown:
        console.print(f"[red]No adapter version {', '.join(unknown)}[/]; versions: {', '.join(registry.versions())}, "
                      f"and {settings.served_model_name} for the base model")  # fmt: skip
        raise typer.Exit(2)
    try:
        first_healthy(settings.vllm_replica_urls)
    except RuntimeError as error:
        console.print(f"[red]vLLM is not reachable[/] ({error}); start the application first (`make start`).")
        raise typer.Exit(2) from error
    console.print(f"{len(records)} held-out conversations (dataset {dataset.content_hash[:16]}, source {source})")
    scores = {}
    for name in names:
        with console.status(f"scoring {name}"):
            scores[name] = model_scores(settings, pack, records, name)
    with console.status("the must-pass checks as customers get them"):
        with_customer_checks(settings, pack, first_healthy(settings.vllm_replica_urls), list(scores.values()))
    table = Table("model", "loss", "perplexity", "ROUGE-L", "must-pass checks, bare model", "as customers get them")
    for name, score in scores.items():
        table.add_row(name, str(score.loss), str(score.perplexity), str(score.rouge_l),
                      f"{score.checks_passed}/{score.checks_total}",
                      f"{score.customer_checks_passed}/{score.customer_checks_total}")  # fmt: skip
    console.print(table)
    by_source = Table("model", "source", "conversations", "turns", "loss", "ROUGE-L", title="By source")
    for name, score in scores.items():
        for part, values in sorted(score.by_source.items()):
            by_source.add_row(name, part, *(str(values.get(key, "")) for key in ("conversations", "turns", "loss",
                                                                                 "rouge_l")))  # fmt: skip
    if by_source.rows:
        # The company's own conversations ("store") and the pack's seeds, as the retraining gate weighs them.
        console.print(by_source)
    if report is not None:
        report.write_text(json.dumps({"dataset": dataset.content_hash, "source": str(source),
                                      "held_out_conversations": len(records),
                                      "models": {name: asdict(score) for name, score in scores.items()}},
                                     indent=2))  # fmt: skip
        console.print(f"Report written to {report}")


def runs() -> None:
    """List retraining runs, newest first."""
    settings = get_settings()
    engine = open_database(settings)
    table = Table("id", "status", "trigger", "adapter", "promoted", "started", "held-out loss", "ROUGE-L")
    with Session(engine) as session:
        for run in crud.list_training_runs(session=session):
            candidate = (run.report or {}).get("candidate") or {}
            table.add_row(
                str(run.id), run.status, run.trigger, run.adapter or "", "yes" if run.promoted else "",
                f"{run.started_at:%Y-%m-%d %H:%M}" if run.started_at else "", str(candidate.get("loss", "")),
                str(candidate.get("rouge_l", "")),
            )  # fmt: skip
    console.print(table)


def promote(name: Annotated[str, typer.Argument(help="Adapter version, e.g. domain-v3.")]) -> None:
    """Serve this adapter version; the running app switches to it within seconds, without a restart."""
    registry = AdapterRegistry(get_settings().adapters_dir)
    try:
        promote_version(registry, name)
    except AdapterNotFound as error:
        console.print(f"[red]No adapter version {name}[/]; versions: {', '.join(registry.versions())}")
        raise typer.Exit(1) from error
    console.print(f"{name} promoted.")


def rollback() -> None:
    """Go back to the adapter version that was in service before the current one."""
    registry = AdapterRegistry(get_settings().adapters_dir)
    previous = registry.previous()
    if previous is None:
        console.print("[red]Nothing to roll back to.[/]")
        raise typer.Exit(1)
    promote_version(registry, previous)
    console.print(f"Rolled back to {previous}.")


def register(app: typer.Typer) -> None:
    for command in (train, evaluate, runs, promote, rollback):
        app.command()(command)
