"""Preference tuning after SFT: DPO with TRL on the pairs that staff corrections make.

A bot reply that staff corrected is a (rejected, chosen) pair for the conversation up to it: the bot's
reply is rejected, the staff's text is chosen. Starting from the SFT adapter, DPO moves the policy
towards the chosen replies while a frozen copy of that adapter is the reference. The result is one
more candidate adapter, evaluated and gated like any other.
"""

import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from finetune.dataset import DatasetRecipe, SourceConversation, content_signature, cut_text, split_of
from finetune.devices import training_device, weights_dtype
from finetune.sft import TrainingCancelled, TrainingError
from runtime.registry import ADAPTER_META

logger = logging.getLogger(__name__)

PREFERENCE_META = "preference.json"
ChatMessage = dict[str, str]


@dataclass
class PreferenceRecipe:
    """Hyper-parameters of the preference stage; the `preference:` section of a YAML recipe."""

    method: str = "dpo"
    """"dpo" runs the stage when there are enough pairs; "off" never runs it."""
    min_pairs: int = 8
    """Fewer training pairs than this and the stage is skipped: the SFT adapter is the candidate."""
    beta: float = 0.1
    """DPO's beta: higher keeps the policy closer to the SFT adapter."""
    learning_rate: float = 5e-5
    """Peak learning rate, after a short warmup, decayed along a cosine."""
    epochs: float = 2.0
    """Passes over the pairs, bounded by max_steps and max_minutes."""
    max_steps: int = 40
    """Most optimizer steps."""
    batch_size: int = 4
    """Pairs per optimizer step."""
    max_length: int = 512
    """Tokens of prompt and reply together; a longer pair loses the start of its prompt (the opening of the
    system text), never the reply, the question or the policies just before it. Step time grows with it."""
    max_prompt_messages: int = 6
    """Newest conversation messages kept before the reply (the system text comes on top)."""
    max_minutes: float = 4.0
    """Wall-clock bound of the stage."""
    threads: int = 2
    """CPU threads for torch."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("dpo", "off"):
            raise ValueError(f"preference method must be 'dpo' or 'off', got {self.method!r}")
        if self.min_pairs < 1 or self.max_steps < 1 or self.batch_size < 1 or self.max_prompt_messages < 1:
            raise ValueError("min_pairs, max_steps, batch_size and max_prompt_messages must be at least 1")
        if self.beta <= 0 or self.learning_rate <= 0 or self.epochs <= 0 or self.max_minutes <= 0:
            raise ValueError("beta, learning_rate, epochs and max_minutes must be positive")
        if self.max_length < 64 or self.threads < 1:
            raise ValueError("max_length must be at least 64 and threads at least 1")


@dataclass
class PreferencePair:
    """One corrected bot reply: the conversation before it, the staff's reply and the bot's."""

    conversation_id: str
    intent: str | None
    prompt: list[ChatMessage]
    chosen: str
    rejected: str


def preference_pairs(
    conversations: Sequence[SourceConversation],
    dataset_recipe: DatasetRecipe,
    mask: Callable[[str], str] | None = None,
    split: str = "train",
) -> list[PreferencePair]:
    """Pairs from the corrected replies of store conversations on one side of the dataset split.

    The split is the dataset's own (by conversation id), so no pair comes from a conversation held
    out for evaluation. The prompt has earlier corrections applied, as the SFT data has.
    """
    clean = mask or (lambda text: text)
    pairs: list[PreferencePair] = []
    seen: set[str] = set()
    for conversation in sorted(conversations, key=lambda c: c.id):
        if conversation.source != "store" or split_of(conversation.id, dataset_recipe) != split:
            continue
        history: list[ChatMessage] = []
        intent = conversation.intent
        for turn in conversation.turns:
            role = "assistant" if turn.role == "assistant" else "user"
            content = clean(cut_text(turn.content.strip(), dataset_recipe.max_message_chars))
            if role == "user":
                intent = turn.intent or intent
            if role == "assistant" and turn.correction and turn.correction.strip():
                chosen = clean(cut_text(turn.correction.strip(), dataset_recipe.max_message_chars))
                if history and history[-1]["role"] == "user" and content and chosen != content:
                    pair = PreferencePair(conversation.id, intent, [dict(m) for m in history], chosen, content)
                    signature = content_signature([*pair.prompt, {"role": "assistant", "content": chosen}])
                    if signature not in seen:
                        seen.add(signature)
                        pairs.append(pair)
                content = chosen
            elif role == "assistant" and turn.rating in ("bad", "down"):
                break
            if not content:
                continue
            if history and history[-1]["role"] == role:
                history[-1]["content"] += "\n" + content
            else:
                history.append({"role": role, "content": content})
    return pairs


@dataclass
class PreferenceResult:
    method: str
    pairs: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    reward_accuracy: float
    reward_margin: float
    recipe: dict


def train_preference(
    *,
    base_model_dir: Path,
    adapter_dir: Path,
    prompts: Sequence[list[ChatMessage]],
    pairs: Sequence[PreferencePair],
    output_dir: Path,
    recipe: PreferenceRecipe,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PreferenceResult:
    """DPO from the SFT adapter at `adapter_dir`; the tuned adapter is written to `output_dir` atomically.

    `prompts[i]` is `pairs[i]`'s prompt as the model sees it (system text included).
    """
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    if output_dir.exists():
        raise TrainingError(f"{output_dir} already exists; adapter versions are never overwritten")
    if len(pairs) != len(prompts) or not pairs:
        raise TrainingError("preference tuning needs at least one pair, each with its prompt")
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    # bf16 where a GPU computes it natively; on CPUs without bf16 units it is emulated and many times slower.
    device = training_device()
    dtype = weights_dtype("auto", device)
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=dtype)
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    rows = [
        {
            "prompt": [*prompt[:1], *prompt[1:][-recipe.max_prompt_messages :]]
            if prompt and prompt[0]["role"] == "system"
            else prompt[-recipe.max_prompt_messages :],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
        for prompt, pair in zip(prompts, pairs, strict=True)
    ]
    steps = max(1, min(recipe.max_steps, math.ceil(len(rows) * recipe.epochs / recipe.batch_size)))
    staging = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    losses: list[float] = []
    cancelled = False

    class Bounds(TrainerCallback):
        """Reports each step, and stops at the time bound or when the run is cancelled."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                if on_step is not None:
                    on_step(state.global_step, steps, float(logs["loss"]))

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            nonlocal cancelled
            if should_stop is not None and should_stop():
                cancelled = True
                control.should_training_stop = True
            elif time.monotonic() - started > recipe.max_minutes * 60:
                logger.info("preference stage stops at its time bound after step %d", state.global_step)
                control.should_training_stop = True
            return control

    with warnings.catch_warnings():
        # TRL 1.x deprecates keep_end for 2.0 (pinned below 2 in pyproject.toml); the warning is no news here.
        warnings.filterwarnings("ignore", message=".*keep_end.*", category=FutureWarning)
        config = DPOConfig(
            output_dir=str(staging.with_name(staging.name + "-trainer")),
            max_steps=steps,
            per_device_train_batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=steps // 20,  # HF warmup starts at a learning rate of 0: a wasted step in a short stage
            beta=recipe.beta,
            max_length=recipe.max_length,
            truncation_mode="keep_end",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=device.type == "cpu",
            seed=recipe.seed,
            dataloader_num_workers=0,
            disable_tqdm=True,
            # A 135M-parameter model fits; recomputing activations only costs time on a CPU.
            gradient_checkpointing=False,
            bf16=dtype == torch.bfloat16,
            fp16=False,
        )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Bounds()],
    )
    trainer.train()
    shutil.rmtree(config.output_dir, ignore_errors=True)
    if cancelled:
        raise TrainingCancelled("preference tuning cancelled")
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logged[-1] if logged else {}
    result = PreferenceResult(
        method=recipe.method,
        pairs=len(rows),
        steps=trainer.state.global_step,
        seconds=round(time.monotonic() - started, 1),
        first_loss=round(losses[0], 4) if losses else math.nan,
        last_loss=round(sum(losses[-3:]) / len(losses[-3:]), 4) if losses else math.nan,
        reward_accuracy=round(float(last.get("rewards/accuracies", math.nan)), 4),
        reward_margin=round(float(last.get("rewards/margins", math.nan)), 4),
        recipe=asdict(recipe),
    )
    trainer.model.save_pretrained(staging, selected_adapters=["default"])
    if (adapter_dir / ADAPTER_META).exists():  # the SFT stage's record travels with the adapter
        shutil.copy2(adapter_dir / ADAPTER_META, staging / ADAPTER_META)
    (staging / PREFERENCE_META).write_text(json.dumps(asdict(result), indent=2))
    staging.rename(output_dir)
    logger.info(
        "preference-tuned adapter written to %s: %d pairs, %d steps, loss %.3f -> %.3f, reward accuracy %.2f",
        output_dir,
        result.pairs,
        result.steps,
        result.first_loss,
        result.last_loss,
        result.reward_accuracy,
    )
    return result


def preference_result(adapter_dir: Path) -> dict | None:
    """What the preference stage recorded in an adapter folder, or None if it did not run there."""
    path = adapter_dir / PREFERENCE_META
    return json.loads(path.read_text()) if path.exists() else None
