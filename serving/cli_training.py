"""CLI for the learning loop: `supportbot train`, `runs`, `promote`, `rollback`.

`train` runs a retraining job in the foreground with a progress bar; it needs vLLM running (start the
app first) because candidates are evaluated through it.
"""

import threading
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlmodel import Session

from conversations import crud
from conversations.db import init_db, make_engine
from finetune.registry import AdapterNotFound, AdapterRegistry
from serving.settings import get_settings

console = Console()


def train(
    steps: Annotated[int | None, typer.Option(help="Override the recipe's maximum training steps.")] = None,
) -> None:
    """Retrain now: dataset from reviewed conversations, new adapter, evaluation, promotion if not worse."""
    from finetune.worker import execute_run

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    with Session(engine) as session:
        try:
            run = crud.create_training_run(session=session, trigger="cli")
        except crud.RunAlreadyActive as error:
            console.print(f"[red]A retraining run is already going[/]: {error}")
            raise typer.Exit(1) from error
    worker = threading.Thread(
        target=execute_run, args=(run.id, settings, {"max_steps": steps} if steps else None), daemon=True
    )
    worker.start()
    with Progress(
        TextColumn("{task.fields[stage]}"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
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
        console.print("Evaluation: " + "; ".join(decision["reasons"]))
    if run.error:
        console.print(f"[red]{run.error}[/]")
        raise typer.Exit(1)


def runs() -> None:
    """List retraining runs, newest first."""
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
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
        registry.promote(name)
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
    registry.promote(previous)
    console.print(f"Rolled back to {previous}.")


def register(app: typer.Typer) -> None:
    for command in (train, runs, promote, rollback):
        app.command()(command)
