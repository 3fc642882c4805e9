"""The progress bar that every training command shows."""

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def training_progress(label: str, console: Console) -> Progress:
    """The progress bar of every training command: `label` (it may name task fields), steps, loss, times."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
