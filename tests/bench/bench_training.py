"""Training throughput: supportbot's LoRA trainer against a plain transformers.Trainer + peft run.

Both train the same LoRA on the same seed conversations, whole (same tokens, same loss mask), for the same number
of steps; tokens/s counts the conversations' real (non-padding) tokens, each with its own system text, which is
what the plain Trainer computes. supportbot's runs with its recipe for the base model: packed rows with attention
one conversation at a time, conversations with the same system text sharing one copy of it in a row, bf16 autocast
where the CPU measures it faster, and the recipe's LoRA dropout; it also prints the tokens it computed. The load
average is printed before and after: the machine may be shared.

    .venv/bin/python tests/bench/bench_training.py --steps 12 --json var/bench-training.json

On a shared machine, `--alternate` takes one step of each in turn in one process, so the load hits both alike:
the plain step is what Trainer does each step (padded batch, transformers' attention, full-vocabulary loss, fp32,
LoRA dropout 0.05), supportbot's is train_lora's (packed row, its attention, loss on assistant tokens only, bf16
autocast when the CPU measures it faster).
"""

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch

from bot.domain import default_pack_path, load_pack
from finetune.seed import seed_dataset
from finetune.sft import IGNORE_INDEX, LoraRecipe, load_examples, train_lora
from finetune.worker import load_recipe

WHOLE = 2048
"""Longer than any seed conversation: both trainers learn every one whole."""


def plain_trainer(base: Path, conversations: list, steps: int, batch: int, threads: int) -> dict:
    """The baseline: transformers.Trainer, peft LoRA, padding collator, full-vocabulary loss."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = load_examples(tokenizer, conversations, WHOLE)
    random.Random(0).shuffle(examples)
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    real_tokens = 0

    def collate(items: list[dict]) -> dict:
        nonlocal real_tokens
        width = max(len(item["input_ids"]) for item in items)
        real_tokens += sum(len(item["input_ids"]) for item in items)
        ids = torch.tensor([item["input_ids"] + [pad] * (width - len(item["input_ids"])) for item in items])
        labels = torch.tensor([item["labels"] + [IGNORE_INDEX] * (width - len(item["labels"])) for item in items])
        return {"input_ids": ids, "labels": labels, "attention_mask": (ids != pad).long()}

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=LoraRecipe().target_modules))  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=4e-4,
            logging_steps=steps, save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
            remove_unused_columns=False,
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "real_tokens": real_tokens, "tokens_per_s": round(real_tokens / seconds, 1)}


def ours(base: Path, conversations: list, steps: int, tokens_per_batch: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe(base, {"max_steps": steps, "max_minutes": 600, "tokens_per_batch": tokens_per_batch,
                                    "threads": threads, "idle_threads": threads, "max_seq_len": WHOLE})  # fmt: skip
        started = time.perf_counter()
        result = train_lora(base_model_dir=base, conversations=conversations, output_dir=Path(out) / "a", recipe=recipe)
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "real_tokens": result.conversation_tokens,
            "tokens_per_s": round(result.conversation_tokens / seconds, 1), "computed_tokens": result.trained_tokens,
            "autocast": result.autocast}  # fmt: skip


def alternating(base: Path, conversations: list, steps: int, batch: int, threads: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.attention import NAME, use_packed_attention
    from finetune.devices import training_autocast
    from finetune.sft import assistant_loss, collate, collate_packed, pack_rows

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = load_examples(tokenizer, conversations, WHOLE)
    random.Random(0).shuffle(examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    mean_len = sum(len(e.input_ids) for e in examples) / len(examples)
    padded = [examples[i : i + batch] for i in range(0, len(examples), batch)]
    shared = load_examples(tokenizer, conversations, WHOLE, system_counts=False)
    rows = pack_rows(shared, int(batch * mean_len * 1.15), seed=0, share_system=True)
    bf16, reason = training_autocast("auto", torch.device("cpu"), base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=LoraRecipe().target_modules))  # fmt: skip
    recipe = load_recipe(base)
    use_packed_attention(model)
    dropouts = [module for name, module in model.named_modules() if isinstance(module, torch.nn.Dropout)
                and ".lora_dropout." in name]  # fmt: skip

    def as_trainer(plain: bool) -> None:
        """The one model steps as the plain Trainer's (transformers' attention, LoRA dropout 0.05) or as ours."""
        model.get_base_model().config._attn_implementation = "sdpa" if plain else NAME
        for module in dropouts:
            module.p = 0.05 if plain else recipe.dropout

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    totals = {"plain_trainer": [0.0, 0], "supportbot": [0.0, 0]}
    computed = 0
    for step in range(steps):
        as_trainer(plain=True)
        started = time.perf_counter()
        ids, labels, mask = collate(padded[step % len(padded)], pad)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        totals["plain_trainer"][0] += time.perf_counter() - started
        totals["plain_trainer"][1] += int(mask.sum())
        as_trainer(plain=False)
        started = time.perf_counter()
        row = rows[step % len(rows)]
        ids, labels, positions = collate_packed(row)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = assistant_loss(model, ids, None, labels, positions)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        totals["supportbot"][0] += time.perf_counter() - started
        totals["supportbot"][1] += sum(len(example.input_ids) for example in row)
        computed += ids.numel()
    rows_out = {name: {"seconds": round(seconds, 1), "real_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}
                for name, (seconds, tokens) in totals.items()}  # fmt: skip
    rows_out["supportbot"]["autocast"] = reason
    rows_out["supportbot"]["computed_tokens"] = computed
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=Path("var/models/smollm2-135m-instruct"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4, help="conversations per step for the plain Trainer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alternate", action="store_true", help="one step of each in turn, in one process")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    conversations = seed_dataset(load_pack(default_pack_path()))
    print("load average before: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    if args.alternate:
        rows = alternating(args.base, conversations, args.steps, args.batch, args.threads)
        baseline, mine = rows["plain_trainer"], rows["supportbot"]
    else:
        baseline = plain_trainer(args.base, conversations, args.steps, args.batch, args.threads)
        # Same number of real tokens per step on average: budget = batch x mean padded length.
        tokenizer_examples = load_examples(__import__("transformers").AutoTokenizer.from_pretrained(args.base),
                                           conversations, WHOLE)  # fmt: skip
        mean_len = sum(len(e.input_ids) for e in tokenizer_examples) / len(tokenizer_examples)
        mine = ours(args.base, conversations, args.steps, int(args.batch * mean_len * 1.15), args.threads)
    rows = {"plain_trainer": baseline, "supportbot": mine,
            "speedup": round(mine["tokens_per_s"] / baseline["tokens_per_s"], 2)}  # fmt: skip
    print(f"{'trainer':<16}{'seconds':>10}{'real tokens':>14}{'tokens/s':>12}")
    for name in ("plain_trainer", "supportbot"):
        row = rows[name]
        print(f"{name:<16}{row['seconds']:>10}{row['real_tokens']:>14}{row['tokens_per_s']:>12}")
    print(
        f"speed-up: {rows['speedup']}x (supportbot's autocast: {mine['autocast']}; it computed "
        f"{mine['computed_tokens']} tokens for its {mine['real_tokens']})"
    )
    print("load average after: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
