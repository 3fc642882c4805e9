"""Builds a training dataset from reviewed conversations and the domain pack's seed conversations.

Staff corrections replace the replies they correct; replies rated bad and not corrected are dropped with
everything after them. Personal data is masked, duplicates removed, and the split is by conversation.
"""

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ChatMessage = dict[str, str]


@dataclass
class SourceTurn:
    """One message of a logged conversation with what staff said about it."""

    role: str  # "user" or "assistant"
    content: str
    rating: str | None = None  # "good" / "bad" from staff review, or customer thumbs "up" / "down"
    correction: str | None = None  # the reply staff say the bot should have given
    intent: str | None = None


@dataclass
class SourceConversation:
    """A conversation offered for training, from the store or the domain pack."""

    id: str
    source: str  # "store" or "seed"
    turns: list[SourceTurn]
    intent: str | None = None


@dataclass
class DatasetRecipe:
    """How a dataset is cut from its sources."""

    validation_percent: int = 10
    """Share of conversations (by id hash) used for validation during training (early stopping)."""
    evaluation_percent: int = 10
    """Share held out for evaluating candidates against the adapter in service; never trained on."""
    max_message_chars: int = 1200
    """Longer messages are cut at this length (on a word boundary)."""
    max_messages: int = 16
    """Longer conversations keep their first messages up to this count (ending on an assistant turn)."""
    include_seed: bool = True
    """Mix the domain pack's seed conversations in, so tone and policies are not forgotten."""

    def __post_init__(self) -> None:
        if not (0 <= self.validation_percent < 50 and 0 <= self.evaluation_percent < 50):
            raise ValueError("validation_percent and evaluation_percent must be in [0, 50)")
        if self.max_message_chars < 20 or self.max_messages < 2:
            raise ValueError("max_message_chars must be >= 20 and max_messages >= 2")


@dataclass
class DatasetRecord:
    """One training conversation in OpenAI chat format, with where it came from."""

    id: str
    source: str
    split: str  # "train", "validation" or "evaluation"
    messages: list[ChatMessage]
    intent: str | None = None
    corrected_turns: int = 0


@dataclass
class Dataset:
    """A built dataset, its content hash and its data card."""

    records: list[DatasetRecord]
    content_hash: str
    card: dict = field(default_factory=dict)

    def split(self, name: str) -> list[DatasetRecord]:
        return [record for record in self.records if record.split == name]

    def held_out(self, limit: int) -> list[DatasetRecord]:
        """Conversations to score models on, from the evaluation split (the validation split where that is
        empty): up to `limit` of the company's own, and up to `limit` seed ones, a third of that beside
        company conversations, where they only guard against forgetting."""
        pool = self.split("evaluation") or self.split("validation")
        store = [record for record in pool if record.source == "store"][:limit]
        seeds = [record for record in pool if record.source != "store"]
        return store + seeds[: max(1, limit // 3) if store else limit]

    def save(self, folder: Path) -> Path:
        """Write `dataset.jsonl` and `card.json` into `folder` (staged, then renamed)."""
        staging = folder.with_name(folder.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        with (staging / "dataset.jsonl").open("w") as handle:
            for record in self.records:
                handle.write(json.dumps(asdict(record)) + "\n")
        (staging / "card.json").write_text(json.dumps({"content_hash": self.content_hash, **self.card}, indent=2))
        staging.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: Path) -> "Dataset":
        records = [DatasetRecord(**json.loads(line)) for line in (folder / "dataset.jsonl").read_text().splitlines()]
        card = json.loads((folder / "card.json").read_text())
        return cls(records=records, content_hash=card.pop("content_hash"), card=card)


def split_of(conversation_id: str, recipe: DatasetRecipe) -> str:
    """Deterministic split from the conversation id alone, so a conversation never changes side."""
    bucket = int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) % 100
    if bucket < recipe.evaluation_percent:
        return "evaluation"
    if bucket < recipe.evaluation_percent + recipe.validation_percent:
        return "validation"
    return "train"


def cut_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"


def training_messages(conversation: SourceConversation, recipe: DatasetRecipe) -> tuple[list[ChatMessage], int]:
    """The messages worth learning from, and how many assistant turns staff corrected.

    A bad reply with no correction ends the conversation there: what follows answered a bad reply.
    """
    messages: list[ChatMessage] = []
    corrected = 0
    for turn in conversation.turns:
        role = "assistant" if turn.role == "assistant" else "user"
        content = turn.content
        if role == "assistant":
            if turn.correction and turn.correction.strip():
                content, corrected = turn.correction, corrected + 1
            elif turn.rating in ("bad", "down"):
                break
        content = content.strip()
        if not content:
            continue
        if messages and messages[-1]["role"] == role:
            # Two customer messages in a row (or a staff follow-up): join them into one turn.
            messages[-1]["content"] += "\n" + content
            continue
        messages.append({"role": role, "content": cut_text(content, recipe.max_message_chars)})
    while messages and messages[0]["role"] != "user":
        messages.pop(0)
    messages = messages[: recipe.max_messages]
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages, corrected


def content_signature(messages: Sequence[ChatMessage]) -> str:
    # Near-duplicates differ only in numbers, case, punctuation or spacing.
    text = " ".join(message["content"] for message in messages).lower()
    return re.sub(r"[^a-z]+", " ", text).strip()


def build_dataset(
    conversations: Sequence[SourceConversation],
    recipe: DatasetRecipe,
    mask: Callable[[str], str] | None = None,
) -> Dataset:
    """Clean, mask, deduplicate and split `conversations` into a dataset with a data card."""
    records: list[DatasetRecord] = []
    seen: set[str] = set()
    dropped = Counter()
    for conversation in sorted(conversations, key=lambda c: (c.source, c.id)):
        if conversation.source == "seed" and not recipe.include_seed:
            continue
        messages, corrected = training_messages(conversation, recipe)
        if not any(message["role"] == "assistant" for message in messages):
            dropped["no usable assistant turn"] += 1
            continue
        if mask is not None:
            messages = [{"role": m["role"], "content": mask(m["content"])} for m in messages]
        signature = content_signature(messages)
        if signature in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(signature)
        records.append(
            DatasetRecord(
                id=conversation.id,
                source=conversation.source,
                split=split_of(conversation.id, recipe),
                messages=messages,
                intent=conversation.intent,
                corrected_turns=corrected,
            )
        )
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(asdict(record), sort_keys=True).encode())
    card = {
        "conversations": len(records),
        "by_split": dict(Counter(record.split for record in records)),
        "by_source": dict(Counter(record.source for record in records)),
        "by_intent": dict(Counter(record.intent or "unknown" for record in records).most_common()),
        "corrected_turns": sum(record.corrected_turns for record in records),
        "assistant_turns": sum(m["role"] == "assistant" for r in records for m in r.messages),
        "dropped": dict(dropped),
        "recipe": asdict(recipe),
    }
    return Dataset(records=records, content_hash=digest.hexdigest(), card=card)
