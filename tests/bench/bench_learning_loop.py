"""The learning loop on the demo domain: held-out loss and ROUGE-L of the base model, the adapter in
service and an adapter retrained after a batch of corrected conversations, and the wall time from
"retrain" to the new adapter answering customers.

Run while `make start` is up (it uses the app's database, adapter store and vLLM):

    .venv/bin/python tests/bench/bench_learning_loop.py --app http://127.0.0.1:8000 --corrected 40
"""

import argparse
import json
import logging
import time
from pathlib import Path

import httpx
from sqlmodel import Session

from bot.domain import load_pack
from conversations import crud
from conversations.db import init_db, make_engine
from conversations.models import Role
from core.settings import get_settings
from finetune.dataset import Dataset
from finetune.evaluate import assistant_loss, generation_scores, with_loss
from finetune.worker import execute_run
from runtime.registry import AdapterRegistry

# Customer questions answered badly by the bot and corrected by staff, from the demo pack's policies.
CORRECTIONS = [
    ("How long do I have to send something back?", "You have 30 days from delivery to return an item."),
    ("When will I see my refund?", "We issue refunds within 2 business days; your bank shows them in 5 to 7."),
    ("Is shipping free?", "Standard shipping is free on orders over $50; otherwise it costs $5.95."),
    ("How long is the warranty on a lamp?", "Lamps and electronics have a 2-year warranty."),
    ("Can I still cancel my order?", "You can cancel or change an order within 2 hours of placing it."),
    ("Do you ship to Germany?", "Yes, we ship to the EU for a flat $19.95; delivery takes 7 to 14 business days."),
    ("How fast is express shipping?", "Express shipping takes 1 to 2 business days and costs $14.95."),
    ("Who pays customs duties?", "Customs duties and import taxes are paid by the customer on delivery."),
    ("My tracking link shows nothing.", "Tracking can take up to 24 hours to show the first update."),
    ("Do I get the return shipping back?", "We deduct $5.95 for return shipping from your refund."),
    ("My vase arrived broken, what do I do?", "Tell us within 7 days and e-mail the order number with a photo."),
    ("Can I pay with PayPal?", "Yes, we accept PayPal, Apple Pay, Google Pay and all major cards."),
    ("Can I pay cash on delivery?", "No, we do not accept cash on delivery, checks or bank transfers."),
    ("My account is locked.", "After 5 wrong passwords the account locks for 15 minutes; then try again."),
    ("How long is the reset link valid?", "The password reset link is valid for 30 minutes."),
    ("Can I use two discount codes?", "Only one discount code can be used per order."),
    ("Do you sell my data?", "We never sell your data; we use it only for orders and support."),
    ("When is the lamp back in stock?", "Restocks usually take 2 to 4 weeks; use Notify me on the product page."),
    ("Do you have a store I can visit?", "We sell only online and have no physical stores."),
    ("Is a refund for a gift card paid to my card?", "Gift card payments are refunded as a gift card balance."),
]


def seed_corrections(settings, count: int) -> None:
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    with Session(engine) as session:
        for index in range(count):
            question, answer = CORRECTIONS[index % len(CORRECTIONS)]
            conversation, _ = crud.create_conversation(session=session, channel="bench")
            crud.add_message(session=session, conversation_id=conversation.id, role=Role.customer,
                             text=f"{question} (order LL-{200000 + index})")  # fmt: skip
            reply = crud.add_message(session=session, conversation_id=conversation.id, role=Role.bot,
                                     text="I'm not sure, sorry.")  # fmt: skip
            crud.save_review(session=session, message_id=reply.id, rating="bad", corrected_text=answer,
                             expected_version=0)  # fmt: skip
            crud.mark_conversation(session=session, conversation_id=conversation.id, reviewed=True,
                                   use_for_training=True, expected_version=0)  # fmt: skip


def answering_model(app: str) -> str:
    with httpx.Client(base_url=app, timeout=300) as client:
        opened = client.post("/api/conversations", json={}).json()
        headers = {"Authorization": f"Bearer {opened['token']}"}
        url = f"/api/conversations/{opened['conversation']['id']}/messages"
        # A greeting: the model writes it. A question the help content answers is answered in its own sentences,
        # with no model named (SUPPORTBOT_ANSWERS_FROM=passages, the default).
        question = {"text": "Hi there!"}
        with client.stream("POST", url, json=question, headers=headers) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"role": "bot"' in line:
                    return json.loads(line[6:])["model"]
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="http://127.0.0.1:8000")
    parser.add_argument("--corrected", type=int, default=40)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="Skip scoring the base model and both adapters again; print the run's own evaluation.",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = get_settings()
    pack = load_pack(settings.domain_pack)
    registry = AdapterRegistry(settings.adapters_dir)
    in_service = registry.active()
    seed_corrections(settings, args.corrected)

    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        run = crud.create_training_run(session=session, trigger="bench")
    started = time.monotonic()
    execute_run(run.id, settings)
    with Session(engine) as session:
        run = crud.get_training_run(session=session, run_id=run.id)
    trained_s = time.monotonic() - started
    if not run.promoted and run.adapter:
        registry.promote(run.adapter)  # measure the switch even when the gate kept the old one
    while answering_model(args.app) != run.adapter and time.monotonic() - started < 1800:
        time.sleep(2)
    total_s = time.monotonic() - started

    dataset = Dataset.load(next((settings.data_dir / "datasets").glob(f"{run.dataset_hash[:16]}*")))
    held_out = dataset.held_out(settings.eval_max_conversations)
    rows = {}
    if args.timing_only:
        for key in ("in_service", "candidate"):
            scores = run.report.get(key) or {}
            rows[f"{key} ({scores.get('model')})"] = {
                "loss": scores.get("loss"), "perplexity": scores.get("perplexity"), "rouge_l": scores.get("rouge_l"),
                "checks": f"{scores.get('checks_passed')}/{scores.get('checks_total')}",
                "customers": "{customer_checks_passed}/{customer_checks_total}".format_map(scores)}  # fmt: skip
    models = [
        ("base model", settings.served_model_name, None),
        (f"in service ({in_service})", in_service, registry.path(in_service)),
        (f"retrained ({run.adapter})", run.adapter, registry.path(run.adapter)),
    ]
    for label, model, adapter_dir in [] if args.timing_only else models:
        scores = generation_scores(vllm_url=settings.resolved_vllm_url, model=model, records=held_out, pack=pack)
        scores = with_loss(scores, assistant_loss(settings.base_model_dir, adapter_dir, held_out, pack))
        rows[label] = {"loss": scores.loss, "perplexity": scores.perplexity, "rouge_l": scores.rouge_l,
                       "checks": f"{scores.checks_passed}/{scores.checks_total}", "customers": "–"}  # fmt: skip
    print(f"run {run.id}: {run.status}, gate promoted: {run.promoted} ({'; '.join(run.report['decision']['reasons'])})")
    print(f"held-out conversations: {len(held_out)}; corrected conversations added: {args.corrected}")
    print(f"preference stage: {run.report.get('preference')}")
    print(f"stage times: {run.progress.get('stage_seconds')}")
    # Must-pass checks: the bare model's, and as customers get them (the run's gate only).
    print(f"{'model':<28}{'loss':>8}{'ppl':>9}{'ROUGE-L':>9}{'checks':>8}{'as customers':>14}")
    for label, row in rows.items():
        print(
            f"{label:<28}{row['loss']:>8}{row['perplexity']:>9}{row['rouge_l']:>9}{row['checks']:>8}{row['customers']:>14}"
        )
    print(
        f"retrain (dataset + training + evaluation): {trained_s:.0f} s; until the new adapter answered: {total_s:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "trained_s": trained_s, "total_s": total_s,
                                         "preference": run.report.get("preference"),
                                         "stage_seconds": run.progress.get("stage_seconds")}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
