"""A company's history through the learning loop: import cucom-ecommerce conversations as reviewed and marked
for training, retrain, and score greedy replies (ROUGE-L) on held-out conversations the product never trained
on, for the base model, the adapter in service, the retrained adapter and a plain one-epoch LoRA reference.

It starts its own app (`supportbot start`, with vLLM) on a fresh data folder whose adapter in service is the demo
shop's test adapter, imports with `supportbot store import`, retrains as the admin "Retrain" does, and stops the
app at the end. The data set is read from ../shared/data at run time and never copied into the project.

    nice -n 10 .venv/bin/python tests/bench/bench_company_retrain.py --import 1000 --held-out 60
    # reduced, for a shared machine:
    nice -n 10 .venv/bin/python tests/bench/bench_company_retrain.py --import 200 --held-out 20 --turns 30
"""

import argparse
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot.domain import load_pack  # noqa: E402
from bot.vllm_admin import load_adapter_into_vllm  # noqa: E402
from conversations import crud  # noqa: E402
from conversations.db import make_engine  # noqa: E402
from core.settings import Settings  # noqa: E402
from finetune.dataset import DatasetRecord  # noqa: E402
from finetune.evaluate import generation_scores  # noqa: E402
from finetune.seed import with_system  # noqa: E402
from finetune.worker import execute_run, plan_summary, prepare_run  # noqa: E402
from runtime.registry import AdapterRegistry  # noqa: E402
from tests.utils.ports import free_port  # noqa: E402
from tests.utils.server import stop_process  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cucom-ecommerce" / "ecommerce_v_0_1.jsonl.zip"


def load_cucom(path: Path) -> list[dict]:
    with zipfile.ZipFile(path) as archive, archive.open("merged.jsonl") as raw:
        return [json.loads(line) for line in io.TextIOWrapper(raw, encoding="utf-8") if line.strip()]


def as_messages(conversation: dict) -> list[dict[str, str]]:
    return [{"role": "assistant" if turn["role"].lower() == "agent" else "user", "content": turn["content"]}
            for turn in conversation["turns"]]  # fmt: skip


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def start_app(data_dir: Path, base_model: Path) -> tuple[subprocess.Popen, Settings, dict]:
    env = {
        **os.environ,
        "SUPPORTBOT_DATA_DIR": str(data_dir),
        "SUPPORTBOT_BASE_MODEL": str(base_model),
        "SUPPORTBOT_DATABASE_URL": f"sqlite:///{data_dir / 'supportbot.db'}",
        "SUPPORTBOT_PORT": str(free_port()),
        "SUPPORTBOT_VLLM_PORT": str(free_port()),
        "SUPPORTBOT_VLLM_EXTRA_ARGS": "--enforce-eager",
        # Scoring goes through the LoRA server; a merged server of its own would only take cores from training.
        "SUPPORTBOT_SERVE_MERGED": "false",
    }
    settings = Settings(data_dir=data_dir, base_model=base_model, database_url=env["SUPPORTBOT_DATABASE_URL"],
                        port=int(env["SUPPORTBOT_PORT"]), vllm_port=int(env["SUPPORTBOT_VLLM_PORT"]))  # fmt: skip
    log = (data_dir / "start.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "cli", "start"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"supportbot start exited with {process.returncode}; see {data_dir / 'start.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{settings.port}/readyz", timeout=2).status_code == 200:
                return process, settings, env
        except httpx.HTTPError:
            pass
        time.sleep(3)
    process.kill()
    raise SystemExit("the app did not become ready")


def reference_lora(base: Path, conversations: list[list[dict]], output: Path, threads: int, bf16: bool) -> dict:
    """The reference: a plain one-epoch LoRA (transformers.Trainer + peft, padded batches of 4, same LoRA layers and
    learning rate, fp32 or the Trainer's own bf16 autocast), on the same conversations with the same system text."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from finetune.sft import IGNORE_INDEX, LoraRecipe, load_examples

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = load_examples(tokenizer, conversations, 512)
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def collate(items: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.tensor([item["input_ids"] + [pad] * (width - len(item["input_ids"])) for item in items])
        labels = torch.tensor([item["labels"] + [IGNORE_INDEX] * (width - len(item["labels"])) for item in items])
        mask = torch.tensor([[1] * len(item["input_ids"]) + [0] * (width - len(item["input_ids"])) for item in items])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=LoraRecipe().target_modules))  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        # A tenth of the epoch's steps to warm up (transformers 5 takes steps, not a ratio).
        warmup = math.ceil(0.1 * math.ceil(len(rows) / 4))
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, num_train_epochs=1, learning_rate=4e-4,
                                 warmup_steps=warmup, logging_steps=50, save_strategy="no", report_to=[], use_cpu=True,
                                 remove_unused_columns=False, bf16=bf16)  # fmt: skip
        started = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collate).train()
        seconds = time.perf_counter() - started
    model.save_pretrained(output)
    tokens = sum(len(row["input_ids"]) for row in rows)
    timing = {"seconds": round(seconds), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
              "conversations": len(rows), "bf16": bf16}  # fmt: skip
    (output / "timing.json").write_text(json.dumps(timing))
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--import", dest="imported", type=int, default=1000, help="conversations imported")
    parser.add_argument("--held-out", type=int, default=60, help="conversations scored, never imported")
    parser.add_argument("--turns", type=int, default=60, help="assistant turns scored per model")
    parser.add_argument("--reply-tokens", type=int, default=64)
    parser.add_argument("--base", type=Path, default=ROOT / "var" / "test-data" / "models" / "smollm2-135m-instruct")
    parser.add_argument("--in-service", type=Path, default=ROOT / "var" / "test-data" / "adapters" / "domain-v1")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-company")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain one-epoch LoRA reference")
    parser.add_argument("--reference-bf16", action="store_true", help="the reference trains under bf16 autocast")
    parser.add_argument(
        "--reference-only",
        type=Path,
        metavar="DIR",
        help="only train the reference, over every imported conversation, into DIR",
    )
    parser.add_argument("--reference", type=Path, metavar="DIR", help="a reference trained with --reference-only")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    conversations = load_cucom(args.data)
    random.Random(17).shuffle(conversations)
    imported, held_out = conversations[: args.imported], conversations[args.imported : args.imported + args.held_out]
    print(f"load average at start: {load_average()}")
    if args.reference_only:
        pack = load_pack(Settings().domain_pack)
        # The whole import, as a company would hand it to a plain script (the product holds a tenth of it out).
        train = [with_system(pack, as_messages(conversation), None) for conversation in imported]
        timing = reference_lora(args.base, train, args.reference_only, args.threads, args.reference_bf16)
        print(f"reference: {timing}, load average {load_average()}")
        return
    shutil.rmtree(args.work, ignore_errors=True)
    registry = AdapterRegistry(args.work / "adapters")
    shutil.copytree(args.in_service, registry.path("domain-v1"))
    registry.promote("domain-v1")
    # The intent classifier beside the adapter, so the first start does not train one (minutes, off the point).
    shutil.copytree(args.in_service.parents[1] / "classifiers", args.work / "classifiers")
    app, settings, env = start_app(args.work, args.base)
    rows: dict[str, dict] = {}
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
            for conversation in imported:
                meta = {"conversation_id": conversation["id"], "reviewed": True, "use_for_training": True}
                handle.write(json.dumps({"messages": as_messages(conversation), "metadata": meta}) + "\n")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "cli", "store", "import", handle.name], cwd=ROOT, env=env, check=True)
        os.unlink(handle.name)
        print(f"import: {time.monotonic() - started:.0f} s")

        pack = load_pack(settings.domain_pack)
        engine = make_engine(settings.resolved_database_url)
        print(f"plan: {plan_summary(prepare_run(settings, pack, engine).plan.__dict__)}")
        with Session(engine) as session:
            run = crud.create_training_run(session=session, trigger="bench")
        started = time.monotonic()
        execute_run(run.id, settings)
        retrain_s = time.monotonic() - started
        with Session(engine) as session:
            run = crud.get_training_run(session=session, run_id=run.id)
        if run.error:
            raise SystemExit(run.error)
        sft = json.loads((registry.path(run.adapter) / "supportbot-adapter.json").read_text())
        print(f"retrain: {retrain_s:.0f} s, stages {run.progress.get('stage_seconds')}, load average {load_average()}")
        print(
            f"training: {sft['trained_tokens']} tokens in {sft['seconds']} s = {sft['tokens_per_s']} tokens/s, "
            f"{sft['steps']}/{sft['planned_steps']} steps, covered {len(sft['covered'])}, autocast: {sft['autocast']}"
        )
        print(f"gate: promoted {run.promoted}: {'; '.join(run.report['decision']['reasons'])}")
        print(f"  by source, candidate: {run.report['candidate']['by_source']}")
        print(f"  by source, in service: {(run.report['in_service'] or {}).get('by_source')}")

        models = [("base", settings.served_model_name, None), ("in service (domain-v1)", "domain-v1", None),
                  (f"retrained ({run.adapter})", run.adapter, None)]  # fmt: skip
        if args.reference:
            rows["reference timing"] = json.loads((args.reference / "timing.json").read_text())
            print(f"reference (trained before): {rows['reference timing']}")
            models.append(("plain 1-epoch LoRA (reference)", "reference-lora", args.reference))
        elif not args.no_reference:
            reference_dir = args.work / "reference-lora"
            dataset_records = prepare_run(settings, pack, engine).dataset.records
            train = [
                with_system(pack, r.messages, r.intent)
                for r in dataset_records
                if r.source == "store" and r.split == "train"
            ]  # what the product trains on, less the replay
            print(f"reference: plain one-epoch LoRA over {len(train)} conversations ... load {load_average()}")
            reference = reference_lora(args.base, train, reference_dir, args.threads, args.reference_bf16)
            print(f"reference: {reference}, load average {load_average()}")
            rows["reference timing"] = reference
            models.append(("plain 1-epoch LoRA (reference)", "reference-lora", reference_dir))
        records = [DatasetRecord(id=c["id"], source="store", split="evaluation", messages=as_messages(c))
                   for c in held_out]  # fmt: skip
        vllm = settings.resolved_vllm_url
        for label, model, path in models:
            if path is not None:
                load_adapter_into_vllm(vllm, model, path)
            elif model != settings.served_model_name:
                load_adapter_into_vllm(vllm, model, registry.path(model))
            scores = generation_scores(vllm_url=vllm, model=model, records=records, pack=pack, max_turns=args.turns,
                                       max_checks=0, max_tokens=args.reply_tokens)  # fmt: skip
            rows[label] = {"rouge_l": scores.rouge_l, "turns": scores.turns}
            print(f"{label:<34} ROUGE-L {scores.rouge_l} over {scores.turns} turns")
        rows["run"] = {"retrain_s": round(retrain_s), "stage_seconds": run.progress.get("stage_seconds"),
                       "promoted": run.promoted, "plan": run.progress.get("plan"), "tokens_per_s": sft["tokens_per_s"],
                       "load_average_end": load_average()}  # fmt: skip
    finally:
        stop_process(app)
    print(f"load average at end: {load_average()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
