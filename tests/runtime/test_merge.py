"""An adapter folded into the base weights answers exactly like base + adapter, is written once and reused, and a
merge that died half-way is never taken for a finished one."""

import os
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from runtime.merge import MERGED_MARKER, merge_adapter, merged_ready
from runtime.registry import AdapterRegistry
from tests.conftest import TEST_DATA


@pytest.fixture(scope="module")
def adapter_dir() -> Path:
    registry = AdapterRegistry(TEST_DATA / "adapters")
    version = registry.active() or (registry.versions() or [None])[-1]
    assert version is not None, "the test adapter is trained when the live app first starts"
    return registry.path(version)


def logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_the_merged_model_answers_like_base_plus_adapter(base_model_dir: Path, adapter_dir: Path, tmp_path) -> None:
    out = merge_adapter(base_model_dir, adapter_dir, tmp_path / "merged")
    assert merged_ready(out) and not (tmp_path / "merged.partial").exists()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    text = "How long do I have to return a lamp?"
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    without_adapter = logits(base, tokenizer, text)
    expected = logits(PeftModel.from_pretrained(base, adapter_dir), tokenizer, text)
    merged = logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), tokenizer, text)
    assert (expected - without_adapter).abs().max() > 0.1, "the adapter must change the model"
    assert torch.allclose(merged, expected, atol=1e-3), (merged - expected).abs().max()
    # Everything a server needs besides the weights comes from the base model.
    assert (out / "tokenizer_config.json").exists() and (out / "config.json").exists()

    # A finished merge is reused as it is: nothing is rewritten.
    written = {item.name: item.stat().st_mtime_ns for item in out.iterdir()}
    assert merge_adapter(base_model_dir, adapter_dir, out) == out
    assert {item.name: item.stat().st_mtime_ns for item in out.iterdir()} == written


def test_a_merge_that_died_half_way_is_done_again(base_model_dir: Path, adapter_dir: Path, tmp_path) -> None:
    out = tmp_path / "merged"
    # A crash before the rename leaves a staging folder; one after a manual copy leaves a folder with no marker.
    (tmp_path / "merged.partial").mkdir()
    (tmp_path / "merged.partial" / "model.safetensors").write_bytes(b"half")
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"half")
    assert not merged_ready(out)
    merge_adapter(base_model_dir, adapter_dir, out)
    assert merged_ready(out) and (out / MERGED_MARKER).exists()
    assert os.path.getsize(out / "model.safetensors") > 1_000_000
    assert not (tmp_path / "merged.partial").exists()
