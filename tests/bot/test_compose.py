"""Replies made of the help passages' own sentences keep the article's order and layout."""

from collections.abc import Sequence

from bot.compose import compose_reply
from bot.grounding import Candidate
from bot.knowledge import Article, Passage, split_passages

TEXT = """Returns are free. You have 30 days. Refunds take 5 days.

## Start a return

1. Open your orders.
2. Choose the item.

## Opening hours

- Monday to Friday, 9 to 5
- Saturday, 10 to 2
"""


def chosen(passages: Sequence[Passage], *sentences: str) -> list[Candidate]:
    """The sentences as the ranking would choose them, best first."""
    found = []
    for rank, sentence in enumerate(sentences):
        number = next(n for n, p in enumerate(passages) if sentence in p.text)
        found.append(Candidate(sentence, 1.0 - rank / 10, 0.0, 0.0, number))
    return found


def test_sentences_come_in_the_articles_order_and_a_step_only_with_its_procedure() -> None:
    passages = split_passages(Article("returns", "Returns", TEXT))
    reply = compose_reply(chosen(passages, "Refunds take 5 days.", "Returns are free.", "Choose the item."), passages)
    assert reply == "Returns are free. Refunds take 5 days."  # the step means nothing outside its procedure
    reply = compose_reply(chosen(passages, "Choose the item.", "Returns are free."), passages)
    assert reply == "1. Open your orders.\n2. Choose the item."


def test_a_bullet_comes_under_its_heading_when_the_list_has_no_lead_in() -> None:
    passages = split_passages(Article("returns", "Returns", TEXT))
    reply = compose_reply(chosen(passages, "Saturday, 10 to 2.", "You have 30 days."), passages)
    assert reply == "You have 30 days. Opening hours: Saturday, 10 to 2."
