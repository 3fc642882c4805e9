"""Where training computes: the device, the weights' dtype, and this process's place in a torchrun group."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def training_device(rank: int = 0):
    """Where a training process computes: a GPU when there is one (picked by rank), else the CPU."""
    import torch

    if torch.cuda.is_available():
        # torchrun --standalone: one node, so the rank picks the GPU.
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def weights_dtype(name: str, device):
    """The base model's weight dtype for a recipe's `dtype` (auto: bf16 on a GPU that has it, else fp32)."""
    import torch

    if name == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return getattr(torch, name)


TRAINING_BATCHES = (512, 1024)
"""Tokens per matrix product in the bf16 measurement for training: rows of the recipes' token budgets."""


def training_autocast(
    name: str, device, model_dir: Path, tuning_cache: Path | None = None, cpuinfo: Path = Path("/proc/cpuinfo")
) -> tuple[bool, str]:
    """Whether the forward pass runs under bf16 autocast, and why.

    On a CPU, `auto` decides as the model server's tuning does (core/cpu_tuning.py): bf16 only where the CPU
    computes it in hardware and a short measurement of the model's own matrix shapes finds it faster.
    On a GPU, the weights' dtype (weights_dtype) already decides. With `tuning_cache`, the measurement the app
    cached at its start is used when there is one: a retrain can run while vLLM answers customers, and a
    measurement taken then can miss bf16's gain (1.08x instead of 2.3x, once).
    """
    if name == "off":
        return False, "off in the recipe"
    if name == "bfloat16":
        return True, "bfloat16 in the recipe"
    if device.type != "cpu":
        return False, f"{device.type}: the weights' dtype decides"
    from core.cpu_tuning import BF16_FLAGS, cached_measurement, choose_dtype, cpu_flags, measure, model_shape

    flags = cpu_flags(cpuinfo.read_text() if cpuinfo.exists() else "")
    measurement, when = None, ""
    if flags & set(BF16_FLAGS):
        if tuning_cache is not None:
            measurement = cached_measurement(model_dir=model_dir, cache_path=tuning_cache, cpuinfo_path=cpuinfo)
            when = " (measured at the app's start)" if measurement else ""
        if measurement is None:
            # A training step multiplies whole packed rows, not the serving's decode and prefill batches.
            measurement = measure(*model_shape(model_dir), threads=len(os.sched_getaffinity(0)), budget_s=1.0,
                                  batches=TRAINING_BATCHES)  # fmt: skip
    dtype, reason = choose_dtype(flags, measurement)
    return dtype == "bfloat16", reason + when


@dataclass
class ProcessGroup:
    """This process's place among the training processes: one process, or a torchrun group."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "ProcessGroup":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world=dist.get_world_size())
        return cls()

    def device(self):
        return training_device(self.rank)

    def wrap(self, model, loss: Callable) -> Callable:
        """`loss(model, ids, mask, labels, positions)` as a module call; under DDP, so gradients are averaged
        across processes."""
        import torch

        class AssistantLoss(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, ids, mask, labels, positions=None):
                return loss(self.model, ids, mask, labels, positions)

        module = AssistantLoss()
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = self.device()
        # DDP also broadcasts rank 0's weights, so every process starts from the same adapter.
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, *values: float) -> list[float]:
        """The values summed over all processes."""
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true when it is true in any process."""
        return [total > 0 for total in self.sum(*(float(flag) for flag in flags))]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
