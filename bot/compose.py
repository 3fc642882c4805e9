"""Replies made of the help passages' own sentences, laid out as the article lays them out: in the article's order,
a procedure whole and numbered, a bullet or table row under its lead-in or heading, never alone."""

from collections.abc import Sequence
from dataclasses import dataclass

from bot.articles import Block
from bot.grounding import Candidate
from bot.knowledge import Passage

_ITEMS = {"step", "bullet", "row"}


@dataclass(frozen=True)
class _Placed:
    """A chosen sentence with where the article has it."""

    candidate: Candidate
    passage: Passage
    index: int  # the sentence's place in its passage
    parts: tuple[Block, ...]  # the passage parts it lies in
    layout: list[tuple[str, tuple[Block, ...]]]  # the passage's sentences with their parts (Passage.layout)
    order: tuple[int, int, int]  # its article's first place among the passages, the passage's place, `index`


def _place(chosen: Sequence[Candidate], passages: Sequence[Passage]) -> list[_Placed]:
    first: dict[str, int] = {}
    for number, passage in enumerate(passages):
        first.setdefault(passage.article_slug, number)
    placed = []
    for candidate in chosen:
        passage = passages[candidate.passage]
        layout = passage.layout()
        index = next((i for i, (sentence, _) in enumerate(layout) if sentence == candidate.sentence), len(layout))
        parts = layout[index][1] if index < len(layout) else ()
        order = (first[passage.article_slug], passage.position, index)
        placed.append(_Placed(candidate, passage, index, parts, layout, order))
    return placed


def _members(passage: Passage, group: int | None) -> tuple[Block | None, list[Block]]:
    """The lead-in (if any) and the items of one list or table of `passage`, in the article's order."""
    members = [part for part in passage.parts if part.group == group]
    lead = next((part for part in members if part.kind == "lead_in"), None)
    return lead, [part for part in members if part.kind in _ITEMS]


def _whole_list(passage: Passage, group: int) -> str:
    """A list as the article gives it: its lead-in, then every item on its own line, steps numbered."""
    lead, items = _members(passage, group)
    lines = [lead.text] if lead is not None else []
    lines += [f"{item.position}. {item.text}" if item.kind == "step" else f"- {item.text}" for item in items]
    return "\n".join(lines)


def _under_lead(passage: Passage, group: int | None, items: Sequence[Block]) -> str:
    """Some items of a list, after what introduces them: the lead-in, else the section heading, else the title."""
    lead, _ = _members(passage, group)
    intro = lead.text if lead is not None else passage.heading or passage.title
    joiner = " " if intro[-1:] in (".", "!", "?", ":", ";") else ": "
    return intro + joiner + " ".join(item.text for item in items)


def compose_reply(chosen: Sequence[Candidate], passages: Sequence[Passage]) -> str:
    """A reply of the `chosen` sentences (best first; `Candidate.passage` indexes `passages`) in the article's order.

    When the best one is a step of a numbered list, or the lead-in of a list, the reply is that whole list and
    nothing else. Otherwise a bullet or table row comes after its lead-in (or heading), and a step of a procedure,
    which means nothing outside it, and a lead-in on its own are left out."""
    if not chosen:
        return ""
    placed = _place(chosen, passages)
    best = placed[0]
    groups = [part.group for part in best.parts if part.group is not None]
    if groups:
        _, items = _members(best.passage, groups[0])
        if any(part.kind == "lead_in" for part in best.parts) or any(item.kind == "step" for item in items):
            return _whole_list(best.passage, groups[0])
    pieces: dict[tuple[int, int, int], str] = {}
    lists: dict[tuple[int, int, int], tuple[Passage, int | None, list[Block]]] = {}
    for place in placed:
        kinds = {part.kind for part in place.parts}
        items = [part for part in place.parts if part.kind in _ITEMS]
        if "step" in kinds or kinds == {"lead_in"}:
            continue
        if not items:
            pieces[place.order] = place.candidate.sentence
            continue
        group = items[0].group
        start = min(i for i, (_, parts) in enumerate(place.layout) if any(p.group == group for p in parts))
        key = (place.order[0], place.order[1], start)
        _, _, gathered = lists.setdefault(key, (place.passage, group, []))
        gathered += [item for item in items if item not in gathered]
    for key, (passage, group, items) in lists.items():
        pieces[key] = _under_lead(passage, group, sorted(items, key=lambda item: item.position))
    return " ".join(pieces[key] for key in sorted(pieces))
