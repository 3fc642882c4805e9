"""`supportbot pack ...`: start a company's own domain pack, and check one without starting the application.

`pack init` writes the starter pack (bot/packs/starter/): no seed conversations and no checks.yaml, so the bot learns
from the company's reviewed conversations and is judged on them and on generic safety checks.
"""

import json
import re
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bot.domain import DomainPack, DomainPackError, default_pack_path, load_pack
from core.settings import get_settings

pack_app = typer.Typer(help="Domain packs: a company's own, or a check of one.", no_args_is_help=True)
console = Console()

STARTER = default_pack_path().parent / "starter"
# The starter's stand-ins, replaced by the company's own.
STARTER_COMPANY = "Example Co"
STARTER_EMAIL = "support@example.com"


def pack_id(folder: Path) -> str:
    """A pack id (lower-case letters, digits, _ and -) from the folder's name."""
    slug = re.sub(r"[^a-z0-9_-]+", "_", folder.name.lower()).strip("_-")
    return slug or "company"


def write_starter_pack(folder: Path, company: str, email: str) -> DomainPack:
    """Copy the starter pack into `folder` (new or empty) for `company`, answering at `email`; returns it loaded."""
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty")
    shutil.copytree(STARTER, folder, dirs_exist_ok=True)
    for path in [folder / "pack.yaml", folder / "intents.yaml", *(folder / "help").glob("*.md")]:
        text = path.read_text(encoding="utf-8")
        if path.name == "pack.yaml":
            # Quoted, so a name such as "Acme: Tools & Co" stays one YAML string.
            text = text.replace("name: starter\n", f"name: {pack_id(folder)}\n")
            text = text.replace(f"company_name: {STARTER_COMPANY}\n", f"company_name: {json.dumps(company)}\n")
        path.write_text(text.replace(STARTER_COMPANY, company).replace(STARTER_EMAIL, email), encoding="utf-8")
    return load_pack(folder)


def _describe(pack: DomainPack) -> str:
    seeds = len(pack.seed_conversations())
    checks = f"{len(pack.checks)} must-pass checks" if pack.checks else "no checks.yaml (generic safety checks judge)"
    return (
        f"{pack.name} ({pack.company_name}): {len(pack.intents)} intents, {len(pack.articles)} help articles, "
        f"{seeds} seed conversations, {checks}"
    )


@pack_app.command("init")
def init(
    folder: Annotated[Path, typer.Argument(help="Where to write the pack (a new or empty folder).")],
    company: Annotated[str, typer.Option(help="The company as customers know it.")],
    email: Annotated[str, typer.Option(help="The support e-mail address customers may write to.")],
) -> None:
    """Write a company's own domain pack from the starter: no seed conversations, no checks.yaml."""
    try:
        pack = write_starter_pack(folder, company, email)
    except (FileExistsError, DomainPackError) as error:
        console.print(f"[red]No pack written[/]: {error}")
        raise typer.Exit(1) from error
    console.print(f"[green]Pack written[/] to {folder}: {_describe(pack)}")
    console.print(
        "Next: edit pack.yaml, help/*.md and intents.yaml (bot/packs/README.md), check them with "
        f"`supportbot pack check {folder}`, set SUPPORTBOT_DOMAIN_PACK={folder.resolve()} in .env, import your "
        "conversations (`supportbot store import FILE`) and retrain (`supportbot train`)."
    )


@pack_app.command("check")
def check(
    folder: Annotated[Path | None, typer.Argument(help="The pack's folder; default: SUPPORTBOT_DOMAIN_PACK.")] = None,
) -> None:
    """Read and check a domain pack as start-up does, and say what retraining will use of it."""
    settings = get_settings()
    try:
        pack = load_pack(folder or settings.domain_pack)
    except DomainPackError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(1) from error
    console.print(f"[green]OK[/] {_describe(pack)}")
    if folder is None and settings.pack_seeds == "none":
        console.print("SUPPORTBOT_PACK_SEEDS=none: retraining uses neither its seed conversations nor its checks")
