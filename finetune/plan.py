"""What a retraining run learns and how long it may take, decided before it starts.

A run learns every reviewed conversation the adapter in service has not learned yet, once, plus a replay sample of
what it already learned; its time bound scales with the tokens that makes. A pass that would take longer than the
recipe's target cuts each conversation shorter, so every new one is still learned, within the target. Each adapter
keeps the keys of all the conversations it has learned (its own run's and those of the adapter it started from) in
`trained-on.json`.
"""

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlmodel import Session

from bot.domain import DomainPack
from conversations import crud
from conversations.pii import mask_pii
from finetune.dataset import Dataset, DatasetRecipe, DatasetRecord, SourceConversation, SourceTurn, build_dataset
from finetune.sft import LoraRecipe
from runtime.registry import ADAPTER_META

TRAINED_ON = "trained-on.json"


def training_dataset(sources: list[SourceConversation], recipe: DatasetRecipe) -> Dataset:
    """The dataset a run trains and evaluates on: personal data masked in every text it keeps."""
    return build_dataset(sources, recipe, mask=mask_pii)


def source_conversations(session: Session, pack: DomainPack) -> list[SourceConversation]:
    """Reviewed conversations marked for training, plus the pack's seed conversations."""
    sources = []
    for item in crud.training_conversations(session=session):
        intents = Counter(turn["intent"] for turn in item["turns"] if turn["role"] == "user" and turn["intent"])
        sources.append(
            SourceConversation(
                id=item["id"],
                source="store",
                turns=[SourceTurn(**turn) for turn in item["turns"]],
                intent=intents.most_common(1)[0][0] if intents else None,
            )
        )
    for seed in pack.seed_conversations():
        turns = [SourceTurn(role=m.role, content=m.content) for m in seed.messages]
        sources.append(SourceConversation(id=seed.id, source="seed", turns=turns, intent=seed.intent))
    return sources


def conversation_key(record: DatasetRecord) -> str:
    """Names a conversation as trained: its source, id and content, so one corrected again is new again."""
    digest = hashlib.sha256(json.dumps(record.messages, sort_keys=True).encode()).hexdigest()[:12]
    return f"{record.source}:{record.id}:{digest}"


def learned_keys(adapter_dir: Path | None) -> set[str]:
    """Keys of the conversations an adapter has learned (none for an adapter from before this was recorded)."""
    if adapter_dir is None or not (adapter_dir / TRAINED_ON).exists():
        return set()
    return set(json.loads((adapter_dir / TRAINED_ON).read_text())["conversations"])


def record_learned(adapter_dir: Path, sft_dir: Path, inherited: Iterable[str]) -> int:
    """Write what the adapter at `adapter_dir` has learned: what its SFT run (at `sft_dir`) covered, plus
    `inherited` (what the adapter it started from had learned). Returns how many conversations it covered."""
    meta = json.loads((sft_dir / ADAPTER_META).read_text())
    covered = set(meta.get("covered") or [])
    keys = sorted(covered | (set(inherited) if meta.get("started_from") else set()))
    (adapter_dir / TRAINED_ON).write_text(json.dumps({"conversations": keys}))
    return len(covered)


@dataclass
class Selection:
    """The conversations one run trains on."""

    new: list[DatasetRecord]
    replay: list[DatasetRecord]

    @property
    def records(self) -> list[DatasetRecord]:
        return [*self.new, *self.replay]


def select_records(train: Sequence[DatasetRecord], learned: set[str], recipe: LoraRecipe) -> Selection:
    """Every training conversation not learned yet, and a replay sample of the learned ones (seeds included)."""
    new = [record for record in train if conversation_key(record) not in learned]
    old = [record for record in train if conversation_key(record) in learned]
    wanted = max(recipe.replay_min, math.ceil(recipe.replay_ratio * len(new)))
    # The sample changes from run to run (as `learned` grows), so replay goes round the older data over time.
    rng = random.Random(f"{recipe.seed}:{len(learned)}")
    replay = rng.sample(old, min(wanted, len(old)))
    return Selection(new=new, replay=replay)


@dataclass
class RunPlan:
    """What a run will train on and how long it may take; shown before it starts."""

    new_conversations: int
    replay_conversations: int
    new_by_source: dict[str, int]
    tokens: int
    """Tokens training computes in one pass over the selected conversations (cut at max_seq_len; a system text
    shared by the conversations of a row counted once for the row)."""
    steps: int
    tokens_per_second: float
    """The training speed the estimate assumes: the last adapter's measured one, else the recipe's."""
    estimated_s: int
    time_bound_s: int
    fits: bool
    """Whether the estimate fits the bound; when not, the next run picks up the conversations left."""
    speed_from: str = ""
    notes: list[str] = field(default_factory=list)
    max_seq_len: int = 0
    """Where each conversation is cut (tokens after its system text where rows share it): the recipe's, or
    shorter so the pass fits the recipe's target_minutes."""


def measured_speed(adapter_dirs: Iterable[Path]) -> tuple[float, str] | None:
    """Tokens per second of the newest adapter whose run measured it."""
    for adapter_dir in adapter_dirs:
        meta_path = adapter_dir / ADAPTER_META
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            # Adapters trained before the speed was recorded still say how many tokens they trained, and how long.
            tokens, seconds = meta.get("trained_tokens") or 0, meta.get("seconds") or 0
            speed = meta.get("tokens_per_s") or (tokens / seconds if seconds > 0 else 0)
            if speed > 0:
                return float(speed), adapter_dir.name
    return None


@dataclass
class ConversationTokens:
    """How a conversation renders for training: its system text and tokens, and the tokens after them."""

    system: str
    system_tokens: int
    rest: int


def pass_tokens(counts: Sequence[ConversationTokens], recipe: LoraRecipe, share_system: bool) -> int:
    """Tokens one pass over conversations of `counts` computes: each cut at max_seq_len and, with `share_system`,
    each system text once per row of conversations that share it (finetune/sft.py, pack_rows)."""
    if not share_system:
        return sum(min(count.system_tokens + count.rest, recipe.max_seq_len) for count in counts)
    tails: dict[tuple[str, int], int] = Counter()
    for count in counts:
        tails[(count.system, count.system_tokens)] += min(count.rest, recipe.max_seq_len)
    total = 0
    for (_, system_tokens), tail_tokens in tails.items():
        room = max(1, recipe.tokens_per_batch - system_tokens)
        total += tail_tokens + system_tokens * math.ceil(tail_tokens / room)
    return total


def make_plan(
    selection: Selection,
    counts: Sequence[ConversationTokens],
    recipe: LoraRecipe,
    speed: tuple[float, str] | None,
    share_system: bool = False,
) -> RunPlan:
    """The plan for training on `selection`, whose conversations render as `counts` say."""
    tokens_per_second, speed_from = speed or (recipe.tokens_per_second, "recipe")
    notes = []
    cut = fitting_cut(counts, recipe, share_system, tokens_per_second)
    original = recipe.max_seq_len
    recipe = replace(recipe, max_seq_len=cut)
    tokens = pass_tokens(counts, recipe, share_system)
    if cut < original:
        fits = tokens * recipe.epochs / tokens_per_second <= recipe.target_minutes * 60
        notes.append(
            f"conversations cut at {cut} tokens (not {original}) so the pass fits the recipe's "
            f"{recipe.target_minutes:g}-min target"
            if fits
            else f"conversations cut at the recipe's shortest, {cut} tokens (not {original}): the pass still "
            f"exceeds its {recipe.target_minutes:g}-min target at this speed"
        )
    passes = math.ceil(tokens * recipe.epochs / recipe.tokens_per_batch)
    steps = min(recipe.max_steps, max(1, passes))
    estimated = tokens * recipe.epochs / tokens_per_second
    bound = min(recipe.max_minutes * 60, max(recipe.min_minutes * 60, estimated * recipe.time_bound_factor))
    if passes > recipe.max_steps:
        notes.append(f"the recipe's max_steps ({recipe.max_steps}) stops the pass at {steps} of {passes} steps")
    if estimated > bound:
        notes.append(f"the estimate exceeds the recipe's ceiling of {recipe.max_minutes:g} min")
    return RunPlan(
        new_conversations=len(selection.new),
        replay_conversations=len(selection.replay),
        new_by_source=dict(Counter(record.source for record in selection.new)),
        tokens=tokens,
        steps=steps,
        tokens_per_second=round(tokens_per_second, 1),
        estimated_s=round(estimated),
        time_bound_s=round(bound),
        fits=estimated <= bound and passes <= recipe.max_steps,
        speed_from=speed_from,
        notes=notes,
        max_seq_len=recipe.max_seq_len,
    )


def fitting_cut(
    counts: Sequence[ConversationTokens], recipe: LoraRecipe, share_system: bool, tokens_per_second: float
) -> int:
    """The longest cut, between the recipe's min_seq_len and max_seq_len, whose pass fits its target_minutes."""

    def minutes(cut: int) -> float:
        return (
            pass_tokens(counts, replace(recipe, max_seq_len=cut), share_system) * recipe.epochs / tokens_per_second / 60
        )

    if not recipe.target_minutes or minutes(recipe.max_seq_len) <= recipe.target_minutes:
        return recipe.max_seq_len
    # The shortest cut is the floor even when it does not fit either.
    low, high = min(recipe.min_seq_len, recipe.max_seq_len), recipe.max_seq_len
    while low < high:
        middle = (low + high + 1) // 2
        if minutes(middle) <= recipe.target_minutes:
            low = middle
        else:
            high = middle - 1
    return low


def token_counts(tokenizer, conversations: Sequence[list[dict[str, str]]]) -> list[ConversationTokens]:
    """How each conversation renders with the chat template: its system text's tokens and the rest."""
    if not conversations:
        return []
    texts = [tokenizer.apply_chat_template(list(messages), tokenize=False) for messages in conversations]
    systems = [
        tokenizer.apply_chat_template(list(messages[:1]), tokenize=False) if messages[0]["role"] == "system" else ""
        for messages in conversations
    ]
    whole = tokenizer(texts, add_special_tokens=False)["input_ids"]
    unique = sorted(set(systems) - {""})
    system_lengths = (
        dict(zip(unique, (len(ids) for ids in tokenizer(unique, add_special_tokens=False)["input_ids"]), strict=True))
        if unique
        else {}
    )
    return [
        ConversationTokens(
            system=system, system_tokens=system_lengths.get(system, 0), rest=len(ids) - system_lengths.get(system, 0)
        )
        for system, ids in zip(systems, whole, strict=True)
    ]
