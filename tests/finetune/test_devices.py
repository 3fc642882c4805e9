"""Whether training runs under bf16 autocast on a CPU: the app's cached measurement first, else one at training
shapes."""

import json
from pathlib import Path

import pytest
import torch

from core import cpu_tuning
from core.cpu_tuning import Measurement, tune
from finetune.devices import TRAINING_BATCHES, training_autocast

CPUINFO = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx512f {extra}\n"
CPU = torch.device("cpu")


@pytest.fixture
def cpuinfo(tmp_path: Path) -> Path:
    """A CPU with bf16 in hardware."""
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra="avx512_bf16"))
    return path


def test_a_retrain_decides_from_the_measurement_the_app_cached_at_its_start(
    cpuinfo: Path, base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = cpuinfo.parent / "cpu-tuning.json"
    tune(model_dir=base_model_dir, cache_path=cache, cpuinfo_path=cpuinfo)
    entry = json.loads(cache.read_text())

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured although the app's measurement was cached")

    monkeypatch.setattr(cpu_tuning, "measure", no_measuring)
    for float32_s, bfloat16_s, expected in ((0.3, 0.1, True), (0.1, 0.3, False)):
        entry["measurement"] = {"float32_s": float32_s, "bfloat16_s": bfloat16_s, "threads": 2}
        cache.write_text(json.dumps(entry))
        bf16, reason = training_autocast("auto", CPU, base_model_dir, cache, cpuinfo)
        assert bf16 is expected and reason.endswith("(measured at the app's start)"), reason
    # Recipes that name the dtype are obeyed as they are.
    assert training_autocast("off", CPU, base_model_dir, cache, cpuinfo)[0] is False


def test_without_a_cached_measurement_training_measures_its_own_shapes(
    cpuinfo: Path, base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def fast_bf16(hidden, intermediate, threads, budget_s=0.4, batches=()):
        seen.append(tuple(batches))
        return Measurement(float32_s=0.2, bfloat16_s=0.05, threads=threads)

    monkeypatch.setattr(cpu_tuning, "measure", fast_bf16)
    bf16, reason = training_autocast("auto", CPU, base_model_dir, cpuinfo.parent / "none.json", cpuinfo)
    assert bf16 is True and reason == "avx512_bf16 present and bf16 measured 4.00x faster"
    assert seen == [TRAINING_BATCHES]
    # Without bf16 in hardware nothing is measured: bf16 would be emulated.
    cpuinfo.write_text(CPUINFO.format(extra=""))
    assert training_autocast("auto", CPU, base_model_dir, None, cpuinfo)[0] is False and len(seen) == 1
