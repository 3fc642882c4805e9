"""Load and validate a domain pack: the company, help articles, intents and examples the bot serves.

A pack is a folder of YAML and JSONL files and a help/ folder of Markdown articles (bot/packs/README.md);
a company swaps in its own.
"""

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from bot.articles import Article, ArticleError, plain_text, read_article
from bot.hours import BusinessHours
from bot.language import UnknownLanguage, lingua_language

logger = logging.getLogger(__name__)

PACK_FILE = "pack.yaml"
HELP_DIR = "help"
INTENTS_FILE = "intents.yaml"
CHECKS_FILE = "checks.yaml"
SEEDS_FILE = "seed_conversations.jsonl"


class DomainPackError(Exception):
    """A pack file is missing, malformed or inconsistent; the message names the file and the place."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
# Ids end up in prompts, logs and classifier labels, so they stay plain.
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Handling = Literal["answer", "collect", "handoff"]
Model = TypeVar("Model", bound=BaseModel)


class Policy(BaseModel):
    """One help article of the pack as plain text (id = its file name); the bot may state only what
    the help articles say. A view of `DomainPack.articles`, kept for the prompt and training code."""

    model_config = ConfigDict(extra="forbid")

    id: Slug
    title: Text
    text: Text


class Intent(BaseModel):
    """Something customers ask, how the bot handles it, and example utterances for the classifier."""

    model_config = ConfigDict(extra="forbid")

    name: Slug
    description: Text
    handling: Handling
    policies: list[Slug] = []
    required_slots: list[Slug] = []
    ask: Text | None = None
    examples: Annotated[list[Text], Field(min_length=1)]

    @model_validator(mode="after")
    def _collect_needs_a_question(self) -> Self:
        if self.handling == "collect" and not (self.required_slots and self.ask):
            raise ValueError("handling 'collect' needs required_slots and ask (the question that asks for them)")
        return self


class ChatMessage(BaseModel):
    """One turn of a seed conversation; the trainer adds the system prompt, so none is stored."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: Text


class SeedConversation(BaseModel):
    """An example chat in OpenAI format that teaches the model the pack's tone and facts."""

    model_config = ConfigDict(extra="forbid")

    id: Text
    intent: str | None = None
    messages: list[ChatMessage]

    @model_validator(mode="after")
    def _turns_alternate(self) -> Self:
        if len(self.messages) < 2:
            raise ValueError("a conversation needs at least one user message and one assistant reply")
        for index, message in enumerate(self.messages):
            expected = "user" if index % 2 == 0 else "assistant"
            if message.role != expected:
                raise ValueError(
                    f"messages[{index}] is {message.role!r} but should be {expected!r}: "
                    "turns must alternate, starting with the user"
                )
        if self.messages[-1].role != "assistant":
            raise ValueError("the last message must be an assistant reply")
        return self


class Check(BaseModel):
    """A must-pass evaluation: a prompt and substrings the reply must (not) contain, case-insensitive."""

    model_config = ConfigDict(extra="forbid")

    id: Slug
    prompt: Text
    expect_any: list[Text] = []
    expect_none: list[Text] = []

    @model_validator(mode="after")
    def _can_fail(self) -> Self:
        if not (self.expect_any or self.expect_none):
            raise ValueError("a check needs expect_any or expect_none, or it can never fail")
        return self


class PackInfo(BaseModel):
    """The company and the fixed texts of pack.yaml."""

    model_config = ConfigDict(extra="forbid")

    name: Slug
    company_name: Text
    company_profile: Text
    greeting: Text
    system_prompt: Text
    handoff_message: Text
    unavailable_message: Text
    rephrase_message: Text
    # Sent when the model is too busy to start a reply in time (busy_reply_after_s); the message is kept.
    busy_message: Text = (
        "Sorry, we are very busy right now and could not answer in time. Your message has been saved, and "
        "a member of our support team will follow up with you here; you can also try again in a few minutes."
    )
    # Regular expressions for the details the bot extracts (order_number, email, phone, ...);
    # the defaults in bot/slots.py apply to any slot not named here.
    slot_patterns: dict[str, str] = {}
    # What the company sells, as customers name it ("desk lamp", "duvet cover"): a product mentioned
    # in a message becomes the conversation's `product` slot, so it survives context eviction.
    products: list[Text] = []
    # When teammates answer (bot/hours.py); without it every handoff says handoff_message.
    business_hours: BusinessHours | None = None
    # Said instead of handoff_message outside business hours; {next_open} becomes "tomorrow at 09:00 EST".
    outside_hours_message: Text = (
        "I'm passing this conversation to our support team. They are away right now and will answer you here "
        "{next_open}. If you leave your e-mail address, we will also send their answer there."
    )
    # The languages the bot answers in (ISO 639-1 codes). A customer writing clearly in another one is told so
    # in their language (language_messages, by code; English otherwise) and handed to a teammate.
    languages: list[str] = ["en"]
    language_messages: dict[str, Text] = {}

    @model_validator(mode="after")
    def _known_languages(self) -> Self:
        for code in [*self.languages, *self.language_messages]:
            try:
                lingua_language(code)
            except UnknownLanguage as error:
                raise ValueError(str(error)) from None
        if "{next_open}" not in self.outside_hours_message:
            raise ValueError("outside_hours_message must say when teammates answer again: put {next_open} in it")
        return self


class DomainPack(PackInfo):
    """A whole pack as the bot uses it; build it with `load_pack`, which checks it is consistent."""

    articles: list[Article]
    policies: list[Policy]
    intents: list[Intent]
    checks: list[Check] = []
    path: Path

    _policy_index: dict[str, Policy] = PrivateAttr(default_factory=dict)
    _intent_index: dict[str, Intent] = PrivateAttr(default_factory=dict)
    _seeds: bool = PrivateAttr(default=True)

    def model_post_init(self, context: Any, /) -> None:
        self._policy_index = {policy.id: policy for policy in self.policies}
        self._intent_index = {intent.name: intent for intent in self.intents}

    def policy(self, policy_id: str) -> Policy:
        """The policy with this id; KeyError names the pack if there is none."""
        try:
            return self._policy_index[policy_id]
        except KeyError:
            raise KeyError(f"pack {self.name!r} has no policy {policy_id!r}") from None

    def intent(self, name: str) -> Intent:
        """The intent with this name; KeyError names the pack if there is none."""
        try:
            return self._intent_index[name]
        except KeyError:
            raise KeyError(f"pack {self.name!r} has no intent {name!r}") from None

    def without_seeds(self) -> Self:
        """This pack without its seed conversations and must-pass checks, for a company whose own conversations
        replace them: the help articles, intents and texts stay."""
        pack = self.model_copy(update={"checks": []})
        pack._seeds = False
        return pack

    def seed_conversations(self) -> list[SeedConversation]:
        """Read the seed conversations from disk; only training needs them, so they are not kept.

        A pack without seed_conversations.jsonl (or `without_seeds`) has none. Raises DomainPackError on a bad line.
        """
        if not self._seeds:
            return []
        return [conversation for _, conversation in _read_seeds(self.path / SEEDS_FILE, set(self._intent_index))]


def default_pack_path() -> Path:
    """The demo pack shipped with the code."""
    return Path(__file__).resolve().parent / "packs" / "demo_shop"


def load_pack(path: Path) -> DomainPack:
    """Read and validate the pack folder at `path`; every problem raises DomainPackError."""
    path = Path(path)
    if not path.is_dir():
        raise DomainPackError(f"{path}: domain pack folder not found")
    info = _load_info(path / PACK_FILE)
    articles = _load_help(path / HELP_DIR)
    intents = _load_entries(path / INTENTS_FILE, Intent, "name")
    checks_path = path / CHECKS_FILE
    checks = _load_entries(checks_path, Check, "id") if checks_path.exists() else []

    _require_unique(path / INTENTS_FILE, [(line, intent.name) for line, intent in intents], "intent name")
    _require_unique(checks_path, [(line, check.id) for line, check in checks], "check id")
    known_policies = {article.slug for article in articles}
    for line, intent in intents:
        for policy_id in intent.policies:
            if policy_id not in known_policies:
                raise DomainPackError(
                    f"{path / INTENTS_FILE}:{line}: intent {intent.name!r} refers to unknown help article "
                    f"{policy_id!r} (known: {', '.join(sorted(known_policies))}; one per {HELP_DIR}/<id>.md)"
                )
    _require_distinct_examples(path / INTENTS_FILE, intents)

    pack = DomainPack(
        **info.model_dump(),
        articles=articles,
        policies=[Policy(id=article.slug, title=article.title, text=plain_text(article.text)) for article in articles],
        intents=[intent for _, intent in intents],
        checks=[check for _, check in checks],
        path=path.resolve(),
    )
    # Read once so a broken seed file fails at start-up rather than hours later in training.
    seeds = sum(1 for _ in _read_seeds(path / SEEDS_FILE, {intent.name for _, intent in intents}))
    logger.info(
        "loaded domain pack %r from %s: %d help articles, %d intents, %d checks, %d seed conversations",
        pack.name,
        path,
        len(pack.articles),
        len(pack.intents),
        len(pack.checks),
        seeds,
    )
    return pack


# --- Reading files ----------------------------------------------------------------------------


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The parsed document and its node tree, which remembers the line of every entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DomainPackError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DomainPackError(f"{path}: cannot read: {err}") from err
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise DomainPackError(f"{path}: invalid YAML: {err}") from err


def _describe(err: ValidationError) -> str:
    parts = []
    for error in err.errors():
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


def _key_line(node: yaml.Node | None, key: object) -> int | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if key_node.value == key:
                return int(key_node.start_mark.line) + 1
    return None


def _load_info(path: Path) -> PackInfo:
    data, node = _read_yaml(path)
    if not isinstance(data, dict):
        raise DomainPackError(f"{path}: expected a mapping of keys to values")
    try:
        return PackInfo.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]["loc"]
        line = _key_line(node, first[0]) if first else None
        raise DomainPackError(f"{path}{f':{line}' if line else ''}: {_describe(err)}") from err


def _load_entries(path: Path, model: type[Model], key: str) -> list[tuple[int, Model]]:
    """Validate each entry of a YAML list on its own, so an error names the entry and its line."""
    data, node = _read_yaml(path)
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise DomainPackError(f"{path}: expected a list of entries")
    entries = []
    for index, (item, item_node) in enumerate(zip(data, node.value, strict=True), start=1):
        line = int(item_node.start_mark.line) + 1
        try:
            entries.append((line, model.model_validate(item)))
        except ValidationError as err:
            label = f"entry {index}"
            if isinstance(item, dict) and item.get(key):
                label += f" ({key} {item[key]!r})"
            raise DomainPackError(f"{path}:{line}: {label}: {_describe(err)}") from err
    return entries


def _load_help(folder: Path) -> list[Article]:
    """The pack's help articles, one Markdown file each, named by its id: help/returns.md is "returns"."""
    if not folder.is_dir():
        raise DomainPackError(f"{folder}: help article folder not found (one Markdown file per article)")
    articles = []
    for path in sorted(folder.glob("*.md")):
        if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", path.stem) is None:
            raise DomainPackError(f"{path}: name the file by the article id, in lower-case letters, digits, - and _")
        try:
            article = read_article(path)
        except ArticleError as err:
            raise DomainPackError(str(err)) from err
        articles.append(Article(slug=path.stem, title=article.title, text=article.text))
    if not articles:
        raise DomainPackError(f"{folder}: no help articles (*.md)")
    return articles


def _require_unique(path: Path, keyed: list[tuple[int, str]], what: str) -> None:
    first_line: dict[str, int] = {}
    for line, key in keyed:
        if key in first_line:
            raise DomainPackError(f"{path}:{line}: duplicate {what} {key!r} (first at line {first_line[key]})")
        first_line[key] = line


def _require_distinct_examples(path: Path, intents: list[tuple[int, Intent]]) -> None:
    # The same utterance under two intents gives the classifier contradictory labels.
    owner: dict[str, str] = {}
    for line, intent in intents:
        for example in intent.examples:
            key = " ".join(example.lower().split())
            if key in owner and owner[key] != intent.name:
                raise DomainPackError(
                    f"{path}:{line}: example {example!r} of intent {intent.name!r} "
                    f"is also an example of intent {owner[key]!r}"
                )
            owner[key] = intent.name


def _read_seeds(path: Path, intents: set[str]) -> Iterator[tuple[int, SeedConversation]]:
    """Yield (line number, conversation) from a JSONL file, checking ids and intent names."""
    if not path.exists():
        return
    seen: dict[str, int] = {}
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise DomainPackError(f"{path}: cannot read: {err}") from err
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DomainPackError(f"{path}:{number}: invalid JSON: {err.msg} (column {err.colno})") from err
            try:
                conversation = SeedConversation.model_validate(data)
            except ValidationError as err:
                raise DomainPackError(f"{path}:{number}: {_describe(err)}") from err
            if conversation.intent is not None and conversation.intent not in intents:
                raise DomainPackError(f"{path}:{number}: unknown intent {conversation.intent!r}")
            if conversation.id in seen:
                first = seen[conversation.id]
                raise DomainPackError(
                    f"{path}:{number}: duplicate conversation id {conversation.id!r} (first at line {first})"
                )
            seen[conversation.id] = number
            yield number, conversation
