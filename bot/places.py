"""Places a customer names that the help content only covers by region: "Do you ship to France?" where the articles
say "all European Union countries". The question is searched together with the region, so retrieval and answer
ranking find the rule that applies; the reply check still refuses a claim naming France itself (bot/grounding.py).
"""

import re

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


def regions_named(text: str, known: str) -> list[str]:
    """The regions of `REGIONS` that places in `text` belong to, when `known` (the help content) names the
    region but not the place. "Northern Ireland" is read as the UK, not as Ireland."""
    found = []
    for region, members in REGIONS.items():
        if not any(_named(name, known) for name in (region, *ALIASES.get(region, ()))):
            continue
        rest = text
        for other in REGIONS.values():  # the longer names first: "Northern Ireland" before "Ireland"
            for name in sorted(other, key=len, reverse=True):
                if " " in name and _named(name, rest) and name not in members:
                    rest = re.sub(re.escape(name), " ", rest, flags=re.IGNORECASE)
        if any(_named(name, rest) and not _named(name, known) for name in members):
            found.append(region)
    return found


def with_regions(query: str, known: str) -> str:
    """`query` with the regions its places belong to appended ("shipping to France (European Union)")."""
    regions = regions_named(query, known)
    return f"{query} ({', '.join(regions)})" if regions else query
