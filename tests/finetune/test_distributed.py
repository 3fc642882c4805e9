"""Data-parallel LoRA training under torchrun: two real CPU processes (gloo) stand in for two GPUs."""

import json
from pathlib import Path

import pytest

from finetune.distributed import train_lora_processes, training_processes
from finetune.sft import LoraRecipe, TrainingCancelled, train_lora
from runtime.registry import ADAPTER_META

CONVERSATIONS = [
    [
        {"role": "system", "content": "You help customers of a shop."},
        {"role": "user", "content": f"Can I return the {item}?"},
        {"role": "assistant", "content": f"Yes, the {item} can be returned within 30 days of delivery."},
    ]
    for item in ["lamp", "vase", "rug", "chair", "table", "mirror", "clock", "shelf", "sofa", "desk"]
]


def test_two_processes_train_one_adapter_resume_after_cancel_and_report_progress(
    base_model_dir: Path, tmp_path: Path
) -> None:
    recipe = LoraRecipe(max_steps=8, epochs=8.0, tokens_per_batch=256, max_seq_len=128, eval_every=4,
                        checkpoint_every=4, rank=4, threads=1, processes=2)  # fmt: skip
    steps: list[int] = []
    evals: list[int] = []
    common = dict(processes=2, base_model_dir=base_model_dir, conversations=CONVERSATIONS,
                  validation=CONVERSATIONS[:3], output_dir=tmp_path / "domain-v2", recipe=recipe,
                  work_dir=tmp_path / "run", on_step=lambda step, total, loss: steps.append(step),
                  on_eval=lambda step, loss: evals.append(step))  # fmt: skip
    with pytest.raises(TrainingCancelled):
        train_lora_processes(**common, should_stop=lambda: bool(steps))  # stop once training is under way
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "domain-v2").exists()
    cancelled_at = steps[-1]

    result = train_lora_processes(**common)
    assert 1 <= cancelled_at < 8 and steps == list(range(1, 9)), "the second launch resumes where the first stopped"
    assert evals[-1] == 8 and evals.count(4) == 1 and result.processes == 2 and result.steps == 8
    meta = json.loads((tmp_path / "domain-v2" / ADAPTER_META).read_text())
    assert meta["processes"] == 2 and (tmp_path / "domain-v2" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()

    single = train_lora(base_model_dir=base_model_dir, conversations=CONVERSATIONS, output_dir=tmp_path / "one",
                        recipe=LoraRecipe(**{**meta["recipe"], "processes": 1}))  # fmt: skip
    assert result.trained_tokens == 2 * single.trained_tokens, "each step takes one batch per process"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_dir), tmp_path / "domain-v2")
    assert any("lora_B" in name and weight.abs().sum() > 0 for name, weight in model.named_parameters())


def test_one_process_per_gpu_means_one_without_a_gpu() -> None:
    assert training_processes(LoraRecipe(processes=0)) == 1
    assert training_processes(LoraRecipe(processes=3)) == 3
    with pytest.raises(ValueError, match="processes"):
        LoraRecipe(processes=-1)
