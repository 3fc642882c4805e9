"""Actions: the dialogue manager looks orders up in the demo shop's order API, served for real over HTTP."""

import asyncio
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.actions import DECLINED_REPLY, NOT_FOUND_REPLY, ActionRunner, load_actions, mask
from bot.context import ChatTemplateCounter, Turn
from bot.dialogue import DialogueManager, Swappable, TurnResult
from bot.domain import DomainPackError, default_pack_path, load_pack
from bot.routing import Decision, DialogueState, RoutingConfig, RuleRouter
from tests.bot.test_dialogue import KeywordClassifier, ScriptedModel, knowledge
from tests.utils.ports import free_port
from tests.utils.shop import KEY, ORDERS, Served, demo_shop, faulty_shop

PACK = load_pack(default_pack_path())
SHIPPED = ORDERS["LL-104233"]
PROCESSING = ORDERS["LL-104240"]


@pytest.fixture(scope="module")
def shop() -> Iterator[Served]:
    with Served(demo_shop()) as served:
        yield served


@pytest.fixture(scope="module")
def faulty() -> Iterator[Served]:
    app = faulty_shop()
    with Served(app) as served:
        served.calls = app.state.calls
        yield served


@pytest.fixture(scope="module")
def counter(base_model_dir) -> ChatTemplateCounter:
    return ChatTemplateCounter(base_model_dir)


# A Wednesday at 10:00 in New York: within the demo pack's business hours.
OPEN_HOURS = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


class ActionClassifier(KeywordClassifier):
    """The keyword classifier, with the intents of the order changes first ("cancel my order")."""

    RULES = {"cancel": "cancel_order", "address": "change_address", **KeywordClassifier.RULES}


def dialogue(counter: ChatTemplateCounter, base_url: str, *, key: str = KEY, model: ScriptedModel | None = None):
    runner = ActionRunner(
        load_actions(PACK), base_url=base_url, secrets={"demo_shop_key": key}, handoff_message=PACK.handoff_message
    )
    return DialogueManager(
        pack=PACK, llm=model or ScriptedModel(), counter=counter, models=Swappable("domain-v1"),
        classifier=Swappable(ActionClassifier()), router=RuleRouter(PACK, RoutingConfig()), context_tokens=900,
        reply_tokens=100, summary_model="base", knowledge=Swappable(knowledge()), actions=runner,
        clock=lambda: OPEN_HOURS,  # the handoffs here happen while the team is in (tests/bot/test_desk_hours.py)
    )  # fmt: skip


def chat(manager: DialogueManager, messages: list[str], state: DialogueState | None = None) -> list[TurnResult]:
    """Send the customer's messages one by one, as the chat service does; the result of every turn."""

    async def run() -> list[TurnResult]:
        turns: list[Turn] = []
        current = state or DialogueState()
        results = []
        for text in messages:
            turns.append(Turn("customer", text))
            streamed = []
            async for event in manager.respond(turns=turns, state=current):
                if isinstance(event, TurnResult):
                    assert (event.text or "") == "".join(streamed).strip()
                    results.append(event)
                else:
                    streamed.append(event)
            current = results[-1].state
            turns.append(Turn("bot", results[-1].text or ""))
        return results

    return asyncio.run(run())


def test_a_verified_customer_gets_the_status_and_tracking_number(counter, shop: Served) -> None:
    model = ScriptedModel("Your order shipped yesterday.")
    manager = dialogue(counter, f"{shop.url}/demo-shop", model=model)
    asked, answered = chat(manager, ["Where is my order LL-104233?", f"It's {SHIPPED.customer_email.upper()}"])

    assert asked.route.decision is Decision.ask_details and asked.route.missing_slots == ("email",)
    assert "e-mail" in asked.text and asked.action is None
    assert answered.route.decision is Decision.answer and answered.route.reason == "action order_status"
    assert f"shipped on {SHIPPED.shipped_on} with {SHIPPED.carrier}" in answered.text
    assert SHIPPED.tracking_number in answered.text and SHIPPED.estimated_delivery in answered.text
    # Nothing beyond the allowed fields reaches the customer, and the model never wrote the answer.
    assert SHIPPED.customer_name not in answered.text and SHIPPED.shipping_address not in answered.text
    assert model.prompts == []
    trace = answered.trace()["action"]
    assert trace["outcome"] == "ok" and trace["attempts"] == 1 and trace["ms"] > 0
    assert trace["inputs"] == {"order_number": "LL-104233", "email": mask(SHIPPED.customer_email.upper())}
    assert SHIPPED.customer_email.upper() not in str(trace)
    # The slots the trace lists are masked the same way: staff never read the customer's e-mail there.
    assert answered.trace()["slots"] == {"order_number": "LL-104233", "email": mask(SHIPPED.customer_email.upper())}
    assert SHIPPED.customer_email.upper() not in str(answered.trace())
    assert answered.state.slots["email"] == SHIPPED.customer_email.upper()  # the bot itself keeps the real one
    assert answered.check["verdict"] == "from the action result"
    assert answered.check["fields"]["status"] == "shipped"
    assert answered.state.pending_intent is None and answered.state.status == "bot"


def test_both_details_in_one_message_and_a_processing_order(counter, shop: Served) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    [result] = chat(manager, [f"Where is my order {PROCESSING.order_number}? My e-mail is {PROCESSING.customer_email}"])
    assert "has not shipped yet" in result.text and PROCESSING.placed_on in result.text
    assert "tracking number is" not in result.text


def test_a_wrong_email_and_an_unknown_order_get_the_same_refusal_and_guessing_is_limited(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    wrong, unknown, third, after = chat(
        manager,
        [
            f"Where is my order {SHIPPED.order_number}? My e-mail is {PROCESSING.customer_email}",
            f"Where is my order LL-999999? My e-mail is {PROCESSING.customer_email}",
            f"Where is my order {SHIPPED.order_number}? My e-mail is someone@example.com",
            f"Where is my order {SHIPPED.order_number}? My e-mail is {SHIPPED.customer_email}",
        ],
    )
    assert wrong.text == unknown.text == NOT_FOUND_REPLY  # never says which of the two was wrong
    assert SHIPPED.status not in wrong.text and SHIPPED.tracking_number not in wrong.text
    assert wrong.action["outcome"] == unknown.action["outcome"] == "not found"
    assert wrong.state.identity_failures == 1 and unknown.state.identity_failures == 2
    assert wrong.state.pending_intent == "order_status"  # the customer may correct either detail next
    # The third wrong pair hands the conversation to a teammate; the bot answers nothing more, even a right pair.
    assert third.route.decision is Decision.handoff and third.state.status == "pending_human"
    assert PACK.handoff_message in third.text
    assert after.route.decision is Decision.silent and after.text is None


def test_a_customer_who_moves_on_is_not_asked_again_nor_counted_again(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    asked, moved_on = chat(manager, [f"Where is my order {SHIPPED.order_number}?", "How long do refunds take?"])
    assert asked.route.decision is Decision.ask_details and asked.state.pending_intent == "order_status"
    assert moved_on.action is None and moved_on.text != asked.text and moved_on.state.pending_intent is None

    refused, thanks = chat(
        manager, [f"Where is my order {SHIPPED.order_number}? My e-mail is {PROCESSING.customer_email}", "ok thanks"]
    )
    assert refused.text == NOT_FOUND_REPLY and refused.state.identity_failures == 1
    assert thanks.action is None and thanks.state.identity_failures == 1  # the same wrong pair is not tried again
    assert NOT_FOUND_REPLY not in thanks.text


def test_after_too_many_wrong_pairs_no_lookup_is_made(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    [result] = chat(
        manager,
        [f"Where is my order {SHIPPED.order_number}? My e-mail is {SHIPPED.customer_email}"],
        DialogueState(identity_failures=3),
    )
    assert result.route.decision is Decision.handoff and SHIPPED.tracking_number not in result.text
    assert result.action["attempts"] == 0


def test_a_general_question_is_answered_from_the_help_content_without_a_lookup(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    [result] = chat(manager, ["How do I track my order?"])
    assert result.action is None


@pytest.mark.parametrize(
    ("fault", "outcome", "attempts"),
    [
        ("error", "unavailable", 2),  # 500: retried once (GET is idempotent), then a teammate
        ("slow", "unavailable", 2),  # no answer within the 2 s timeout, twice
        ("html", "unexpected result", 1),
        ("forbidden", "rejected", 1),
        ("invented", "unexpected result", 1),
    ],
)
def test_a_failing_order_system_gets_an_honest_reply_and_a_teammate(counter, faulty, fault, outcome, attempts) -> None:
    manager = dialogue(counter, f"{faulty.url}/{fault}")
    [result] = chat(manager, [f"Where is my order {SHIPPED.order_number}? My e-mail is a@example.com"])
    assert result.route.decision is Decision.handoff and result.state.status == "pending_human"
    assert result.text.startswith("Sorry,") and PACK.handoff_message in result.text
    assert f"order {SHIPPED.order_number}" in result.text
    for status in ("shipped", "processing", "delivered", "cancelled", "teleported"):
        assert status not in result.text.lower()
    assert result.action["outcome"] == outcome and result.action["attempts"] == attempts
    if fault == "slow":
        assert result.action["ms"] < 2 * 2000 + 1500


def test_one_retry_recovers_from_a_passing_failure(counter, faulty) -> None:
    manager = dialogue(counter, f"{faulty.url}/flaky")
    [result] = chat(manager, [f"Where is my order {SHIPPED.order_number}? My e-mail is {SHIPPED.customer_email}"])
    assert result.action["outcome"] == "ok" and result.action["attempts"] == 2 and result.action["status_code"] == 200
    assert SHIPPED.tracking_number in result.text


def test_an_order_system_that_is_down_gets_an_honest_reply(counter) -> None:
    manager = dialogue(counter, f"http://127.0.0.1:{free_port()}/demo-shop")  # nothing listens there
    [result] = chat(manager, [f"Where is my order {SHIPPED.order_number}? My e-mail is {SHIPPED.customer_email}"])
    assert result.route.decision is Decision.handoff and "can't reach our order system" in result.text
    assert result.action["outcome"] == "unavailable" and result.action["status_code"] is None


def test_a_wrong_api_key_is_refused_by_the_demo_shop(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop", key="not-the-key")
    [result] = chat(manager, [f"Where is my order {SHIPPED.order_number}? My e-mail is {SHIPPED.customer_email}"])
    assert result.action["outcome"] == "rejected" and result.action["status_code"] == 401
    assert SHIPPED.tracking_number not in result.text


def pack_with(tmp_path: Path, actions_yaml: str):
    folder = tmp_path / "pack"
    shutil.copytree(default_pack_path(), folder)
    (folder / "actions.yaml").write_text(actions_yaml, encoding="utf-8")
    return load_pack(folder)


GOOD = (default_pack_path() / "actions.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("intents: [order_status]", "intents: [order_tracking]"), "actions.yaml:3: action 'order_status' refers to "
         "unknown intent 'order_tracking'"),
        (('url: "{base_url}/orders/{order_number}"', 'url: "{base_url}/orders/{order_id}"'),
         "request.url uses ['order_id'], which are not inputs"),
        (("timeout_s: 2", "timeout_s: 0"), "request.timeout_s: Input should be greater than 0"),
        (("method: GET", "method: FETCH"), "request.method: Input should be 'GET'"),
        (("changes: false", "changes: maybe"), "changes: Input should be a valid boolean"),
        (("changes: false", "changes: true"), "an action that changes something (changes: true) needs `confirm`"),
        (("  refused: \"I couldn't cancel", "  refusal: \"I couldn't cancel"),
         "refusal: Extra inputs are not permitted"),
        (("confirm: I'll cancel order {order_number}.", "confirm: I'll cancel order {order}."),
         "confirm uses ['order'], which are not inputs"),
        (('shipping_address: "{new_address}"', 'shipping_address: "{address}"'),
         "request.body uses ['address'], which are not inputs"),
        (("cancelled on {cancelled_on}", "cancelled by {customer_name}"),
         "reply template 'cancelled' uses ['customer_name'], which are not in result_fields"),
        (("  verify:", "  verfiy:"), "verfiy: Extra inputs are not permitted"),
        (("    field: customer_email\n    input: email", "    field: customer_email\n    input: phone"),
         "verify.input 'phone' is not an input"),
    ],
)  # fmt: skip
def test_a_malformed_actions_file_names_the_problem(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    pack = pack_with(tmp_path, GOOD.replace(old, new))
    with pytest.raises(DomainPackError) as error:
        load_actions(pack)
    assert message in str(error.value) and "actions.yaml" in str(error.value)


def test_invalid_yaml_and_a_missing_secret_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DomainPackError, match="actions.yaml: invalid YAML"):
        load_actions(pack_with(tmp_path, GOOD + "\n  - [unclosed"))
    with pytest.raises(DomainPackError, match=r"needs secret\(s\) \['demo_shop_key'\].*SUPPORTBOT_ACTION_SECRETS"):
        ActionRunner(load_actions(PACK), base_url="http://127.0.0.1:1", secrets={}, handoff_message="bye")


def test_a_customer_the_site_vouched_for_is_not_asked_for_the_email(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    verified = DialogueState(verified_email=SHIPPED.customer_email)
    own, other = chat(
        manager, [f"Where is my order {SHIPPED.order_number}?", f"and order {PROCESSING.order_number}?"], verified
    )
    assert own.route.reason == "action order_status" and SHIPPED.tracking_number in own.text
    assert own.action["identity"] == "signed" and own.action["inputs"]["email"] == mask(SHIPPED.customer_email)
    assert "email" not in own.state.slots  # the vouched-for e-mail is not turned into something the customer said
    assert other.text == NOT_FOUND_REPLY and other.state.identity_failures == 1  # not theirs: refused all the same
    # An e-mail the customer types is checked like any other.
    [typed] = chat(
        manager, [f"Where is my order {PROCESSING.order_number}? My e-mail is {PROCESSING.customer_email}"], verified
    )
    assert typed.action["identity"] == "given" and PROCESSING.placed_on in typed.text


# Processing orders of the demo shop: placed this morning (cancellable for 2 hours of the shop's clock) or days ago.
RECENT, RECENT_2, RECENT_3 = ORDERS["LL-104352"], ORDERS["LL-104436"], ORDERS["LL-104520"]
OLD = ORDERS["LL-104268"]
NEW_ADDRESS = "12 Oak Avenue, Columbus, OH 43215"


def shop_order(shop: Served, number: str) -> dict:
    response = httpx.get(f"{shop.url}/demo-shop/orders/{number}", headers={"Authorization": f"Bearer {KEY}"})
    return response.json()


def test_a_cancellation_is_stated_confirmed_then_made_once(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    [asked] = chat(manager, [f"Please cancel my order {RECENT.order_number}, e-mail {RECENT.customer_email}"])
    assert asked.route.decision is Decision.ask_details and asked.route.missing_slots == ("confirmation",)
    assert (
        asked.text
        == f"I'll cancel order {RECENT.order_number}. This can't be undone. Shall I go ahead? Please answer yes or no."
    )
    assert asked.action is None and asked.state.pending_action["name"] == "cancel_order"
    assert shop_order(shop, RECENT.order_number)["status"] == "processing"  # nothing happens before the yes
    [done] = chat(manager, ["yes"], asked.state)

    assert done.route.decision is Decision.answer and done.text.startswith(
        f"Done: order {RECENT.order_number} is cancelled"
    )
    assert shop_order(shop, RECENT.order_number)["status"] == "cancelled"
    trace = done.action
    assert trace["changes"] is True and trace["confirmed"] is True and trace["outcome"] == "ok"
    assert trace["idempotency_key"] == asked.state.pending_action["key"]
    assert trace["inputs"]["email"] == mask(RECENT.customer_email) and done.state.pending_action is None
    # The same yes handled again (a retried request) replays the shop's answer under the same key: one cancellation.
    [again] = chat(manager, ["yes"], asked.state)
    assert again.text == done.text and again.action["idempotency_key"] == trace["idempotency_key"]
    # A second yes with nothing waiting changes nothing.
    [extra] = chat(manager, ["yes"], done.state)
    assert extra.action is None


def test_a_no_or_another_message_changes_nothing(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    first = f"cancel order {RECENT_2.order_number} please, my e-mail is {RECENT_2.customer_email}"
    _, declined = chat(manager, [first, "no thanks"])
    assert declined.text == DECLINED_REPLY and declined.action["outcome"] == "declined"
    assert declined.action["attempts"] == 0 and declined.state.pending_action is None
    _, moved_on = chat(manager, [first, "How long do refunds take?"])
    assert moved_on.state.pending_action is None and (moved_on.action is None)
    assert shop_order(shop, RECENT_2.order_number)["status"] == "processing"


def test_the_shop_refusing_a_change_is_reported_in_its_own_words(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    _, shipped = chat(manager, [f"cancel order {SHIPPED.order_number}, e-mail {SHIPPED.customer_email}", "yes please"])
    assert shipped.text == (
        f"I couldn't cancel order {SHIPPED.order_number}: our order system says order {SHIPPED.order_number} has "
        "already shipped, so it can no longer be cancelled."
    )
    assert shipped.action["outcome"] == "refused" and shipped.action["status_code"] == 409
    _, late = chat(manager, [f"cancel order {OLD.order_number}, e-mail {OLD.customer_email}", "yes"])
    assert (
        f"within 2 hours of ordering, and order {OLD.order_number} was placed on {OLD.placed_on} at 09:00" in late.text
    )
    assert shop_order(shop, OLD.order_number)["status"] == "processing"
    _, wrong = chat(manager, [f"cancel order {RECENT_3.order_number}, e-mail {OLD.customer_email}", "yes"])
    assert wrong.text == NOT_FOUND_REPLY and wrong.state.identity_failures == 1  # not their order: same refusal
    assert shop_order(shop, RECENT_3.order_number)["status"] == "processing"


def test_the_delivery_address_changes_before_shipping_only(counter, shop) -> None:
    manager = dialogue(counter, f"{shop.url}/demo-shop")
    asked, done = chat(
        manager,
        [
            f"Please change the delivery address of order {OLD.order_number} to {NEW_ADDRESS}. "
            f"I'm {OLD.customer_email}",
            "ok",
        ],
    )
    assert asked.text.startswith(f"I'll change the delivery address of order {OLD.order_number} to {NEW_ADDRESS}.")
    assert done.text == f"Done: order {OLD.order_number} will now be delivered to {NEW_ADDRESS}."
    assert shop_order(shop, OLD.order_number)["shipping_address"] == NEW_ADDRESS
    # Staff see the new address masked in the call's inputs, the slots and the result's fields (the reply itself
    # states it, as sent); the order's status stays readable.
    trace = done.trace()
    assert all(NEW_ADDRESS not in str(trace[part]) for part in ("action", "slots", "check"))
    assert trace["check"]["fields"]["status"] == "processing"
    asked_first, _, refused = chat(
        manager,
        [f"change the address of order {SHIPPED.order_number}", f"{SHIPPED.customer_email}, {NEW_ADDRESS}", "yes"],
    )
    assert asked_first.route.decision is Decision.ask_details
    assert refused.text.endswith("has already shipped, so its address can no longer be changed.")
    assert shop_order(shop, SHIPPED.order_number)["shipping_address"] == SHIPPED.shipping_address
