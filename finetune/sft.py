"""LoRA supervised fine-tuning of the base model on chat conversations, loss on assistant turns only.

Batches group conversations of similar length under a token budget, so almost no padding is trained on.
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

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ADAPTER_META = "supportbot-adapter.json"


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
    """Optimizer steps; training also stops at max_minutes, whichever comes first."""
    max_minutes: float = 5.0
    """Wall-clock bound so the first start stays within a few minutes on a 2-core CPU."""
    tokens_per_batch: int = 1024
    """Token budget of one batch, padding included; bounds memory and step time."""
    max_seq_len: int = 512
    """Longer conversations are cut at the last whole message that fits."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    seed: int = 0
    """Seed for batch order and LoRA initialisation."""
    threads: int = 2
    """CPU threads for torch, kept bounded so training does not starve serving."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha < 1:
            raise ValueError("rank and alpha must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.learning_rate <= 0 or self.max_steps < 1 or self.max_minutes <= 0:
            raise ValueError("learning_rate, max_steps and max_minutes must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.tokens_per_batch < self.max_seq_len:
            raise ValueError("tokens_per_batch must hold at least one max_seq_len sequence")


@dataclass
class Example:
    """One tokenized conversation: input ids and labels with non-assistant tokens masked."""

    input_ids: list[int]
    labels: list[int]


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


Conversation = Sequence[dict[str, str]]
ProgressFn = Callable[[int, int, float], None]


def tokenize_conversation(tokenizer, messages: Conversation, max_seq_len: int) -> Example | None:
    """Tokenize with the model's chat template; only assistant messages are learned from.

    Each message is rendered as the difference between the template applied to the messages up to
    it and up to the one before, so any template whose rendering grows by appending works.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
            _extend(tokenizer, prompt, rendered, input_ids, labels, learn=False)
            rendered = prompt
        text = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        piece_start = len(input_ids)
        _extend(tokenizer, text, rendered, input_ids, labels, learn=message["role"] == "assistant")
        rendered = text
        if len(input_ids) > max_seq_len:
            # Cut at the last whole message that fits rather than in the middle of one.
            del input_ids[piece_start:], labels[piece_start:]
            break
    if not any(label != IGNORE_INDEX for label in labels):
        return None
    return Example(input_ids=input_ids, labels=labels)


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


def assistant_loss(model, ids, mask, labels):
    """Mean next-token loss over labelled positions only.

    Projecting just those hidden states onto the vocabulary skips most of the output layer's work
    and memory, since system and customer tokens are never learned from.
    """
    import torch.nn.functional as F

    base = model.get_base_model()
    hidden = base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
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


def train_lora(
    *,
    base_model_dir: Path,
    conversations: Sequence[Conversation],
    output_dir: Path,
    recipe: LoraRecipe,
    on_step: ProgressFn | None = None,
) -> TrainResult:
    """Train a LoRA adapter and write it to `output_dir` (atomically: staged, then renamed)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if output_dir.exists():
        raise TrainingError(f"{output_dir} already exists; adapter versions are never overwritten")
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    examples = [
        example
        for conversation in conversations
        if (example := tokenize_conversation(tokenizer, conversation, recipe.max_seq_len)) is not None
    ]
    if not examples:
        raise TrainingError("no conversation has an assistant turn to learn from")
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
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
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = make_batches(examples, recipe.tokens_per_batch, recipe.seed)
    model.train()
    started = time.monotonic()
    deadline = started + recipe.max_minutes * 60
    losses: list[float] = []
    trained_tokens = 0
    step = 0
    while step < recipe.max_steps and time.monotonic() < deadline:
        batch = batches[step % len(batches)]
        ids, labels, mask = collate(batch, pad_id)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, recipe.max_steps, recipe)
        loss = assistant_loss(model, ids, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise TrainingError(f"loss became {loss.item()} at step {step}; the adapter was not saved")
        losses.append(loss.item())
        trained_tokens += int(mask.sum())
        step += 1
        if on_step is not None:
            on_step(step, recipe.max_steps, losses[-1])

    staging = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    result = TrainResult(
        adapter_dir=str(output_dir),
        steps=step,
        examples=len(examples),
        trained_tokens=trained_tokens,
        seconds=round(time.monotonic() - started, 1),
        first_loss=round(losses[0], 4),
        last_loss=round(sum(losses[-5:]) / len(losses[-5:]), 4),
        recipe=asdict(recipe),
    )
    (staging / ADAPTER_META).write_text(json.dumps(asdict(result), indent=2))
    staging.rename(output_dir)
    logger.info(
        "adapter written to %s after %d steps (loss %.3f -> %.3f)",
        output_dir,
        step,
        result.first_loss,
        result.last_loss,
    )
    return result
