"""The grounding checker on hand-made replies: facts, negations, unsupported claims, and the passage fallback."""

import pytest

from bot.grounding import GroundingChecker, best_sentences, names_a_rare_term, numbers, sentence_frequency

RETURNS = (
    "You can return most items within 30 days of delivery. Items must be unused and in their original packaging. "
    "We send a prepaid return label, and $5.95 for return shipping is deducted from your refund unless the item "
    "arrived damaged. Gift cards, final-sale items, and opened bedding or pillows cannot be returned. We do not offer "
    "direct exchanges: return the item and place a new order. E-mail support@shop.example.com to start a return."
)
PAYMENTS = (
    "We accept Visa, Mastercard, PayPal and Apple Pay. We do not accept cash on delivery or checks, and we do not "
    "offer payment plans. Orders ship from our warehouse in Columbus, Ohio. Discount: 10% off your first order."
)
WARRANTY = (
    "Only one discount code can be used per order. "
    "Lamps come with a 2-year limited warranty from the date of delivery. It does not cover water damage, and we do "
    "not sell extended warranties. To make a claim, e-mail us a photo of the problem; no receipt is needed."
)


@pytest.fixture(scope="module")
def checker() -> GroundingChecker:
    return GroundingChecker(
        [RETURNS, PAYMENTS, WARRANTY],
        titles=["Returns", "Payments", "Warranty"],
        products=["desk lamp", "lamp", "speaker"],
    )


def failing(checker: GroundingChecker, reply: str) -> list[str]:
    return [reason for sentence in checker.check(reply).sentences for reason in sentence.reasons]


@pytest.mark.parametrize(
    "reply",
    [
        "You can return most items within 30 days of delivery.",
        "Return shipping costs $5.95, which is deducted from your refund.",
        "We do not offer direct exchanges.",
        "Gift cards cannot be returned.",
        "We accept PayPal and Apple Pay.",
        "No receipt is needed for a warranty claim.",
        "Lamps have a two-year warranty.",
        "You get 10 percent off your first order.",
        "Please e-mail support@shop.example.com to start a return.",
        "We ship from Columbus, Ohio.",
        "You're welcome! Is there anything else I can help with?",
    ],
)
def test_replies_that_say_what_the_passages_say_pass(checker: GroundingChecker, reply: str) -> None:
    assert checker.check(reply).ok, failing(checker, reply)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("You have 14 days to return an item.", "number 14"),
        ("Yes, you can use two discount codes on one order.", "says 2"),
        ("Return shipping costs $4.95.", "number 4.95"),
        ("Lamps come with a 3-year warranty.", "number 3"),
        ("You can return items within 30 hours.", "number 30 hour"),
        ("New subscribers get 15% off.", "number 15"),
        ("Write to returns@shop.example.com.", "e-mail returns@shop.example.com"),
        ("See https://shop.example.com/returns for details.", "URL"),
        ("We accept Bitcoin and PayPal.", "name 'bitcoin'"),
        ("Orders ship from our warehouse in Dallas, Texas.", "name 'dallas'"),
        ("You can return your speaker within 30 days.", "product 'speaker'"),
    ],
)
def test_every_number_address_and_name_must_be_in_the_passages(
    checker: GroundingChecker, reply: str, reason: str
) -> None:
    assert any(reason in failure for failure in failing(checker, reply)), failing(checker, reply)


@pytest.mark.parametrize(
    "reply",
    [
        "We offer direct exchanges.",
        "Exchanges are allowed within 30 days of delivery.",
        "Gift cards can be returned.",
        "We don't accept PayPal.",
        "You need a receipt for a warranty claim.",
        "We sell extended warranties.",
        "The warranty covers water damage.",
        "Yes, we offer payment plans.",
    ],
)
def test_a_flipped_negation_contradicts_the_passage(checker: GroundingChecker, reply: str) -> None:
    assert any("contradicts the passage" in failure for failure in failing(checker, reply)), failing(checker, reply)


def test_a_negation_about_something_else_in_the_passage_is_no_contradiction() -> None:
    # The passage's "no" governs "warranty"; what it says about returns is as positive as the reply.
    passage = (
        "Textiles and kitchenware have no warranty but can be returned within 30 days of delivery. "
        "Lamps come with a 2-year limited warranty from the date of delivery."
    )
    checker = GroundingChecker([passage], titles=["Warranty"])
    assert failing(checker, "Textiles can be returned within 30 days of delivery.") == []
    assert any("contradicts the passage" in reason for reason in failing(checker, "Textiles have a warranty."))


@pytest.mark.parametrize(
    "reply",
    ["Return shipping is free.", "We also repaint lamps for a small fee.", "Express delivery is available for lamps."],
)
def test_a_claim_no_passage_supports_fails(checker: GroundingChecker, reply: str) -> None:
    assert any("no passage supports it" in failure for failure in failing(checker, reply)), failing(checker, reply)


def test_what_the_customer_said_may_be_repeated_but_is_not_evidence() -> None:
    checker = GroundingChecker(
        [RETURNS], context="My order LL-104233 arrived 40 days ago, it's a desk lamp.", products=["desk lamp"]
    )
    assert checker.check("You can return the items of order LL-104233 within 30 days of delivery.").ok
    assert not checker.check("You can return it within 40 days.").ok
    assert not checker.check("You can return a speaker within 30 days.").ok
    echo = GroundingChecker([RETURNS], context="Do you offer direct exchanges?")
    assert not echo.check("Yes, we offer direct exchanges.").ok, "an echo of the question is still a claim"


def test_a_claim_about_something_only_the_customer_named_fails() -> None:
    # The returns passage covers "most items"; whether that includes the customer's desk lamp or kettle, no passage
    # says, so the claim is not made (the passage's own sentence answers instead).
    checker = GroundingChecker(
        [RETURNS, WARRANTY], context="Does my kettle have a warranty? It's a desk lamp too.", products=["desk lamp"]
    )
    assert "no passage mentions 'kettle'" in failing(checker, "Yes, your kettle does have a warranty.")
    assert "no passage mentions 'desk'" in failing(checker, "You can return the desk lamp within 30 days.")
    assert checker.check("Sorry about the kettle!").ok, "a pleasantry with their word makes no claim"
    asked = GroundingChecker([RETURNS], context="What's the return window?")
    assert asked.check("What's more, you can return most items within 30 days.").ok, "a contraction is no claim"
    assert checker.check("Lamps come with a 2-year limited warranty.").ok


def test_a_reply_must_speak_to_the_question(checker: GroundingChecker) -> None:
    assert checker.relevant_to("Can I pay with PayPal?", "Yes, we accept PayPal.")
    # True but beside the point: the "No, we don't offer payment plans." to a PayPal question.
    assert not checker.relevant_to("Can I pay with PayPal?", "No, we don't offer payment plans.")


def test_numbers_are_read_with_their_units() -> None:
    assert numbers("Express costs $14.95 and takes 1 to 2 business days; 10% off.") == {
        ("14.95", "$"),
        ("1", ""),
        ("2", "day"),
        ("10", "%"),
    }
    assert numbers("a two-year warranty, within thirty days") == {("2", "year"), ("30", "day")}


def test_the_fallback_picks_the_passage_sentences_that_answer_the_question() -> None:
    assert best_sentences("Do you do exchanges?", [RETURNS]) == [
        "We do not offer direct exchanges: return the item and place a new order."
    ]
    assert "30 days" in " ".join(best_sentences("How many days do I have to send something back?", [RETURNS]))
    assert "no receipt is needed" in " ".join(best_sentences("Do I need my receipt for a warranty claim?", [WARRANTY]))
    assert best_sentences("anything", []) == []


def test_a_claim_about_a_name_only_the_customer_used_fails() -> None:
    shipping = "We ship to the United States, Canada and the European Union. We do not ship to Australia."
    ireland = GroundingChecker([shipping], context="Do you ship to Ireland?")
    # The shape of "We do not ship to Australia" does not make either answer about Ireland true.
    for reply in ("We don't ship to Ireland.", "Yes, we ship to Ireland.", "Sadly, Ireland is not on our list."):
        assert any("no passage mentions 'ireland'" in r for s in ireland.check(reply).sentences for r in s.reasons)
    assert ireland.check("We ship to the European Union and Canada.").ok
    greeted = GroundingChecker([shipping], context="Hi, I'm Siobhan. Do you ship to Canada?")
    assert greeted.check("Thanks, Siobhan!").ok, "a name in a pleasantry claims nothing"


def test_a_name_in_a_passage_title_is_known() -> None:
    checker = GroundingChecker(
        ["Outside the United States we ship to Canada and all European Union countries."],
        titles=["International orders to Canada, the UK and the EU"],
        context="Do you ship to the UK?",
    )
    assert not [reason for reason in failing(checker, "We ship to the UK.") if "name" in reason or "mentions" in reason]
    # But a claim about it needs a sentence that says it: a model wrote this one, on a passage whose sentence says
    # "We cannot ship to other countries yet" under that title.
    negated = GroundingChecker(
        ["We cannot ship to other countries yet.", "Outside the United States we ship to Canada and the EU."],
        titles=["International orders to Canada, the UK and the EU"] * 2,
        context="Do you ship to the UK?",
    )
    assert not negated.check("We do not ship to the UK.").ok
    assert negated.check("We do not ship to other countries yet.").ok


def test_a_word_the_help_content_uses_once_marks_the_sentence_that_answers() -> None:
    frequency = sentence_frequency(f"{RETURNS}\n{PAYMENTS}\n{WARRANTY}")
    assert names_a_rare_term(
        "Can I get my money back in cash on delivery?", "We do not accept cash on delivery.", frequency
    )
    # "return" is in many sentences; "kettle" in none: neither says the sentence is about the question.
    assert not names_a_rare_term("Can I return a kettle?", "You can return most items within 30 days.", frequency)
    assert not names_a_rare_term("Do you sell kettles?", "Lamps come with a 2-year limited warranty.", frequency)
