"""How vLLM runs on this machine: the weights' dtype and the cores its threads use, chosen at run time.

bf16 is a candidate only where the CPU computes it in hardware (AVX512-BF16 or AMX); a short measurement of
the model's own matrix shapes must then confirm it is faster, since CPUs with the flags differ. The result is
cached per CPU, core set and torch version, so a restart does not measure again.
"""

import json
import logging
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# Flags in /proc/cpuinfo that mean bf16 matrix products run in hardware rather than emulated in fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# bf16 must beat fp32 by this much in the measurement: a tie is not worth the lost precision.
BF16_MIN_SPEEDUP = 1.1
# Token batches the measurement multiplies: one decode step at 32 conversations, and a prefill chunk.
MEASURED_BATCHES = (32, 256)
CACHE_VERSION = 1


@dataclass(frozen=True)
class Measurement:
    """Seconds per pass over one transformer layer's linear weights, for each dtype, summed over the batches."""

    float32_s: float
    bfloat16_s: float
    threads: int

    @property
    def bf16_speedup(self) -> float:
        return self.float32_s / self.bfloat16_s if self.bfloat16_s > 0 else 0.0


@dataclass(frozen=True)
class Tuning:
    """What vLLM is started with, and why."""

    dtype: str
    # VLLM_CPU_OMP_THREADS_BIND: the cores vLLM's threads are pinned to ("0-1"); None on a GPU.
    threads_bind: str | None
    cores: list[int] = field(default_factory=list)
    cpu: str = ""
    bf16_flags: list[str] = field(default_factory=list)
    measurement: Measurement | None = None
    reason: str = ""
    cached: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_flags(cpuinfo: str) -> set[str]:
    """The flags of the first processor listed in /proc/cpuinfo."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cores_spec(cores: Iterable[int]) -> str:
    """vLLM's core list syntax: "0-3" for a run, "0,2,5" otherwise."""
    ordered = sorted(set(cores))
    if not ordered:
        raise ValueError("no cores")
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}" if len(ordered) > 1 else str(ordered[0])
    return ",".join(str(core) for core in ordered)


def choose_dtype(flags: set[str], measurement: Measurement | None) -> tuple[str, str]:
    """(dtype, reason): bf16 only with hardware support and a measured speed-up of at least BF16_MIN_SPEEDUP."""
    hardware = sorted(flags & set(BF16_FLAGS))
    if not hardware:
        return "float32", "no bf16 in hardware (neither AVX512-BF16 nor AMX): bf16 would be emulated"
    if measurement is None:
        return "float32", f"{', '.join(hardware)} present but not measured"
    speedup = measurement.bf16_speedup
    if speedup >= BF16_MIN_SPEEDUP:
        return "bfloat16", f"{', '.join(hardware)} present and bf16 measured {speedup:.2f}x faster"
    return "float32", f"{', '.join(hardware)} present but bf16 measured {speedup:.2f}x (needs {BF16_MIN_SPEEDUP}x)"


def measure(
    hidden: int, intermediate: int, threads: int, budget_s: float = 0.4, batches: Sequence[int] = MEASURED_BATCHES
) -> Measurement:
    """Time one layer's linear products (attention projections and MLP) in fp32 and bf16 on `batches` tokens at a
    time, best of a few passes."""
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds = {}
        for dtype in (torch.float32, torch.bfloat16):
            generator = torch.Generator().manual_seed(0)
            weights = [
                torch.randn(out, into, generator=generator).to(dtype)
                for out, into in ((hidden, hidden), (2 * intermediate, hidden), (hidden, intermediate))
            ]
            total = 0.0
            for batch in batches:
                x = torch.randn(batch, hidden, generator=generator).to(dtype)
                mid = torch.randn(batch, intermediate, generator=generator).to(dtype)
                best = float("inf")
                deadline = time.perf_counter() + budget_s / len(batches)
                with torch.inference_mode():
                    for _ in range(2):  # warm-up: oneDNN picks and caches its kernels on first use
                        torch.nn.functional.linear(x, weights[0])
                    while time.perf_counter() < deadline:
                        started = time.perf_counter()
                        torch.nn.functional.linear(x, weights[0])
                        torch.nn.functional.linear(x, weights[1])
                        torch.nn.functional.linear(mid, weights[2])
                        best = min(best, time.perf_counter() - started)
                total += best
            seconds[dtype] = total
        return Measurement(float32_s=seconds[torch.float32], bfloat16_s=seconds[torch.bfloat16], threads=threads)
    finally:
        torch.set_num_threads(previous_threads)


def model_shape(model_dir: Path) -> tuple[int, int]:
    config = json.loads((model_dir / "config.json").read_text())
    hidden = int(config.get("hidden_size", 576))
    return hidden, int(config.get("intermediate_size", 4 * hidden))


def _cache_key(cpu: str, flags: Sequence[str], cores: Sequence[int], shape: tuple[int, int]) -> dict:
    import torch

    return {
        "version": CACHE_VERSION,
        "cpu": cpu,
        "bf16_flags": list(flags),
        "cores": list(cores),
        "shape": list(shape),
        "torch": torch.__version__,
    }


def _machine(cpuinfo_path: Path) -> tuple[str, list[str], list[int]]:
    """This CPU's model name, its bf16 flags and the cores this process may use."""
    cpuinfo = cpuinfo_path.read_text() if cpuinfo_path.exists() else ""
    return cpu_model(cpuinfo), sorted(cpu_flags(cpuinfo) & set(BF16_FLAGS)), sorted(os.sched_getaffinity(0))


def _cached_entry(cache_path: Path, key: dict) -> tuple[bool, Measurement | None]:
    """(found, measurement) of the entry cached under `key`; the measurement is None on a CPU without bf16."""
    try:
        cached = json.loads(cache_path.read_text())
        if cached.get("key") == key:
            return True, Measurement(**cached["measurement"]) if cached.get("measurement") else None
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return False, None


def cached_measurement(
    *, model_dir: Path, cache_path: Path, cpuinfo_path: Path = Path("/proc/cpuinfo")
) -> Measurement | None:
    """The measurement `tune` cached for this CPU, these cores and the model's shapes; None if there is none."""
    return _cached_entry(cache_path, _cache_key(*_machine(cpuinfo_path), model_shape(model_dir)))[1]


def tune(
    *,
    model_dir: Path,
    cache_path: Path,
    dtype_override: str | None = None,
    cpuinfo_path: Path = Path("/proc/cpuinfo"),
) -> Tuning:
    """The dtype and cores for vLLM on this machine, measured once per CPU and cached at `cache_path`."""
    import torch

    if torch.cuda.is_available():
        return Tuning(dtype=dtype_override or "auto", threads_bind=None, reason="GPU: vLLM picks the dtype")
    cpu, flags, cores = _machine(cpuinfo_path)
    bind = cores_spec(cores)
    if dtype_override:
        return Tuning(dtype=dtype_override, threads_bind=bind, cores=cores, cpu=cpu, bf16_flags=flags,
                      reason="SUPPORTBOT_VLLM_DTYPE set")  # fmt: skip
    shape = model_shape(model_dir)
    key = _cache_key(cpu, flags, cores, shape)
    found, measurement = _cached_entry(cache_path, key)
    if found:
        dtype, reason = choose_dtype(set(flags), measurement)
        tuning = Tuning(dtype=dtype, threads_bind=bind, cores=cores, cpu=cpu, bf16_flags=flags,
                        measurement=measurement, reason=reason, cached=True)  # fmt: skip
        logger.info("vLLM tuning (cached): %s on cores %s: %s", dtype, bind, reason)
        return tuning
    measurement = measure(*shape, threads=len(cores)) if flags else None
    dtype, reason = choose_dtype(set(flags), measurement)
    tuning = Tuning(dtype=dtype, threads_bind=bind, cores=cores, cpu=cpu, bf16_flags=flags,
                    measurement=measurement, reason=reason)  # fmt: skip
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps({"key": key, "measurement": asdict(measurement) if measurement else None}))
    logger.info("vLLM tuning (measured): %s on cores %s: %s", dtype, bind, reason)
    return tuning
