"""Training the answer selector from the command line: first start, `supportbot kb train-selector`, and after a
knowledge-base import (`supportbot kb import --train-selector`)."""

from rich.console import Console
from sqlmodel import Session

from cli.progress import training_progress
from conversations import crud
from core.settings import Settings


def train_answer_selector(settings: Settings, session: Session | None, console: Console) -> None:
    """Train a selector version on the live help articles (the pack's when there is no store yet) and the questions
    teammates answered where the bot could not, with a progress bar; it is promoted unless it decides the new held-out
    questions worse than the one in service (the scores' rules, before any)."""
    from bot.domain import load_pack
    from finetune.seed import training_pack
    from finetune.selection import train_selector_version
    from runtime.dialogue import live_articles

    pack = training_pack(settings)
    articles = (live_articles(session) if session is not None else []) or load_pack(settings.domain_pack).articles
    # Questions the bot could not answer and a teammate did: once the answer is a snippet, it is an answer to learn.
    reviewed = crud.answered_gaps(session=session) if session is not None else []
    with training_progress("Reading questions for answer selector {task.fields[name]}", console) as progress:
        task = progress.add_task("train", total=None, loss="-", name="")

        def on_progress(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, loss=f"{loss:.3f}")

        trained = train_selector_version(
            settings, pack, articles, reviewed=reviewed, on_progress=on_progress,
            on_start=lambda name: progress.update(task, name=name),
        )  # fmt: skip
    meta = trained.meta
    held, rules = meta.get("held_out") or {}, meta.get("rules_held_out") or {}
    sources = ", ".join(f"{n} {source}" for source, n in meta["by_source"].items())
    console.print(
        f"[green]Answer selector {trained.name} trained[/] on {meta['articles']} articles from {meta['questions']} "
        f"questions ({sources}) in {meta['seconds']:.1f} s"
    )
    console.print(
        f"Held-out questions: answered {held.get('answered', 0)}, not sure {held.get('not_sure', 0)}, guessed "
        f"{held.get('guessed', 0)}, declined {held.get('declined', 0)} at {held.get('threshold', 0.5):.2f}; "
        f"the scores' rules: answered {rules.get('answered', 0)}, not sure {rules.get('not_sure', 0)}, guessed "
        f"{rules.get('guessed', 0)}, declined {rules.get('declined', 0)}"
    )
    console.print(f"{'[green]Promoted[/]' if trained.promoted else '[yellow]Not promoted[/]'} ({trained.reason})")
    if settings.answer_selection != "learned":
        console.print("The app uses it with SUPPORTBOT_ANSWER_SELECTION=learned (the scores' rules decide by default).")
