"""Operations commands: `supportbot backup` / `restore`, and `supportbot worker` for retraining elsewhere.

The worker claims runs the app queued (SUPPORTBOT_TRAINING_RUNNER=queue) and trains them on its own machine.
"""

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.settings import get_settings
from serving.logging import configure_logging

console = Console(stderr=True, soft_wrap=True)


def backup(
    destination: Annotated[Path, typer.Argument(help="Folder the archive is written to.")],
    pg_bin_dir: Annotated[Path | None, typer.Option(help="Folder of pg_dump/pg_restore/psql (default: PATH).")] = None,
) -> None:
    """Back up the database and the adapter and classifier stores into one archive with checksums."""
    from cli.database import check_database
    from conversations.backup import BackupError, PgTools, create_backup

    check_database(get_settings())
    try:
        with console.status("Backing up the database and the model stores..."):
            archive = create_backup(get_settings(), destination, PgTools(pg_bin_dir))
    except BackupError as error:
        console.print(f"[red]Backup failed[/]: {error}")
        raise typer.Exit(1) from error
    print(archive)


def restore(
    archive: Annotated[Path, typer.Argument(help="A backup archive made by `supportbot backup`.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before replacing the store.")] = False,
    check_only: Annotated[bool, typer.Option("--check", help="Only verify the archive's checksums.")] = False,
    pg_bin_dir: Annotated[Path | None, typer.Option(help="Folder of pg_dump/pg_restore/psql (default: PATH).")] = None,
) -> None:
    """Replace the database and the model stores with a backup's, after checking every checksum.

    Stop the app and the training worker first.
    """
    import tempfile

    from conversations.backup import BackupError, PgTools, restore_backup, verify_archive

    settings = get_settings()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            _, manifest = verify_archive(archive, Path(scratch), settings.secret_key)
        console.print(
            f"[green]Archive verified[/]: {len(manifest['files'])} files, made {manifest['created_at']}, "
            f"{manifest['database']['dialect']} database at migration {manifest['database']['revision']}"
        )
        if check_only:
            return
        if not yes:
            typer.confirm(
                f"Replace the database ({settings.resolved_database_url.split('@')[-1]}) and the stores in "
                f"{settings.data_dir} with this backup?",
                abort=True,
            )
        with console.status("Restoring..."):
            restore_backup(settings, archive, PgTools(pg_bin_dir))
    except BackupError as error:
        console.print(f"[red]Restore failed[/]: {error}")
        raise typer.Exit(1) from error
    console.print("[green]Restored.[/] Start the app: it brings the schema up to date and reloads the adapters.")


def worker(
    once: Annotated[bool, typer.Option(help="Run at most one queued run, then exit (a Kubernetes Job).")] = False,
    poll_s: Annotated[float, typer.Option(help="Seconds between looks for a queued run.")] = 10.0,
    wait_s: Annotated[float, typer.Option(help="With --once: how long to wait for a queued run.")] = 0.0,
) -> None:
    """Claim retraining runs the app queued and run them here, one at a time (a GPU machine or Job).

    Only one worker may run at a time: at start it marks runs a previous worker left running as interrupted.
    """
    from sqlmodel import Session

    from cli.database import open_database
    from conversations import crud
    from conversations.models import RunStatus
    from finetune.worker import execute_run

    settings = get_settings()
    configure_logging(settings.resolved_log_format)
    engine = open_database(settings)
    with Session(engine) as session:
        for run in crud.training_runs_with_status(session=session, statuses=[RunStatus.running]):
            crud.update_training_run(
                session=session, run_id=run.id, status=RunStatus.interrupted, error="the worker running it stopped"
            )
            console.print(f"run {run.id} was left running by a worker that stopped: marked interrupted")
    deadline = time.monotonic() + wait_s
    while True:
        with Session(engine) as session:
            run = crud.claim_training_run(session=session, worker_pid=os.getpid())
        if run is not None:
            console.print(f"running retraining run {run.id} ({run.trigger})")
            execute_run(run.id, settings)
            if once:
                return
            continue
        if once and time.monotonic() >= deadline:
            console.print("no queued retraining run")
            return
        time.sleep(poll_s)


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
    app.command()(worker)
