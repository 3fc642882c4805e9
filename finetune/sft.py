"""LoRA supervised fine-tuning of the base model on chat conversations, loss on assistant turns only.

Conversations are packed into rows of up to a token budget with their positions restarting at each one, so no
padding is trained on and no token attends across conversations: on a CPU attention runs one conversation at a
time, cut where the positions restart (finetune/attention.py); elsewhere transformers masks block-diagonally there.
On a CPU, conversations with the same system text share one copy of it in a row: the system text (the
instructions and policies, often most of a short conversation's tokens) is computed once per row, exactly as if
each conversation had its own, and `max_seq_len` counts the tokens after it.
On a CPU with bf16 in hardware the forward pass runs under bf16 autocast.
Under torchrun (see finetune/distributed.py) each process trains on its share of the batches, DDP averages
the gradients, and rank 0 alone writes checkpoints and the adapter.
"""

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune.devices import ProcessGroup, training_autocast, weights_dtype
from runtime.registry import ADAPTER_META

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


class TrainingError(Exception):
    """Training could not start or produced no usable adapter."""


@dataclass
class LoraRecipe:
    """Hyper-parameters of one LoRA SFT run."""

    rank: int = 16
    """LoRA rank; vLLM must be started with --max-lora-rank at least this."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layers that receive LoRA weights; all of them are supported by vLLM."""
    learning_rate: float = 4e-4
    """Peak learning rate, reached after warmup and then decayed along a cosine."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up linearly."""
    max_steps: int = 120
    """Upper bound on optimizer steps; a run plans `epochs` passes over its conversations, at most this many."""
    epochs: float = 1.0
    """Passes over the conversations a run trains on (its new conversations and their replay sample)."""
    max_minutes: float = 5.0
    """Ceiling of a run's time bound; the bound itself scales with the tokens to train (finetune/plan.py)."""
    min_minutes: float = 1.0
    """Floor of a run's time bound, so a run with little new data still gets going."""
    target_minutes: float = 0.0
    """When a run's pass over its conversations would take longer than this (0: no target), each conversation
    is cut shorter, to no fewer than `min_seq_len` tokens, so that the pass fits; every one is still learned."""
    min_seq_len: int = 128
    """The shortest cut `target_minutes` may choose."""
    time_bound_factor: float = 2.0
    """A run's time bound is this many times its estimated training time, so a busier machine still finishes."""
    tokens_per_second: float = 300.0
    """Expected training speed, for the first time bound; later runs use the speed the last adapter measured."""
    replay_ratio: float = 0.25
    """Conversations already learned that are trained on again, per new one, so older knowledge is not forgotten."""
    replay_min: int = 16
    """At least this many already-learned conversations are replayed (when there are that many)."""
    packing: bool = True
    """Pack conversations into rows of tokens_per_batch tokens with per-conversation attention, instead of
    padded batches of similar lengths."""
    autocast: str = "auto"
    """bfloat16, off, or auto: bf16 autocast on a CPU that computes bf16 in hardware and measures faster with it."""
    tokens_per_batch: int = 1024
    """Token budget of one batch, padding included; bounds memory and step time."""
    max_seq_len: int = 512
    """Longer conversations are cut at the last whole message that fits; where rows share system texts (packing
    on a CPU), the system text is not counted."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    seed: int = 0
    """Seed for batch order and LoRA initialisation."""
    threads: int = 2
    """CPU threads for torch while the model server is answering customers, so training does not starve it."""
    idle_threads: int = 0
    """CPU threads while the model server is idle (0: every core this process may use)."""
    eval_every: int = 10
    """About this many steps between validation evaluations (when a validation split is given): they are spread
    evenly, the last one at the last step."""
    validation_max: int = 64
    """At most this many validation conversations (a fixed sample) are evaluated, so each evaluation stays short
    however much data a run has."""
    patience: int = 3
    """Evaluations without a better validation loss before training stops early."""
    checkpoint_every: int = 10
    """Steps between checkpoints (when a checkpoint folder is given), for resume after a crash."""
    warm_start: bool = True
    """Retraining starts from the adapter in service (when its rank and layers match this recipe), so
    each run adds to what earlier runs learnt instead of starting over within its time bound."""
    processes: int = 1
    """Training processes, one per GPU; above 1 SFT runs under torchrun, data parallel (each optimizer step
    takes one batch per process). 0 means one per visible GPU, and one process where there is no GPU."""
    dtype: str = "auto"
    """Weights of the base model: float32, bfloat16, or auto (bfloat16 on a GPU that supports it, else
    float32: bfloat16 is emulated on CPUs without AMX and several times slower there)."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha < 1:
            raise ValueError("rank and alpha must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.learning_rate <= 0 or self.max_steps < 1 or self.max_minutes <= 0 or self.epochs <= 0:
            raise ValueError("learning_rate, max_steps, epochs and max_minutes must be positive")
        if not 0 < self.min_minutes <= self.max_minutes or self.time_bound_factor < 1 or self.tokens_per_second <= 0:
            raise ValueError("min_minutes must be in (0, max_minutes], time_bound_factor >= 1, tokens_per_second > 0")
        if self.replay_ratio < 0 or self.replay_min < 0 or self.threads < 1 or self.idle_threads < 0:
            raise ValueError("replay_ratio and replay_min must be >= 0, threads >= 1 and idle_threads >= 0")
        if self.autocast not in ("auto", "bfloat16", "off"):
            raise ValueError("autocast must be auto, bfloat16 or off")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.eval_every < 1 or self.patience < 1 or self.checkpoint_every < 1 or self.validation_max < 1:
            raise ValueError("eval_every, patience, checkpoint_every and validation_max must be at least 1")
        if self.target_minutes < 0 or self.min_seq_len < 1:
            raise ValueError("target_minutes must be >= 0 and min_seq_len at least 1")
        if self.tokens_per_batch < self.max_seq_len:
            raise ValueError("tokens_per_batch must hold at least one max_seq_len sequence")
        if self.processes < 0:
            raise ValueError("processes must be 0 (one per GPU) or more")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError("dtype must be auto, float32 or bfloat16")


@dataclass
class Example:
    """One tokenized conversation: input ids and labels with non-assistant tokens masked."""

    input_ids: list[int]
    labels: list[int]
    key: str | None = None
    """Which conversation this is (finetune/plan.py), so a run can record what it covered."""
    prefix: int = 0
    """Leading tokens that render the system message (0 without one); rows may share them (see pack_rows)."""


@dataclass
class TrainResult:
    """What a finished run reports and stores beside the adapter."""

    adapter_dir: str
    steps: int
    examples: int
    trained_tokens: int
    seconds: float
    first_loss: float
    last_loss: float
    recipe: dict
    best_step: int = 0
    validation_losses: list = field(default_factory=list)
    started_from: str | None = None
    """The adapter whose weights training started from, or None when it started afresh."""
    processes: int = 1
    """Processes that trained it (data parallel under torchrun when above 1)."""
    device: str = "cpu"
    tokens_per_s: float = 0.0
    """Trained tokens per second of training time (what the next run's time bound is estimated from)."""
    conversation_tokens: int = 0
    """Tokens of the conversations trained on, each with its own system text: what training without shared
    system texts computes for the same rows (`trained_tokens` counts a shared system text once per row)."""
    planned_steps: int = 0
    covered: list[str] = field(default_factory=list)
    """Keys of the conversations whose rows were trained on (all of them unless the time bound stopped the run)."""
    autocast: str = "off"
    """Why the forward pass ran in bf16 or not."""
    packed: bool = False


Conversation = Sequence[dict[str, str]]
ProgressFn = Callable[[int, int, float], None]


def tokenize_conversation(
    tokenizer, messages: Conversation, max_seq_len: int, *, system_counts: bool = True, keep_first_reply: bool = False
) -> Example | None:
    """Tokenize with the model's chat template; only assistant messages are learned from.

    Each message is rendered as the difference between the template applied to the messages up to
    it and up to the one before, so any template whose rendering grows by appending works. With
    `system_counts` false, `max_seq_len` bounds the tokens after the system message. With `keep_first_reply`,
    a conversation whose first reply ends past `max_seq_len` is cut after that reply instead of left out.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    prefix = 0
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
            _extend(tokenizer, prompt, rendered, input_ids, labels, learn=False)
            rendered = prompt
        text = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        piece_start = len(input_ids)
        _extend(tokenizer, text, rendered, input_ids, labels, learn=message["role"] == "assistant")
        rendered = text
        if index == 0 and message["role"] == "system":
            prefix = len(input_ids)
        if len(input_ids) - (0 if system_counts else prefix) > max_seq_len:
            first_reply = message["role"] == "assistant" and all(
                label == IGNORE_INDEX for label in labels[:piece_start]
            )
            if not (keep_first_reply and first_reply):
                # Cut at the last whole message that fits rather than in the middle of one.
                del input_ids[piece_start:], labels[piece_start:]
            break
    if not any(label != IGNORE_INDEX for label in labels):
        return None
    return Example(input_ids=input_ids, labels=labels, prefix=prefix)


def _extend(tokenizer, text: str, rendered: str, input_ids: list[int], labels: list[int], learn: bool) -> None:
    if not text.startswith(rendered):
        raise TrainingError("the chat template does not render conversations by appending messages")
    ids = tokenizer(text[len(rendered) :], add_special_tokens=False)["input_ids"]
    input_ids.extend(ids)
    labels.extend(ids if learn else [IGNORE_INDEX] * len(ids))


def make_batches(examples: list[Example], tokens_per_batch: int, seed: int) -> list[list[Example]]:
    """Group examples of similar length so a padded batch stays under the token budget."""
    ordered = sorted(examples, key=lambda example: len(example.input_ids))
    batches: list[list[Example]] = []
    current: list[Example] = []
    for example in ordered:
        longest = max(len(example.input_ids), *(len(e.input_ids) for e in current)) if current else 0
        if current and longest * (len(current) + 1) > tokens_per_batch:
            batches.append(current)
            current = []
        current.append(example)
    if current:
        batches.append(current)
    random.Random(seed).shuffle(batches)
    return batches


def pack_rows(
    examples: list[Example], tokens_per_row: int, seed: int, share_system: bool = False
) -> list[list[Example]]:
    """Conversations packed into rows of at most `tokens_per_row` tokens, shuffled.

    Without `share_system`: first fit, longest first. With it: conversations with the same system text go into
    rows one after another, and each row holds that text once (see collate_packed)."""
    if share_system:
        return _pack_sharing_system(examples, tokens_per_row, seed)
    rows: list[list[Example]] = []
    room: list[int] = []
    for example in sorted(examples, key=lambda example: -len(example.input_ids)):
        size = len(example.input_ids)
        index = next((i for i, left in enumerate(room) if left >= size), None)
        if index is None:
            rows.append([example])
            room.append(tokens_per_row - size)
        else:
            rows[index].append(example)
            room[index] -= size
    random.Random(seed).shuffle(rows)
    return rows


def _system_of(example: Example) -> tuple[int, ...]:
    return tuple(example.input_ids[: example.prefix])


def _pack_sharing_system(examples: list[Example], tokens_per_row: int, seed: int) -> list[list[Example]]:
    groups: dict[tuple[int, ...], list[Example]] = {}
    for example in examples:
        groups.setdefault(_system_of(example), []).append(example)
    rng = random.Random(seed)
    rows: list[list[Example]] = []
    row: list[Example] = []
    room = 0
    for _, group in sorted(groups.items(), key=lambda item: -len(item[1])):
        rng.shuffle(group)
        for example in group:
            size = len(example.input_ids) - (example.prefix if row and _shares(row[-1], example) else 0)
            if row and size > room:
                rows.append(row)
                row, size = [], len(example.input_ids)
            if not row:
                room = tokens_per_row
            row.append(example)
            room -= size
    if row:
        rows.append(row)
    rng.shuffle(rows)
    return rows


def row_tokens(row: list[Example]) -> int:
    """Tokens of a packed row as collate_packed lays it out (a system text shared by neighbours counted once)."""
    return sum(len(example.input_ids) - (example.prefix if _continues(row, index) else 0)
               for index, example in enumerate(row))  # fmt: skip


def _continues(row: list[Example], index: int) -> bool:
    """Whether the conversation at `index` shares the system text of the one before it in the row."""
    return index > 0 and _shares(row[index - 1], row[index])


def _shares(previous: Example, example: Example) -> bool:
    """Whether `example` can leave out its system text after `previous` in a row: they have the same one."""
    return example.prefix > 0 and _system_of(previous) == _system_of(example)


def shares_system_text(recipe: LoraRecipe, device) -> bool:
    """Whether training rows share system texts: packed rows where attention runs one conversation at a time
    (on a CPU; see the module's notes)."""
    return recipe.packing and device.type == "cpu"


def collate_packed(row: list[Example]):
    """One packed row: ids, labels and positions that restart at each conversation.

    Without an attention mask, the restarts are the sequence boundaries (finetune/attention.py; transformers' own
    attention masks block-diagonally there); the first token of each conversation is never a target, so no loss
    crosses a boundary. A conversation with the same system text as the one before it leaves that text out and
    its positions start after it: packed attention lets it attend to the text where it last started at 0.
    """
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for index, example in enumerate(row):
        start = example.prefix if _continues(row, index) else 0
        ids.extend(example.input_ids[start:])
        labels.extend([IGNORE_INDEX, *example.labels[start + 1 :]])
        positions.extend(range(start, len(example.input_ids)))
    as_row = [torch.tensor([values], dtype=torch.long) for values in (ids, labels, positions)]
    return as_row[0], as_row[1], as_row[2]


def collate(batch: list[Example], pad_id: int):
    import torch

    width = max(len(example.input_ids) for example in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        length = len(example.input_ids)
        ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        mask[row, :length] = 1
    return ids, labels, mask


def assistant_loss(model, ids, mask, labels, positions=None):
    """Mean next-token loss over labelled positions only.

    Projecting just those hidden states onto the vocabulary skips most of the output layer's work
    and memory, since system and customer tokens are never learned from. A packed row comes with
    `positions` and no `mask` (see collate_packed).
    """
    import torch.nn.functional as F

    base = model.get_base_model()
    hidden = base.get_decoder()(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
    ).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[keep])
    return F.cross_entropy(logits.float(), targets[keep])


def learning_rate_at(step: int, total: int, recipe: LoraRecipe) -> float:
    warmup = max(1, int(total * recipe.warmup_ratio))
    if step < warmup:
        return recipe.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return recipe.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingCancelled(Exception):
    """An admin cancelled the run; its last checkpoint is kept so it can be resumed."""


def load_examples(
    tokenizer,
    conversations: Sequence[Conversation],
    max_seq_len: int,
    keys: Sequence[str] | None = None,
    *,
    system_counts: bool = True,
    keep_first_reply: bool = False,
) -> list[Example]:
    examples = []
    for index, conversation in enumerate(conversations):
        example = tokenize_conversation(
            tokenizer, conversation, max_seq_len, system_counts=system_counts, keep_first_reply=keep_first_reply
        )
        if example is not None:
            example.key = keys[index] if keys is not None else None
            examples.append(example)
    return examples


def mean_assistant_loss(model, examples: Sequence[Example], pad_id: int, tokens_per_batch: int = 2048) -> float:
    """Token-weighted mean loss over assistant tokens, without updating the model."""
    total, count = assistant_loss_sum(model, examples, pad_id, tokens_per_batch)
    return total / max(count, 1)


def assistant_loss_sum(
    model, examples: Sequence[Example], pad_id: int, tokens_per_batch: int = 2048, packed: bool = False
) -> tuple[float, int]:
    """Summed loss over assistant tokens and their count (so processes can add theirs up). `packed`: in rows
    that share system texts, for a model with packed attention (finetune/attention.py)."""
    import torch

    total, count = 0.0, 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    if packed:
        batches = [collate_packed(row) for row in pack_rows(list(examples), tokens_per_batch, 0, share_system=True)]
    else:
        batches = [collate(batch, pad_id) for batch in make_batches(list(examples), tokens_per_batch, seed=0)]
    with torch.inference_mode():
        for batch in batches:
            if packed:
                ids, labels, positions = (tensor.to(device) for tensor in batch)
                mask = None
            else:
                ids, labels, mask = (tensor.to(device) for tensor in batch)
                positions = None
            tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total += float(assistant_loss(model, ids, mask, labels, positions)) * tokens
            count += tokens
    model.train(was_training)
    return total, count


def _lora_state(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items() if "lora_" in name}


def load_checkpoint(path: Path, device: object = "cpu") -> dict:
    """A training checkpoint: tensors and plain numbers, lists and dicts only. `weights_only` refuses any other
    pickled object, so a checkpoint planted in the data folder cannot run code when a run resumes."""
    import torch

    return torch.load(path, weights_only=True, map_location=device)


def compatible_adapter(adapter_dir: Path, recipe: LoraRecipe) -> bool:
    """Whether the adapter at `adapter_dir` has the recipe's rank, alpha and layers (so training can start from it)."""
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.exists():
        return False
    config = json.loads(config_path.read_text())
    return (
        config.get("r") == recipe.rank
        and config.get("lora_alpha") == recipe.alpha
        and sorted(config.get("target_modules") or []) == sorted(recipe.target_modules)
    )


def train_lora(
    *,
    base_model_dir: Path,
    conversations: Sequence[Conversation],
    output_dir: Path,
    recipe: LoraRecipe,
    validation: Sequence[Conversation] = (),
    checkpoint_dir: Path | None = None,
    on_step: ProgressFn | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_adapter: Path | None = None,
    keys: Sequence[str] | None = None,
    time_bound_s: float | None = None,
    model_server_busy: Callable[[], bool] | None = None,
    tuning_cache: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter and write it to `output_dir` (atomically: staged, then renamed).

    One run plans `recipe.epochs` passes over `conversations` (at most `recipe.max_steps` steps) and stops at
    `time_bound_s` (default: `recipe.max_minutes`); `keys` name the conversations, and the result lists those
    it covered. With `model_server_busy`, training uses `recipe.threads` while it is true and every core
    (`recipe.idle_threads`) while it is not; without it, `recipe.threads`. `tuning_cache`: the app's cached bf16
    measurement (see training_autocast).

    With `validation`, the adapter is evaluated every `recipe.eval_every` steps, the best one is kept
    and training stops after `recipe.patience` evaluations without improvement. With `checkpoint_dir`,
    state is saved every `recipe.checkpoint_every` steps and a later call resumes from it.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.attention import use_packed_attention

    if output_dir.exists():
        raise TrainingError(f"{output_dir} already exists; adapter versions are never overwritten")
    group = ProcessGroup.current()
    device = group.device()
    torch.manual_seed(recipe.seed)
    threads = Threads(recipe, model_server_busy)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    share = shares_system_text(recipe, device)
    # Every conversation a run selected is learned, its first reply at least, however long that is.
    examples = load_examples(
        tokenizer, conversations, recipe.max_seq_len, keys, system_counts=not share, keep_first_reply=True
    )
    if not examples:
        raise TrainingError("no conversation has an assistant turn to learn from")
    if len(validation) > recipe.validation_max:
        validation = random.Random(recipe.seed).sample(list(validation), recipe.validation_max)
    held_out = load_examples(tokenizer, validation, recipe.max_seq_len, system_counts=not share)
    held_out_share = held_out[group.rank :: group.world]  # may be empty; the sum over processes is not
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=weights_dtype(recipe.dtype, device))
    model = get_peft_model(
        model,
        LoraConfig(
            r=recipe.rank,
            lora_alpha=recipe.alpha,
            lora_dropout=recipe.dropout,
            target_modules=recipe.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    if share:
        # On GPUs transformers' attention stays: it was measured there, this was not.
        use_packed_attention(model)
    warm_from = None
    if init_adapter is not None and compatible_adapter(init_adapter, recipe):
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(model, load_peft_weights(str(init_adapter)))
        warm_from = init_adapter.name
        logger.info("starting from the weights of %s", init_adapter)
    elif init_adapter is not None:
        logger.info("%s has another rank or other layers than the recipe: training starts afresh", init_adapter)
    model.to(device)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if recipe.packing:
        batches = pack_rows(examples, recipe.tokens_per_batch, recipe.seed, share_system=share)
    else:
        batches = make_batches(examples, recipe.tokens_per_batch, recipe.seed)
    total_steps = min(recipe.max_steps, max(1, math.ceil(len(batches) * recipe.epochs / group.world)))
    bf16, autocast_reason = training_autocast(recipe.autocast, device, base_model_dir, tuning_cache)
    logger.info("%d rows for %d step(s); autocast: %s", len(batches), total_steps, autocast_reason)
    # Evaluations spread evenly, so the last one is not a few steps after the one before.
    eval_interval = math.ceil(total_steps / max(1, round(total_steps / recipe.eval_every)))

    state = {
        "step": 0,
        "losses": [],
        "trained_tokens": 0,
        "best_loss": None,
        "best_step": 0,
        "stale": 0,
        "evals": [],
        "seconds": 0.0,
        "covered": [],
        "conversation_tokens": 0,
    }
    best_weights: dict | None = None
    checkpoint = checkpoint_dir / "checkpoint.pt" if checkpoint_dir else None
    if checkpoint is not None and checkpoint.exists():
        saved = load_checkpoint(checkpoint, device)
        model.load_state_dict(saved["lora"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        state, best_weights = saved["state"], saved["best"]
        logger.info("resuming training from step %d", state["step"])

    def save_checkpoint() -> None:
        if checkpoint is None or group.rank != 0:
            return
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        partial = checkpoint.with_suffix(".partial")
        torch.save(
            {"lora": _lora_state(model), "optimizer": optimizer.state_dict(), "state": state, "best": best_weights},
            partial,
        )
        partial.replace(checkpoint)

    compute_loss = group.wrap(model, assistant_loss)
    torch.manual_seed(recipe.seed + group.rank)  # dropout differs between processes, like their batches
    model.train()
    started = time.monotonic() - state["seconds"]
    deadline = started + (time_bound_s if time_bound_s is not None else recipe.max_minutes * 60)
    covered = set(state.get("covered", []))
    first_step = state["step"]  # each call trains at least one step, however short its time bound
    while state["step"] < total_steps:
        # Every process must take the same decisions, so a stop seen by any of them is a stop for all.
        cancelled, out_of_time = group.any(
            should_stop is not None and should_stop(), time.monotonic() >= deadline and state["step"] > first_step
        )  # fmt: skip
        if cancelled:
            save_checkpoint()
            group.barrier()
            raise TrainingCancelled(f"cancelled at step {state['step']}")
        if out_of_time:
            break
        step = state["step"]
        threads.adjust()
        batch = batches[(step * group.world + group.rank) % len(batches)]
        if recipe.packing:
            ids, labels, positions = (tensor.to(device) for tensor in collate_packed(batch))
            mask, real_tokens = None, ids.numel()
            own_tokens = sum(len(example.input_ids) for example in batch)
        else:
            ids, labels, mask = (tensor.to(device) for tensor in collate(batch, pad_id))
            positions, real_tokens = None, int(mask.sum())
            own_tokens = real_tokens
        for param_group in optimizer.param_groups:
            param_group["lr"] = learning_rate_at(step, total_steps, recipe)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = compute_loss(ids, mask, labels, positions)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_loss, step_tokens, step_own = group.sum(loss.item(), float(real_tokens), float(own_tokens))
        step_loss /= group.world
        if not math.isfinite(step_loss):
            raise TrainingError(f"loss became {step_loss} at step {step}; the adapter was not saved")
        state["losses"].append(round(step_loss, 4))
        state["trained_tokens"] += int(step_tokens)
        state["conversation_tokens"] = state.get("conversation_tokens", 0) + int(step_own)
        state["step"] = step + 1
        state["seconds"] = time.monotonic() - started
        covered.update(example.key for example in batch if example.key is not None)
        state["covered"] = sorted(covered)
        if on_step is not None:
            on_step(state["step"], total_steps, state["losses"][-1])
        if held_out and (state["step"] % eval_interval == 0 or state["step"] == total_steps):
            total, count = group.sum(*assistant_loss_sum(model, held_out_share, pad_id, packed=share))
            validation_loss = total / max(count, 1)
            state["evals"].append([state["step"], round(validation_loss, 4)])
            if on_eval is not None:
                on_eval(state["step"], validation_loss)
            if state["best_loss"] is None or validation_loss < state["best_loss"]:
                state.update(best_loss=validation_loss, best_step=state["step"], stale=0)
                best_weights = _lora_state(model)
            else:
                state["stale"] += 1
                if state["stale"] >= recipe.patience:
                    logger.info(
                        "early stop at step %d: no better validation loss since step %d",
                        state["step"],
                        state["best_step"],
                    )
                    break
        if state["step"] % recipe.checkpoint_every == 0:
            save_checkpoint()

    if best_weights is not None:
        model.load_state_dict(best_weights, strict=False)
    losses = state["losses"]
    if group.world > 1:  # each process covered its own rows: the adapter learned all of them
        covered = set(_gathered(sorted(covered)))
    result = TrainResult(
        adapter_dir=str(output_dir),
        steps=state["step"],
        examples=len(examples),
        trained_tokens=state["trained_tokens"],
        seconds=round(time.monotonic() - started, 1),
        first_loss=losses[0],
        last_loss=round(sum(losses[-5:]) / len(losses[-5:]), 4),
        recipe=asdict(recipe),
        best_step=state["best_step"] or state["step"],
        validation_losses=state["evals"],
        started_from=warm_from,
        processes=group.world,
        device=str(device),
        tokens_per_s=round(state["trained_tokens"] / max(state["seconds"], 1e-6), 1),
        conversation_tokens=state.get("conversation_tokens", 0),
        planned_steps=total_steps,
        covered=sorted(covered),
        autocast=autocast_reason,
        packed=recipe.packing,
    )
    if group.rank == 0:
        staging = output_dir.with_name(output_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        (staging / ADAPTER_META).write_text(json.dumps(asdict(result), indent=2))
        staging.rename(output_dir)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        logger.info(
            "adapter written to %s after %d steps in %d process(es) (loss %.3f -> %.3f)",
            output_dir,
            result.steps,
            group.world,
            result.first_loss,
            result.last_loss,
        )
    group.barrier()
    return result


def _gathered(values: list[str]) -> list[str]:
    """Every process's `values`, concatenated."""
    import torch.distributed as dist

    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, values)
    return [value for share in everyone for value in share]


class Threads:
    """Torch's CPU threads for the next step: every core while the model server is idle, few while it answers.

    The worker runs at a low priority too, so a busy model server also wins the cores training still uses.
    """

    CHECK_EVERY_S = 5.0

    def __init__(self, recipe: LoraRecipe, model_server_busy: Callable[[], bool] | None) -> None:
        import os

        self.busy_threads = recipe.threads
        self.idle_threads = recipe.idle_threads or len(os.sched_getaffinity(0))
        self.model_server_busy = model_server_busy
        self._checked = -math.inf
        self._set(self.busy_threads)

    def _set(self, count: int) -> None:
        import torch

        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
            logger.info("training on %d thread(s)", count)

    def adjust(self) -> None:
        if self.model_server_busy is None or time.monotonic() - self._checked < self.CHECK_EVERY_S:
            return
        self._checked = time.monotonic()
        try:
            busy = self.model_server_busy()
        except Exception:  # noqa: BLE001 - an unreachable model server counts as busy: never starve customers
            busy = True
        self._set(self.busy_threads if busy else self.idle_threads)
