"""`supportbot kb ...`: the knowledge base's help articles from the command line (import, list, retire).

A running app picks every change up within seconds, in every replica, without a restart.
"""

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from bot.articles import ArticleError, read_articles
from bot.domain import load_pack
from cli.database import open_database
from cli.selection import train_answer_selector
from conversations import crud
from conversations import knowledge as kb
from core.settings import get_settings

kb_app = typer.Typer(help="Help articles of the knowledge base the bot answers from.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

By = Annotated[str | None, typer.Option("--by", help="Who makes the change, for the history (default: your user).")]


def _session() -> Session:
    """A session on the store, with the domain pack's articles imported if the knowledge base is empty,
    as the app does on first start, so the CLI and the app always see the same articles."""
    settings = get_settings()
    session = Session(open_database(settings))
    pack = load_pack(settings.domain_pack)
    drafts = [kb.ArticleDraft(article.slug, article.title, article.text) for article in pack.articles]
    kb.seed_articles(session=session, drafts=drafts, source=f"domain pack {pack.name}")
    return session


def _who(by: str | None) -> str:
    return by or f"{getpass.getuser()} (command line)"


@kb_app.command("import")
def import_articles(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders: Markdown, plain text, HTML or PDF.")],
    by: By = None,
    train_selector: Annotated[
        bool, typer.Option(help="Train the answer selector on the new content afterwards (a few minutes).")
    ] = False,
) -> None:
    """Import help articles, one per file, named by the file (returns.md is article "returns").

    An article that exists gets a new version; one with unchanged text is left as it is. Every file is
    read and checked first: if any is bad, nothing is imported."""
    try:
        articles = read_articles(paths)
    except ArticleError as err:
        err_console.print(f"[red]Nothing imported.[/] {err}")
        raise typer.Exit(1) from None
    who = _who(by)
    with _session() as session:
        saved = kb.save_articles(
            session=session,
            drafts=[kb.ArticleDraft(article.slug, article.title, article.text) for _, article in articles],
            changed_by=who,
            source=[str(path.resolve()) for path, _ in articles],
        )
        changed = {result.article.slug: str(result.change) for result in saved if result.change is not None}
        if changed:
            crud.record_audit(
                session=session, actor_id=None, action="kb.import", target=", ".join(sorted(changed))[:200],
                details={"articles": changed, "by": who, "via": "command line"},
            )  # fmt: skip
        table = Table("article", "title", "version", "change")
        for result in saved:
            article = result.article
            table.add_row(article.slug, article.title, str(article.version), str(result.change or "unchanged"))
        console.print(table)
        console.print(f"[green]{len(changed)} of {len(saved)} article(s) created or updated.[/]")
        if train_selector and changed:
            train_answer_selector(get_settings(), session, console)
        elif changed and get_settings().answer_selection == "learned":
            console.print("The answer selector learns the new content with `supportbot kb train-selector`.")


@kb_app.command("train-selector")
def train_selector_command() -> None:
    """Train the answer selector on the live help articles and the pack's conversations; promoted unless worse."""
    with _session() as session:
        train_answer_selector(get_settings(), session, console)


@kb_app.command("list")
def list_articles(
    retired: Annotated[bool, typer.Option("--retired", help="Include retired articles.")] = False,
) -> None:
    """List the help articles, with their version and last change."""
    with _session() as session:
        articles = kb.list_articles(session=session, include_retired=retired)
    table = Table("article", "version", "status", "updated", "by")
    table.add_column("title", no_wrap=True, overflow="ellipsis", max_width=60)
    for article in articles:
        table.add_row(
            article.slug, str(article.version), "retired" if article.retired else "live",
            f"{article.updated_at:%Y-%m-%d %H:%M}", article.updated_by, article.title,
        )  # fmt: skip
    console.print(table if articles else "No help articles yet: add some with `supportbot kb import PATH`.")


@kb_app.command("history")
def history(slug: Annotated[str, typer.Argument(help="The article, e.g. returns.")]) -> None:
    """Every saved version of one article: who changed it, when, and how."""
    with _session() as session:
        try:
            versions = kb.article_history(session=session, slug=slug)
        except kb.ArticleNotFound:
            err_console.print(f"[red]No help article {slug!r}.[/] See `supportbot kb list --retired`.")
            raise typer.Exit(1) from None
    table = Table("version", "change", "when", "by", "source", "words")
    for version in versions:
        table.add_row(
            str(version.version), str(version.change), f"{version.at:%Y-%m-%d %H:%M:%S}", version.changed_by,
            version.source, str(len(version.text.split())),
        )  # fmt: skip
    console.print(table)


@kb_app.command("retire")
def retire(slug: Annotated[str, typer.Argument(help="The article, e.g. returns.")], by: By = None) -> None:
    """Stop answering from an article; its history stays, and importing it again brings it back."""
    who = _who(by)
    with _session() as session:
        try:
            article = kb.retire_article(session=session, slug=slug, changed_by=who)
        except kb.ArticleNotFound:
            err_console.print(f"[red]No help article {slug!r}.[/] See `supportbot kb list`.")
            raise typer.Exit(1) from None
        version = article.version
        crud.record_audit(
            session=session, actor_id=None, action="kb.retire", target=f"article:{slug}",
            details={"by": who, "version": version, "via": "command line"},
        )  # fmt: skip
    console.print(f"[green]Article {slug} retired[/] (version {version}); the bot no longer answers from it.")
