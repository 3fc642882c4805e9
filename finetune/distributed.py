"""LoRA SFT across several processes, one per GPU, launched with torchrun from the training worker.

The worker writes a spec file and starts `torch.distributed.run --standalone`; rank 0 appends its progress
to an events file that the worker relays to the run's row, and the worker asks for a stop through a file.
"""

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from core.process import die_with_parent
from finetune.sft import LoraRecipe, ProgressFn, TrainingCancelled, TrainingError, TrainResult, train_lora
from runtime.registry import ADAPTER_META

logger = logging.getLogger(__name__)

SPEC = "distributed-spec.json"
EVENTS = "distributed-events.jsonl"
STOP = "distributed-stop"
LOG = "distributed.log"


def training_processes(recipe: LoraRecipe) -> int:
    """How many processes the recipe asks for: 0 means one per visible GPU (one without a GPU)."""
    if recipe.processes:
        return recipe.processes
    import torch

    return max(1, torch.cuda.device_count())


def train_lora_processes(
    *,
    processes: int,
    base_model_dir: Path,
    conversations: Sequence,
    output_dir: Path,
    recipe: LoraRecipe,
    work_dir: Path,
    validation: Sequence = (),
    on_step: ProgressFn | None = None,
    on_eval: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_adapter: Path | None = None,
    keys: Sequence[str] | None = None,
    time_bound_s: float | None = None,
    tuning_cache: Path | None = None,
) -> TrainResult:
    """`train_lora` in `processes` data-parallel processes; `work_dir` keeps the checkpoint, so a later
    call resumes from it, as in one process. Raises TrainingCancelled or TrainingError like `train_lora`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    events, stop, log = work_dir / EVENTS, work_dir / STOP, work_dir / LOG
    events.unlink(missing_ok=True)
    stop.unlink(missing_ok=True)
    spec = {
        "base_model_dir": str(base_model_dir),
        "conversations": list(conversations),
        "validation": list(validation),
        "output_dir": str(output_dir),
        "recipe": asdict(recipe),
        "checkpoint_dir": str(work_dir),
        "init_adapter": str(init_adapter) if init_adapter else None,
        "keys": list(keys) if keys is not None else None,
        "time_bound_s": time_bound_s,
        "tuning_cache": str(tuning_cache) if tuning_cache else None,
    }
    (work_dir / SPEC).write_text(json.dumps(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "finetune.distributed", str(work_dir)]  # fmt: skip
    logger.info("training in %d processes: %s (log: %s)", processes, " ".join(command), log)
    offset, cancelled = 0, False
    with log.open("w") as output:
        # If this worker is killed outright, the kernel stops torchrun too (and torchrun its ranks).
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            while True:
                code = process.poll()
                offset, seen_cancel = _relay(events, offset, on_step, on_eval)
                cancelled = cancelled or seen_cancel
                if code is not None:
                    break
                if should_stop is not None and not stop.exists() and should_stop():
                    stop.touch()
                time.sleep(0.5)
        finally:
            if process.poll() is None:  # the worker is going down: take the training processes with it
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    if cancelled:
        raise TrainingCancelled("cancelled; the checkpoint is kept for resume")
    if code != 0 or not (output_dir / ADAPTER_META).exists():
        tail = log.read_text(errors="replace")[-2000:]
        raise TrainingError(f"training processes exited with code {code}:\n{tail}")
    return TrainResult(**json.loads((output_dir / ADAPTER_META).read_text()))


def _relay(events: Path, offset: int, on_step, on_eval) -> tuple[int, bool]:
    """Pass new events on from `offset`; returns the new offset and whether rank 0 reported a cancel."""
    if not events.exists():
        return offset, False
    with events.open() as handle:
        handle.seek(offset)
        text = handle.read()
    complete = text[: text.rfind("\n") + 1]  # a line still being written waits for the next look
    cancelled = False
    for line in complete.splitlines():
        event = json.loads(line)
        if event["kind"] == "step" and on_step is not None:
            on_step(event["step"], event["total"], event["loss"])
        elif event["kind"] == "eval" and on_eval is not None:
            on_eval(event["step"], event["loss"])
        elif event["kind"] == "cancelled":
            cancelled = True
    return offset + len(complete), cancelled


def _run(work_dir: Path) -> None:
    import torch
    import torch.distributed as dist

    spec = json.loads((work_dir / SPEC).read_text())
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    events, stop = work_dir / EVENTS, work_dir / STOP

    def emit(**event: object) -> None:
        with events.open("a") as handle:
            handle.write(json.dumps(event) + "\n")

    try:
        train_lora(
            base_model_dir=Path(spec["base_model_dir"]),
            conversations=spec["conversations"],
            validation=spec["validation"],
            output_dir=Path(spec["output_dir"]),
            recipe=LoraRecipe(**spec["recipe"]),
            checkpoint_dir=Path(spec["checkpoint_dir"]),
            init_adapter=Path(spec["init_adapter"]) if spec["init_adapter"] else None,
            keys=spec.get("keys"),
            time_bound_s=spec.get("time_bound_s"),
            tuning_cache=Path(spec["tuning_cache"]) if spec.get("tuning_cache") else None,
            on_step=(lambda step, total, loss: emit(kind="step", step=step, total=total, loss=loss))
            if rank == 0
            else None,
            on_eval=(lambda step, loss: emit(kind="eval", step=step, loss=loss)) if rank == 0 else None,
            should_stop=stop.exists if rank == 0 else None,
        )
    except TrainingCancelled:
        if rank == 0:
            emit(kind="cancelled")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _run(Path(sys.argv[1]))
