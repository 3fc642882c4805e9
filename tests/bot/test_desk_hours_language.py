"""Business hours and languages of a domain pack: when the team answers, what a handoff says outside those hours,
which language a customer writes in, and the reply in their language when the bot does not serve it."""

import shutil
from datetime import UTC, datetime

import pytest
import yaml
from pydantic import ValidationError

from bot.dialogue import DialogueManager, Swappable
from bot.domain import DomainPackError, default_pack_path, load_pack
from bot.hours import BusinessHours
from bot.language import LanguageDetection
from bot.routing import Decision, DialogueState, RoutingConfig, RuleRouter
from tests.bot.test_dialogue import KeywordClassifier, ScriptedModel, knowledge, run_turn
from tests.bot.test_dialogue import counter as counter  # noqa: F401  (the shared fixture)

PACK = load_pack(default_pack_path())
HOURS = PACK.business_hours
assert HOURS is not None
# Wednesday 25 November 2026: 15:00 UTC is 10:00 in New York (open); 23:30 UTC is 18:30 (closed).
WEDNESDAY_OPEN = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
WEDNESDAY_EVENING = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
FRIDAY_EVENING = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
CHRISTMAS_EVE_EVENING = datetime(2026, 12, 24, 23, 30, tzinfo=UTC)


def test_the_demo_pack_is_open_on_weekdays_from_nine_to_six_in_new_york() -> None:
    assert HOURS.is_open(WEDNESDAY_OPEN)
    assert not HOURS.is_open(WEDNESDAY_EVENING)
    assert not HOURS.is_open(datetime(2026, 11, 28, 16, 0, tzinfo=UTC))  # Saturday
    assert not HOURS.is_open(datetime(2026, 12, 25, 16, 0, tzinfo=UTC))  # a holiday, a Friday
    assert HOURS.describe_next_open(WEDNESDAY_OPEN) == "today at 10:00 EST"
    assert HOURS.describe_next_open(WEDNESDAY_EVENING) == "tomorrow at 09:00 EST"
    assert HOURS.describe_next_open(FRIDAY_EVENING) == "Monday 30 November at 09:00 EST"
    # Christmas Day is a holiday and then comes the weekend.
    assert HOURS.describe_next_open(CHRISTMAS_EVE_EVENING) == "Monday 28 December at 09:00 EST"
    # Before daylight saving time ends (1 November 2026), New York is on EDT.
    assert HOURS.describe_next_open(datetime(2026, 10, 30, 23, 0, tzinfo=UTC)) == "Monday 2 November at 09:00 EST"
    assert HOURS.describe_next_open(datetime(2026, 10, 28, 23, 0, tzinfo=UTC)) == "tomorrow at 09:00 EDT"


@pytest.mark.parametrize(
    ("hours", "problem"),
    [
        ({"timezone": "Mars/Olympus", "weekly": {"mon": "09:00-17:00"}}, "unknown time zone"),
        ({"weekly": {"mon": "18:00-09:00"}}, "closes before it opens"),
        ({"weekly": {"funday": "09:00-17:00"}}, "not one of mon"),
        ({"weekly": {"mon": "9 to 5"}}, "not an opening span"),
        ({"weekly": {}}, "open on at least one day"),
    ],
)
def test_impossible_business_hours_are_refused_with_the_reason(hours: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        BusinessHours.model_validate(hours)


def test_a_pack_outside_hours_message_must_say_when(tmp_path) -> None:
    folder = tmp_path / "pack"
    shutil.copytree(default_pack_path(), folder)
    data = yaml.safe_load((folder / "pack.yaml").read_text())
    data["outside_hours_message"] = "We are away."
    data["languages"] = ["en", "xx"]
    (folder / "pack.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DomainPackError, match="xx"):
        load_pack(folder)
    data["languages"] = ["en"]
    (folder / "pack.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DomainPackError, match=r"\{next_open\}"):
        load_pack(folder)


def manager(counter, now: datetime) -> DialogueManager:  # noqa: F811
    return DialogueManager(
        pack=PACK, llm=ScriptedModel(), counter=counter, models=Swappable("domain-v1"),
        classifier=Swappable(KeywordClassifier()), router=RuleRouter(PACK, RoutingConfig()), context_tokens=900,
        reply_tokens=100, summary_model="base", knowledge=Swappable(knowledge()), clock=lambda: now,
    )  # fmt: skip


def ask(dialogue: DialogueManager, text: str, state: DialogueState | None = None):
    from bot.context import Turn

    return run_turn(dialogue, [Turn("customer", text)], state or DialogueState())


def test_outside_hours_a_handoff_says_when_the_team_answers_and_asks_for_an_email(counter) -> None:  # noqa: F811
    inside = ask(manager(counter, WEDNESDAY_OPEN), "I want a human please")
    assert inside.route.decision is Decision.handoff and inside.text == PACK.handoff_message
    assert not inside.outside_hours

    outside = ask(manager(counter, FRIDAY_EVENING), "I want a human please")
    assert outside.route.decision is Decision.handoff and outside.state.status == "pending_human"
    assert outside.outside_hours and outside.trace()["outside_hours"] is True
    assert "Monday 30 November at 09:00 EST" in outside.text and "e-mail address" in outside.text


ENGLISH = [
    "Where is my order? I bought it a week ago.", "talk to a person", "Where is my parcel", "ok", "LL-104233",
    "I want a refund", "Hi! Can you help me?", "My lamp arrived with a cracked shade.", "thanks!", "refund please",
]  # fmt: skip
OTHERS = {
    "de": "Wo ist meine Bestellung? Ich warte seit zwei Wochen.",
    "fr": "Bonjour, je voudrais retourner ma lampe, elle est cassée.",
    "es": "¿Dónde está mi pedido? Lo compré hace una semana.",
    "it": "Ciao, vorrei un rimborso per il mio ordine.",
    "pt": "Olá, onde está a minha encomenda? Já paguei.",
    "nl": "Hallo, waar is mijn bestelling? Ik wacht al twee weken.",
}


def test_the_customers_language_is_detected_and_english_is_never_mistaken() -> None:
    detection = LanguageDetection([*PACK.languages, *PACK.language_messages])
    assert {code: detection.detect(text) for code, text in OTHERS.items()} == {code: code for code in OTHERS}
    mistaken = {text: found for text in ENGLISH if (found := detection.detect(text)) not in ("en", None)}
    assert mistaken == {}
    assert detection.detect("Where is my order? I bought it a week ago.") == "en"
    assert detection.detect("12345 !!!") is None


@pytest.mark.parametrize("code", sorted(OTHERS))
def test_a_customer_in_an_unserved_language_is_told_so_in_it_and_handed_to_a_teammate(counter, code) -> None:  # noqa: F811
    result = ask(manager(counter, WEDNESDAY_OPEN), OTHERS[code])
    assert result.route.decision is Decision.handoff and result.route.language == code
    assert result.text == PACK.language_messages[code] and result.state.status == "pending_human"
    assert result.language == code and result.route.reason == f"language {code} is not served"


def test_english_keeps_its_usual_route(counter) -> None:  # noqa: F811
    result = ask(manager(counter, WEDNESDAY_OPEN), "Where is my order?")
    assert result.route.decision is Decision.ask_details and result.language in ("en", None)


def test_a_language_without_a_message_gets_the_english_words(counter) -> None:  # noqa: F811
    dialogue = manager(counter, WEDNESDAY_OPEN)
    dialogue.pack = PACK.model_copy(update={"language_messages": {"de": PACK.language_messages["de"]}})
    dialogue.languages = LanguageDetection(["en", "de", "fr"])
    result = ask(dialogue, OTHERS["fr"])
    assert result.route.language == "fr" and result.text.startswith("Sorry, I can only help in English.")


def test_no_english_example_of_the_demo_pack_is_taken_for_another_language() -> None:
    detection = LanguageDetection([*PACK.languages, *PACK.language_messages])
    examples = [example for intent in PACK.intents for example in intent.examples]
    mistaken = {text: found for text in examples if (found := detection.detect(text)) not in ("en", None)}
    assert len(examples) > 500 and mistaken == {}
