"""A small lexicon scorer for customer frustration, used to hand off on sustained negative sentiment.

It only has to notice anger reliably enough to offer a human, so it stays transparent and fast.
"""

import re

_NEGATIVE = {
    "angry": 2, "furious": 3, "terrible": 2, "awful": 2, "horrible": 2, "worst": 3, "useless": 2,
    "ridiculous": 2, "unacceptable": 3, "disgusting": 3, "scam": 3, "fraud": 3, "hate": 2, "stupid": 2,
    "pathetic": 3, "annoyed": 1, "annoying": 1, "frustrated": 2, "frustrating": 2, "disappointed": 1,
    "disappointing": 1, "joke": 1, "lawyer": 3, "sue": 3, "never": 1, "wtf": 3, "damn": 2, "crap": 2,
    "rubbish": 2, "incompetent": 3, "waste": 2, "liar": 3, "lied": 3, "fed": 1, "sick": 1,
}  # fmt: skip
_NEGATION_FREE_PHRASES = ("not happy", "not helpful", "doesn't help", "does not help", "no help", "fed up")
_WORD = re.compile(r"[a-z']+")


def negativity(text: str) -> int:
    """0 for neutral text; 3 or more for clearly angry text."""
    lowered = text.lower()
    score = sum(_NEGATIVE.get(word, 0) for word in _WORD.findall(lowered))
    score += 2 * sum(phrase in lowered for phrase in _NEGATION_FREE_PHRASES)
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        score += 3  # shouting
    if "!!" in text:
        score += 1
    return score


def is_negative(text: str, threshold: int = 3) -> bool:
    return negativity(text) >= threshold
