"""Folds a LoRA adapter into the base weights (peft `merge_and_unload`): a plain model vLLM serves without LoRA.

One merged folder per adapter version, written once and kept: versions are never reused, so its name is its key.
Run as `python -m runtime.merge BASE ADAPTER OUT` so the app process never loads peft for it; peft comes with the
`train` extra, which a machine that merges (one whose app manages vLLM) has.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from core.process import die_with_parent_at_niceness

logger = logging.getLogger(__name__)

MERGED_MARKER = "supportbot-merged.json"
# Weights come from the merge; everything else a server needs (tokenizer, chat template) from the base model.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class MergeFailed(RuntimeError):
    """The adapter could not be merged into the base weights; the message carries the end of the merge log."""


def merged_ready(out_dir: Path) -> bool:
    return (out_dir / MERGED_MARKER).exists()


def merge_adapter(base_model_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write base + adapter as one Hugging Face model folder at `out_dir`; a finished one is reused as it is."""
    if merged_ready(out_dir):
        return out_dir
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    started = time.monotonic()
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype="auto")
    with torch.no_grad():
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(staging, safe_serialization=True)
    for item in base_model_dir.iterdir():
        weights = item.name.endswith(_WEIGHT_SUFFIXES) or item.name in _WEIGHT_INDEXES
        if item.is_file() and not weights and not (staging / item.name).exists():
            shutil.copy2(item, staging / item.name)
    (staging / MERGED_MARKER).write_text(
        json.dumps({"base_model": str(base_model_dir.resolve()), "adapter": str(adapter_dir.resolve())})
    )
    # The marker is written last and the folder renamed whole, so a crash never leaves a half-merged model in use.
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)
    logger.info("merged %s into %s in %.1f s", adapter_dir.name, out_dir, time.monotonic() - started)
    return out_dir


def merge_in_subprocess(base_model_dir: Path, adapter_dir: Path, out_dir: Path, log_path: Path) -> Path:
    """`merge_adapter` in a child process: torch's memory goes back to the system when it exits."""
    if merged_ready(out_dir):
        return out_dir
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        code = subprocess.call(
            [sys.executable, "-m", "runtime.merge", str(base_model_dir), str(adapter_dir), str(out_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Seconds of work beside customers' replies: the model server keeps priority.
            preexec_fn=die_with_parent_at_niceness(10),
        )
    if code != 0 or not merged_ready(out_dir):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise MergeFailed(f"merging {adapter_dir.name} failed with code {code}:\n{tail}")
    return out_dir


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    merge_adapter(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
