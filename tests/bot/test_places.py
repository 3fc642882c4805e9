"""Places the help content covers only by region: the question is searched with the region."""

from bot.places import regions_named, with_regions

HELP = "Outside the United States we ship to Canada, the United Kingdom and all European Union countries."


def test_a_country_the_help_content_covers_by_region_brings_the_region() -> None:
    assert with_regions("How long does shipping to France take?", HELP) == (
        "How long does shipping to France take? (European Union)"
    )
    assert regions_named("Do you deliver to Scotland?", HELP) == ["United Kingdom"]
    assert regions_named("Can I order from Northern Ireland?", HELP) == ["United Kingdom"], "not Ireland"
    assert regions_named("Do you ship to ireland?", HELP) == ["European Union"]


def test_nothing_is_added_when_the_help_content_names_the_place_or_not_the_region() -> None:
    assert regions_named("Do you ship to Canada?", HELP) == []
    assert regions_named("Do you ship to France?", "We ship to France and Spain.") == []
    assert regions_named("Do you ship to France?", "We ship within the United States only.") == []
    assert regions_named("Is the French press in stock?", HELP) == []
