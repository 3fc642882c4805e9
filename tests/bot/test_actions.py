"""Actions: the dialogue manager looks orders up in the demo shop's order API, served for real over HTTP."""

import asyncio
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.actions import NOT_FOUND_REPLY, ActionRunner, load_actions, mask
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


def dialogue(counter: ChatTemplateCounter, base_url: str, *, key: str = KEY, model: ScriptedModel | None = None):
    runner = ActionRunner(
        load_actions(PACK), base_url=base_url, secrets={"demo_shop_key": key}, handoff_message=PACK.handoff_message
    )
    return DialogueManager(
        pack=PACK, llm=model or ScriptedModel(), counter=counter, models=Swappable("domain-v1"),
        classifier=Swappable(KeywordClassifier()), router=RuleRouter(PACK, RoutingConfig()), context_tokens=900,
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
        (("changes: false", "changes: true"), "changes: true) are not supported yet"),
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
