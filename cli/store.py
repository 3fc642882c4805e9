"""`supportbot store ...`: export transcripts, import a company's history, apply the retention policy.

Each command opens the configured database and brings its schema up to date first.
"""

import os
import sys
import tempfile
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console

from core.settings import get_settings

store_app = typer.Typer(help="The conversation store: export, import, retention.", no_args_is_help=True)
# Exports may go to standard output, so everything said to the user goes to standard error, unwrapped.
console = Console(stderr=True, soft_wrap=True)


class ExportFormat(StrEnum):
    """File formats of an export."""

    jsonl = "jsonl"
    csv = "csv"


class RetentionChoice(StrEnum):
    """What the retention job does to old conversations."""

    anonymise = "anonymise"
    delete = "delete"


@contextmanager
def _store_session():
    from sqlmodel import Session

    from cli.database import open_database

    engine = open_database(get_settings())
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


@contextmanager
def _output(path: Path | None):
    """Standard output, or a file that appears complete or not at all (written aside, then renamed)."""
    if path is None:
        yield sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            yield stream
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


@store_app.command()
def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write; standard output if left out.")
    ] = None,
    file_format: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl: OpenAI chat format; csv: a row per message.")
    ] = ExportFormat.jsonl,
    no_mask: Annotated[bool, typer.Option("--no-mask", help="Keep e-mail addresses, phone and card numbers.")] = False,
    status: Annotated[str | None, typer.Option(help="bot, pending_human, human or resolved.")] = None,
    channel: Annotated[str | None, typer.Option(help="api, widget, import...")] = None,
    created_from: Annotated[str | None, typer.Option(help="Started on or after (YYYY-MM-DD or ISO time).")] = None,
    created_to: Annotated[str | None, typer.Option(help="Started on or before (a date includes that day).")] = None,
    intent: Annotated[str | None, typer.Option(help="Any customer message with this intent.")] = None,
    rating: Annotated[str | None, typer.Option(help="Any reply a reviewer rated good or bad.")] = None,
    feedback: Annotated[str | None, typer.Option(help="Any reply a customer rated up or down.")] = None,
    handed_off: Annotated[
        bool | None, typer.Option("--handed-off/--not-handed-off", help="Handed to a human or flagged.")
    ] = None,
    low_confidence: Annotated[float | None, typer.Option(help="Any customer message understood below this.")] = None,
    reviewed: Annotated[bool | None, typer.Option("--reviewed/--not-reviewed")] = None,
    for_training: Annotated[bool | None, typer.Option("--for-training/--not-for-training")] = None,
    tag: Annotated[str | None, typer.Option(help="Conversations with this tag.")] = None,
    search: Annotated[str | None, typer.Option(help="Words anywhere in the messages.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many conversations.")] = None,
    max_rows: Annotated[int | None, typer.Option(help="Refuse exports larger than this many rows.")] = None,
) -> None:
    """Export transcripts with their reviews, oldest first; personal data is masked unless --no-mask."""
    from conversations.filters import ConversationFilter, InvalidFilter
    from conversations.transfer import MAX_EXPORT_ROWS, ExportTooLarge, export_csv, export_jsonl

    raw = {
        "status": status,
        "channel": channel,
        "created_from": created_from,
        "created_to": created_to,
        "intent": intent,
        "rating": rating,
        "feedback": feedback,
        "handed_off": handed_off,
        "low_confidence": low_confidence,
        "reviewed": reviewed,
        "use_for_training": for_training,
        "tag": tag,
        "search": search,
    }
    try:
        filters = ConversationFilter(**{key: value for key, value in raw.items() if value is not None}, limit=limit)
    except InvalidFilter as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None
    exporter = export_jsonl if file_format == ExportFormat.jsonl else export_csv
    written = 0
    with _store_session() as session:
        try:
            lines = exporter(session=session, filters=filters, mask=not no_mask, max_rows=max_rows or MAX_EXPORT_ROWS)
        except ExportTooLarge as error:
            console.print(f"[red]Export refused[/]: {error} (--max-rows)")
            raise typer.Exit(1) from None
        with _output(output) as stream:
            for line in lines:
                stream.write(line)
                written += 1
    rows = written - 1 if file_format == ExportFormat.csv else written
    unit = "messages" if file_format == ExportFormat.csv else "conversations"
    masked = "unmasked" if no_mask else "personal data masked"
    console.print(f"[green]Exported[/] {max(rows, 0)} {unit} ({masked}) to {output or 'standard output'}")


@store_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A JSONL file in the export format; '-' reads standard input.")],
) -> None:
    """Import conversations from JSONL, all or none; they get channel 'import' and fresh tokens."""
    from conversations.transfer import ImportFailed, import_jsonl

    if str(path) != "-" and not path.is_file():
        console.print(f"[red]No such file[/]: {path}")
        raise typer.Exit(2)
    with _store_session() as session, _input(path) as stream:
        try:
            result = import_jsonl(session=session, lines=stream)
        except ImportFailed as error:
            console.print(f"[red]{error}[/]", markup=False)
            raise typer.Exit(1) from None
    console.print(f"[green]Imported[/] {result.conversations} conversations ({result.messages} messages) from {path}")


@contextmanager
def _input(path: Path):
    if str(path) == "-":
        yield sys.stdin
        return
    stream: IO[str]
    with path.open(encoding="utf-8") as stream:
        yield stream


@store_app.command()
def retention(
    keep_days: Annotated[
        int | None, typer.Option(help="Days kept after the last activity (default: the setting).")
    ] = None,
    mode: Annotated[RetentionChoice | None, typer.Option(help="anonymise or delete (default: the setting).")] = None,
) -> None:
    """Apply the retention policy now: anonymise or delete conversations idle longer than the period."""
    from conversations.retention import apply_retention

    settings = get_settings()
    days = keep_days if keep_days is not None else settings.retention_days
    chosen = mode.value if mode is not None else settings.retention_mode
    if days < 1:
        console.print(f"[red]--keep-days must be at least 1[/], got {days}")
        raise typer.Exit(2)
    with _store_session() as session:
        result = apply_retention(
            session=session,
            keep_days=days,
            mode=chosen,
            datasets_dir=settings.data_dir / "datasets",  # type: ignore[arg-type]
        )
    done = "deleted" if chosen == "delete" else "anonymised"
    messages = "messages deleted" if chosen == "delete" else "messages had personal data masked"
    console.print(
        f"Conversations idle since before {result.cutoff:%Y-%m-%d %H:%M} UTC: "
        f"{result.conversations} {done}, {result.messages} {messages}; {result.datasets} training dataset(s) "
        f"holding them deleted, samples dropped from {result.reports} old retraining report(s)"
    )


@store_app.command()
def erase(
    email: Annotated[str, typer.Option(help="The customer's e-mail address.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Erase without asking (scripts; re-applying after a restore).")
    ] = False,
) -> None:
    """Erase everything stored about a customer (as the console's Customer data page does); audited."""
    from conversations import crud
    from conversations.data_rights import InvalidEmail, erase_customer, find_customer

    settings = get_settings()
    with _store_session() as session:
        try:
            found = find_customer(session=session, email=email)
        except InvalidEmail as error:
            console.print(f"[red]{error}[/]")
            raise typer.Exit(2) from None
        if found and not yes and not typer.confirm(f"Erase {len(found)} conversation(s) holding {email}?"):
            raise typer.Exit(1)
        result = erase_customer(session=session, email=email, datasets_dir=settings.data_dir / "datasets")
        crud.record_audit(session=session, actor_id=None, action="data.erase", target="customer",
                          details={"conversations": result.conversations, "messages": result.messages})  # fmt: skip
    console.print(
        f"Erased {result.conversations} conversation(s) and {result.messages} message(s); {result.datasets} training "
        f"dataset(s) deleted, samples dropped from {result.reports} retraining report(s)"
    )
