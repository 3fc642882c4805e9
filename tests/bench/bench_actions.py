"""Actions end to end: customers ask the demo shop's order API about every seeded order, in varied wording.

The order API is served for real (uvicorn, HTTP) and stopped for the last conversations; the dialogue manager runs
with the promoted intent classifier and a model that writes an invented status if it is ever asked (so a reply
that reaches the model shows up as invented). Prints the right-status rate, other orders' data shown, invented
statuses, API-down handled, and the time an action adds (its HTTP call, p50/p95).

Then, against a fresh shop, customers cancel orders and change delivery addresses and answer the confirmation
(yes, no, or with someone else's e-mail); the shop's own record is read after each: changes made as asked, changes
made without a yes (must be 0), refusals passed on with the shop's reason.

    .venv/bin/python tests/bench/bench_actions.py --data-dir var/test-data
"""

import argparse
import asyncio
import json
import random
import re
import statistics
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path

import httpx

from bot.actions import DECLINED_REPLY, NOT_FOUND_REPLY, ActionRunner, load_actions
from bot.context import ChatTemplateCounter, Turn
from bot.dialogue import DialogueManager, Swappable, TurnResult
from bot.domain import default_pack_path, load_pack
from bot.llm import ChatModel, ReplyDone
from bot.routing import Decision, DialogueState, RuleRouter
from core.settings import Settings
from runtime.dialogue import load_promoted_classifier, routing_config
from serving.demo_shop import CANCEL_WITHIN, OPENS_AT, Order, seeded_orders
from tests.utils.shop import KEY, Served, demo_shop

INVENTED = "Your order shipped yesterday and arrives tomorrow."
ASK = [
    "Where is my order {n}?",
    "Hi, can you check the status of {n}?",
    "has {n} shipped yet?",
    "I'd like to track order {n} please",
    "what's happening with my order {n}",
    "Any update on {n}? It still hasn't arrived",
    "where's my package, order number {n}",
    "Can you tell me the status of order {n}?",
    "when will order {n} arrive",
    "hello, my order {n} - where is it?",
]
GIVE_EMAIL = ["{e}", "It's {e}", "my email is {e}", "sure: {e}", "The e-mail on the order is {e}"]
BOTH = ["Where is my order {n}? My e-mail is {e}", "Status of {n} please, email {e}", "{n} / {e} - has it shipped?"]
CANCEL = ["Please cancel my order {n}, my e-mail is {e}", "cancel order {n} please, email {e}",
          "I want to cancel {n}. The e-mail on it is {e}", "Can you cancel order {n}? {e}"]  # fmt: skip
ADDRESS = ["Please change the delivery address of order {n} to {a}. My e-mail is {e}",
           "Can you change the shipping address for {n} to {a}? e-mail {e}",
           "wrong address on order {n}, it should be {a} - my email is {e}"]  # fmt: skip
YES, NO = ["yes", "yes please", "ok, go ahead", "Yes, do it"], ["no", "no thanks", "nope"]
NEW_ADDRESSES = ["12 Oak Avenue, Columbus, OH 43215", "7 Birch Road, Dayton, OH 45402", "400 Lake St, Toledo, OH 43604"]
STATUS_WORDS = re.compile(r"\b(shipped|delivered|cancell?ed|being prepared|has not shipped)\b", re.IGNORECASE)


class InventingModel(ChatModel):
    """Writes a made-up status: any reply it writes about an order counts as invented."""

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, messages: Sequence, *, model: str) -> AsyncIterator[str | ReplyDone]:
        self.calls += 1
        for word in INVENTED.split(" "):
            yield word + " "
        yield ReplyDone(model=model, prompt_tokens=None, completion_tokens=10)


def conversations(orders: dict[str, Order], seed: int) -> list[dict]:
    """Scripted conversations: verified (two per order), wrong e-mails, unknown numbers, and the API stopped."""
    rng = random.Random(seed)
    listed = list(orders.values())
    script = []
    for order in listed:
        for _ in range(2):
            if rng.random() < 0.3:
                messages = [rng.choice(BOTH).format(n=order.order_number, e=order.customer_email)]
            else:
                messages = [
                    rng.choice(ASK).format(n=order.order_number),
                    rng.choice(GIVE_EMAIL).format(e=order.customer_email),
                ]
            script.append({"kind": "verified", "order": order, "messages": messages})
    for order in rng.sample(listed, 24):
        other = rng.choice([o for o in listed if o is not order])  # someone else's real e-mail
        messages = [rng.choice(ASK).format(n=order.order_number), rng.choice(GIVE_EMAIL).format(e=other.customer_email)]
        script.append({"kind": "wrong e-mail", "order": order, "messages": messages})
    for index in range(12):
        number = f"LL-{200000 + index * 13}"
        script.append({"kind": "unknown order", "order": None, "messages": [rng.choice(BOTH).format(n=number, e=
                       listed[index].customer_email)]})  # fmt: skip
    for order in rng.sample(listed, 12):
        messages = [rng.choice(BOTH).format(n=order.order_number, e=order.customer_email)]
        script.append({"kind": "api down", "order": order, "messages": messages})
    return script


async def talk(dialogue: DialogueManager, messages: list[str]) -> list[TurnResult]:
    turns: list[Turn] = []
    state = DialogueState()
    results = []
    for text in messages:
        turns.append(Turn("customer", text))
        async for event in dialogue.respond(turns=turns, state=state):
            if isinstance(event, TurnResult):
                results.append(event)
        state = results[-1].state
        turns.append(Turn("bot", results[-1].text or ""))
    return results


def change_conversations(orders: dict[str, Order], seed: int) -> list[dict]:
    """Cancellations and address changes answered yes, no, or asked with another customer's e-mail."""
    rng = random.Random(seed + 1)
    listed = list(orders.values())
    # Every order still processing (the only ones a change may succeed for), the rest drawn from the others.
    processing = [order for order in listed if order.status == "processing"]
    picked = processing * 2 + rng.sample([order for order in listed if order.status != "processing"], 26)
    rng.shuffle(picked)
    script = []
    for index, order in enumerate(picked):
        kind = ["cancel", "cancel", "address", "no", "wrong e-mail"][index % 5]
        email = (
            order.customer_email
            if kind != "wrong e-mail"
            else rng.choice([o for o in listed if o is not order]).customer_email
        )
        address = rng.choice(NEW_ADDRESSES)
        wording = ADDRESS if kind == "address" or (kind == "no" and index % 2) else CANCEL
        first = rng.choice(wording).format(n=order.order_number, e=email, a=address)
        answer = rng.choice(NO) if kind == "no" else rng.choice(YES)
        script.append({"kind": kind, "order": order, "address": address, "messages": [first, answer]})
    return script


def expected_reply(template: str, order: Order) -> str:
    return template.format(**order.model_dump())


async def run(args: argparse.Namespace) -> dict:
    settings = Settings(data_dir=args.data_dir)
    pack = load_pack(default_pack_path())
    actions = load_actions(pack)
    templates = actions[0].reply.templates
    orders = seeded_orders()
    name, classifier = load_promoted_classifier(settings)
    model = InventingModel()
    script = conversations(orders, args.seed)
    outcomes: dict[str, list[bool]] = {}
    leaks: list[str] = []
    invented: list[str] = []
    action_ms: list[float] = []
    with Served(demo_shop()) as shop:
        runner = ActionRunner(
            actions,
            base_url=f"{shop.url}/demo-shop",
            secrets={"demo_shop_key": KEY},
            handoff_message=pack.handoff_message,
        )
        dialogue = DialogueManager(
            pack=pack, llm=model, counter=ChatTemplateCounter(settings.base_model_dir), models=Swappable("m"),
            classifier=Swappable(classifier), router=RuleRouter(pack, routing_config(settings, classifier)),
            context_tokens=settings.vllm_max_model_len, reply_tokens=settings.max_reply_tokens, summary_model="base",
            actions=runner,
        )  # fmt: skip
        results_by_conversation = []
        for item in [c for c in script if c["kind"] != "api down"]:
            results_by_conversation.append((item, await talk(dialogue, item["messages"])))
    changes = await run_changes(args, dialogue, runner, orders)
    # The shop is stopped now: the last conversations find it down.
    for item in [c for c in script if c["kind"] == "api down"]:
        results_by_conversation.append((item, await talk(dialogue, item["messages"])))

    for item, results in results_by_conversation:
        kind, order = item["kind"], item["order"]
        said = " ".join(result.text or "" for result in results)
        action_ms += [r.action["ms"] for r in results if r.action and r.action.get("attempts")]
        others = [o for o in orders.values() if o is not order or kind != "verified"]
        shown = [o.order_number for o in others if o.tracking_number and o.tracking_number in said]
        shown += [o.order_number for o in others if o.placed_on in said and o.order_number in said]
        if shown:
            leaks.append(f"{kind}: {item['messages']} -> {said}")
        if kind == "verified":
            right = expected_reply(templates[order.status], order) in said
            if STATUS_WORDS.search(said.replace(expected_reply(templates[order.status], order), "")):
                invented.append(f"{kind}: {item['messages']} -> {said}")
        else:
            if STATUS_WORDS.search(said) or INVENTED in said:
                invented.append(f"{kind}: {item['messages']} -> {said}")
            if kind == "api down":
                right = results[-1].route.decision is Decision.handoff and "can't reach our order system" in said
            else:
                right = results[-1].action is not None and results[-1].action["outcome"] == "not found"
        outcomes.setdefault(kind, []).append(right)
        if not right and args.verbose:
            print(f"MISS {kind}: {item['messages']} -> {[(r.route.decision.value, r.route.reason) for r in results]}")

    def share(kind: str) -> float:
        return round(100 * sum(outcomes.get(kind, [])) / max(1, len(outcomes.get(kind, []))), 1)

    ordered = sorted(action_ms)
    return {
        "classifier": name,
        "conversations": len(script),
        "by_kind": {kind: len(values) for kind, values in outcomes.items()},
        "right_status_pct": share("verified"),
        "wrong_email_refused_pct": share("wrong e-mail"),
        "unknown_order_refused_pct": share("unknown order"),
        "api_down_handled_pct": share("api down"),
        "other_order_data_shown": len(leaks),
        "invented_status": len(invented),
        "model_calls": model.calls,
        "action_ms_p50": round(statistics.median(ordered), 1) if ordered else None,
        "action_ms_p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1) if ordered else None,
        **changes,
        "examples_leaked": leaks[:3],
        "examples_invented": invented[:3],
    }


async def run_changes(
    args: argparse.Namespace, dialogue: DialogueManager, runner: ActionRunner, orders: dict[str, Order]
) -> dict:
    """The change conversations against a fresh shop, checked against what the shop itself then holds."""
    script = change_conversations(orders, args.seed)
    right: dict[str, list[bool]] = {}
    unasked_changes, made, refusals_with_reason, refusals, change_ms = 0, 0, 0, 0, []
    with Served(demo_shop()) as shop, httpx.Client(base_url=f"{shop.url}/demo-shop") as client:
        runner.base_url = f"{shop.url}/demo-shop"
        headers = {"Authorization": f"Bearer {KEY}"}
        for item in script:
            order, kind = item["order"], item["kind"]
            before = client.get(f"/orders/{order.order_number}", headers=headers).json()
            results = await talk(dialogue, item["messages"])
            after = client.get(f"/orders/{order.order_number}", headers=headers).json()
            changed = after != before
            last = results[-1]
            asked = results[0].route.reason.endswith("needs confirmation")
            change_ms += [r.action["ms"] for r in results if r.action and r.action.get("attempts")]
            if kind in ("no", "wrong e-mail"):
                unasked_changes += changed
                expected = DECLINED_REPLY if kind == "no" else NOT_FOUND_REPLY
                ok = asked and not changed and last.text == expected
            else:
                # What the shop's rules allow: cancelling within 2 hours of ordering, either before shipping.
                recent = datetime.fromisoformat(before["placed_at"]) >= OPENS_AT - CANCEL_WITHIN
                allowed = before["status"] == "processing" and (kind == "address" or recent)
                if kind == "cancel":
                    done = after["status"] == "cancelled" and (last.text or "").startswith("Done:")
                else:
                    done = after["shipping_address"] == item["address"] and (last.text or "").startswith("Done:")
                refused = last.action is not None and last.action["outcome"] == "refused"
                if refused:
                    refusals += 1
                    refusals_with_reason += bool(last.action.get("reason")) and last.action["reason"] in (
                        last.text or ""
                    )
                made += changed
                ok = asked and ((done and allowed) or (refused and not allowed and not changed))
            right.setdefault(kind, []).append(ok)
            if not ok and args.verbose:
                print(f"MISS {kind}: {item['messages']} -> {[(r.route.reason, r.text) for r in results]}")

    def share(kind: str) -> float:
        return round(100 * sum(right.get(kind, [])) / max(1, len(right.get(kind, []))), 1)

    ordered = sorted(change_ms)
    return {
        "change_conversations": len(script),
        "change_by_kind": {kind: len(values) for kind, values in right.items()},
        "cancel_right_pct": share("cancel"),
        "address_change_right_pct": share("address"),
        "declined_unchanged_pct": share("no"),
        "wrong_email_change_refused_pct": share("wrong e-mail"),
        "changes_made": made,
        "changes_without_a_yes": unasked_changes,
        "refusals_with_the_shops_reason": f"{refusals_with_reason}/{refusals}",
        "change_ms_p50": round(statistics.median(ordered), 1) if ordered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="where the promoted classifier is")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verbose", action="store_true", help="print every conversation that missed")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
