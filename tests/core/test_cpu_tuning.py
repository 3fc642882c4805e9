"""vLLM's dtype and cores are chosen from the CPU's flags and a measurement, and the measurement is cached."""

import json
import os
from pathlib import Path

import pytest

from core import cpu_tuning
from core.cpu_tuning import Measurement, choose_dtype, cores_spec, cpu_flags, tune

CPUINFO = """processor\t: 0
model name\t: Test CPU 9000
flags\t\t: fpu sse2 avx2 avx512f {extra}

processor\t: 1
model name\t: Test CPU 9000
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


def fast_bf16() -> Measurement:
    return Measurement(float32_s=0.2, bfloat16_s=0.05, threads=2)


def test_bf16_needs_the_hardware_and_a_measured_speed_up() -> None:
    assert choose_dtype({"avx2", "avx512f"}, fast_bf16())[0] == "float32", "emulated bf16 is never chosen"
    assert choose_dtype({"avx512_bf16"}, fast_bf16()) == (
        "bfloat16",
        "avx512_bf16 present and bf16 measured 4.00x faster",
    )
    assert choose_dtype({"amx_bf16", "amx_tile"}, fast_bf16())[0] == "bfloat16"
    slower = Measurement(float32_s=0.1, bfloat16_s=0.12, threads=2)
    dtype, reason = choose_dtype({"avx512_bf16"}, slower)
    assert dtype == "float32" and "0.83x" in reason
    barely = Measurement(float32_s=0.105, bfloat16_s=0.1, threads=2)
    assert choose_dtype({"avx512_bf16"}, barely)[0] == "float32", "a tie is not worth bf16's lost precision"
    assert choose_dtype({"avx512_bf16"}, None)[0] == "float32"


def test_flags_and_core_lists_are_read_as_vllm_expects() -> None:
    assert "avx512_bf16" in cpu_flags(CPUINFO.format(extra="avx512_bf16"))
    assert cpu_flags("no flags here") == set()
    assert cores_spec([1, 0]) == "0-1"
    assert cores_spec([3]) == "3"
    assert cores_spec([0, 2, 5]) == "0,2,5"
    with pytest.raises(ValueError):
        cores_spec([])


def test_tune_measures_once_and_reuses_the_cached_result(
    tmp_path: Path, base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra="avx512_bf16"))
    cache = tmp_path / "cpu-tuning.json"
    first = tune(model_dir=base_model_dir, cache_path=cache, cpuinfo_path=cpuinfo)
    cores = sorted(os.sched_getaffinity(0))
    assert first.cached is False and first.measurement is not None and first.measurement.threads == len(cores)
    assert first.threads_bind == cores_spec(cores) and first.cpu == "Test CPU 9000"
    assert first.dtype == choose_dtype({"avx512_bf16"}, first.measurement)[0]
    assert json.loads(cache.read_text())["measurement"]["float32_s"] > 0

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although the result was cached")

    monkeypatch.setattr(cpu_tuning, "measure", no_measuring)
    again = tune(model_dir=base_model_dir, cache_path=cache, cpuinfo_path=cpuinfo)
    assert again.cached is True and again.dtype == first.dtype and again.measurement == first.measurement

    # Another CPU (here: one without bf16 in hardware) is not answered from the cache, and is not measured.
    cpuinfo.write_text(CPUINFO.format(extra=""))
    plain = tune(model_dir=base_model_dir, cache_path=cache, cpuinfo_path=cpuinfo)
    assert plain.dtype == "float32" and plain.measurement is None and plain.cached is False

    # An explicit setting wins and measures nothing.
    forced = tune(model_dir=base_model_dir, cache_path=cache, dtype_override="bfloat16", cpuinfo_path=cpuinfo)
    assert forced.dtype == "bfloat16" and forced.reason == "SUPPORTBOT_VLLM_DTYPE set"
