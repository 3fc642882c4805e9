"""Places and days the help content names only by region or range: the question is searched with those."""

from bot.places import conversation_places, expanded_query, in_scope, regions_named, with_places

HELP = "Outside the United States we ship to Canada, the United Kingdom and all European Union countries."


def test_a_country_the_help_content_covers_by_region_is_searched_as_the_region() -> None:
    assert expanded_query("How long does shipping to France take?", HELP) == (
        "How long does shipping to the European Union take?"
    )
    assert regions_named("Do you deliver to Scotland?", HELP) == ["United Kingdom"]
    assert regions_named("Can I order from Northern Ireland?", HELP) == ["United Kingdom"], "not Ireland"
    assert expanded_query("Do you ship to Ireland and Northern Ireland?", HELP) == (
        "Do you ship to the European Union and the United Kingdom?"
    )
    assert expanded_query("Do you ship to the Netherlands?", HELP) == "Do you ship to the European Union?"


def test_nothing_changes_when_the_help_content_names_the_place_or_not_the_region() -> None:
    assert regions_named("Do you ship to Canada?", HELP) == []
    assert regions_named("Do you ship to France?", "We ship to France and Spain.") == []
    assert regions_named("Do you ship to France?", "We ship within the United States only.") == []
    assert expanded_query("Is the French press in stock?", HELP) == "Is the French press in stock?"
    assert expanded_query("Do you ship to Canada?", HELP) == "Do you ship to Canada?"


def test_a_country_in_no_region_the_help_content_names_is_another_country() -> None:
    assert expanded_query("Will you deliver to Mexico?", HELP) == "Will you deliver to another country?"
    assert expanded_query("Do you ship to Japan or Germany?", HELP) == (
        "Do you ship to another country or the European Union?"
    )
    assert expanded_query("Can I order a turkey roaster?", HELP) == "Can I order a turkey roaster?"


def test_a_day_the_help_content_does_not_name_brings_the_days_it_does() -> None:
    hours = "Support is open Monday to Friday, 9 am to 6 pm."
    assert expanded_query("Are you open on Saturdays?", hours) == "Are you open on Saturdays? (Monday, Friday, hours)"
    assert expanded_query("Can I reach you at the weekend?", hours).endswith("(Monday, Friday, hours)")
    assert expanded_query("Are you open on Monday?", hours) == "Are you open on Monday?"
    assert expanded_query("Are you open on Saturdays?", HELP) == "Are you open on Saturdays?", "no days in the help"


def test_abroad_is_searched_as_international_where_the_help_content_says_so() -> None:
    international = HELP + " International shipping is a flat $19.95 per order."
    assert expanded_query("How much does shipping abroad cost?", international) == (
        "How much does shipping abroad cost? (international)"
    )
    assert expanded_query("Can you send it outside the US?", international).endswith("(international)")
    assert expanded_query("Do you ship overseas?", HELP) == "Do you ship overseas?", "the help content never says it"
    assert expanded_query("Do you sell outdoor lamps?", international) == "Do you sell outdoor lamps?"


def test_a_heading_about_another_place_is_out_of_scope() -> None:
    headings = ["Shipping in the United States", "International orders to Canada, the UK and the EU", "Returns"]
    known = f"{HELP}\n" + "\n".join(headings)
    assert in_scope(headings, "how long to scotland", known) == [False, True, True]
    assert in_scope(headings, "Shipping to Canada?", known) == [False, True, True]
    assert in_scope(headings, "shipping in the united states", known) == [True, False, True]
    # No place asked: every passage stays. Asked about a place no heading names, the headings about other places
    # are out even when nothing is left: no answer is better than another place's rule.
    assert in_scope(headings, "How long does shipping take?", known) == [True, True, True]
    assert in_scope(headings[:1], "Shipping to Canada?", known) == [False]


def test_a_large_city_is_read_as_its_country_in_any_case() -> None:
    assert expanded_query("how much to ship to toronto", HELP) == "how much to ship to toronto (Canada)"
    assert expanded_query("Shipping to Lyon?", HELP) == "Shipping to Lyon (the European Union)?"
    assert expanded_query("can you send it to osaka", HELP) == "can you send it to osaka (another country)"
    # A word the help content uses is read as that word, and help content that names no place gets no places.
    assert expanded_query("Do you ship from Columbus?", f"{HELP} Our warehouse is in Columbus.") == (
        "Do you ship from Columbus?"
    )
    assert expanded_query("do you have a shop in chicago", "We sell only online.") == "do you have a shop in chicago"


def test_the_conversation_is_about_the_newest_place_a_customer_named() -> None:
    messages = ["hi from glasgow!", "do i get a tracking link?", "how many days does it take?"]
    assert conversation_places(messages, HELP) == ["United Kingdom"]
    assert conversation_places([*messages, "and to my cousin in Toronto?"], HELP) == ["Canada"]
    assert conversation_places(["how many days does it take?"], HELP) == []
    # A question that names no place is searched with the conversation's.
    assert with_places("how many days?", ["United Kingdom"], HELP) == "how many days? (United Kingdom)"
    assert with_places("and to Canada?", ["United Kingdom"], HELP) == "and to Canada?"
    assert with_places("how many days?", [], HELP) == "how many days?"
