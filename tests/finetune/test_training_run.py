"""Real LoRA training on a tiny set: cancelled runs resume from their checkpoint, the best step is kept."""

import json
from pathlib import Path

import pytest

from finetune.sft import LoraRecipe, TrainingCancelled, train_lora
from runtime.registry import ADAPTER_META

CONVERSATIONS = [
    [
        {"role": "system", "content": "You help customers of a shop."},
        {"role": "user", "content": f"How long do I have to return item {i}?"},
        {"role": "assistant", "content": "You can return it within 30 days of delivery."},
    ]
    for i in range(12)
]


def test_cancelled_training_resumes_and_writes_a_loadable_adapter(base_model_dir: Path, tmp_path: Path) -> None:
    # epochs: a pass over these short conversations packs into fewer rows than the four steps the test needs.
    recipe = LoraRecipe(
        max_steps=4, epochs=4.0, tokens_per_batch=512, max_seq_len=128, eval_every=2, checkpoint_every=2, rank=4
    )
    steps_seen: list[int] = []
    with pytest.raises(TrainingCancelled):
        train_lora(
            base_model_dir=base_model_dir, conversations=CONVERSATIONS, validation=CONVERSATIONS[:2],
            output_dir=tmp_path / "domain-v2", recipe=recipe, checkpoint_dir=tmp_path / "run",
            on_step=lambda step, total, loss: steps_seen.append(step), should_stop=lambda: len(steps_seen) >= 2,
        )  # fmt: skip
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "domain-v2").exists()

    result = train_lora(
        base_model_dir=base_model_dir, conversations=CONVERSATIONS, validation=CONVERSATIONS[:2],
        output_dir=tmp_path / "domain-v2", recipe=recipe, checkpoint_dir=tmp_path / "run",
        on_step=lambda step, total, loss: steps_seen.append(step),
    )  # fmt: skip
    assert steps_seen == [1, 2, 3, 4], "the resumed run continues at step 3"
    assert result.steps == 4 and [step for step, _ in result.validation_losses] == [2, 4]
    # Twelve copies of one answer: held-out loss must fall from step 2 to 4, and the kept step is the best one.
    assert result.validation_losses[-1][1] < result.validation_losses[0][1], result.validation_losses
    assert result.best_step == min(result.validation_losses, key=lambda evaluation: evaluation[1])[0] == 4
    meta = json.loads((tmp_path / "domain-v2" / ADAPTER_META).read_text())
    assert meta["best_step"] == result.best_step
    assert (tmp_path / "domain-v2" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_retraining_starts_from_the_adapter_in_service_when_it_fits_the_recipe(
    base_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    recipe = LoraRecipe(max_steps=2, epochs=2.0, tokens_per_batch=512, max_seq_len=128, rank=4, alpha=8)
    first = train_lora(base_model_dir=base_model_dir, conversations=CONVERSATIONS, output_dir=tmp_path / "v1",
                       recipe=recipe)  # fmt: skip
    assert first.started_from is None

    still = LoraRecipe(max_steps=1, tokens_per_batch=512, max_seq_len=128, rank=4, alpha=8, learning_rate=1e-12)
    warm = train_lora(base_model_dir=base_model_dir, conversations=CONVERSATIONS, output_dir=tmp_path / "v2",
                      recipe=still, init_adapter=tmp_path / "v1")  # fmt: skip
    assert warm.started_from == "v1"
    before = load_file(tmp_path / "v1" / "adapter_model.safetensors")
    after = load_file(tmp_path / "v2" / "adapter_model.safetensors")
    lora_b = [name for name in before if "lora_B" in name]
    assert lora_b and any(before[name].abs().sum() > 0 for name in lora_b), "the first run learnt something"
    assert all((before[name] - after[name]).abs().max() < 1e-6 for name in before), "the second starts from it"

    other_rank = LoraRecipe(max_steps=1, tokens_per_batch=512, max_seq_len=128, rank=8)
    fresh = train_lora(base_model_dir=base_model_dir, conversations=CONVERSATIONS, output_dir=tmp_path / "v3",
                       recipe=other_rank, init_adapter=tmp_path / "v1")  # fmt: skip
    assert fresh.started_from is None
