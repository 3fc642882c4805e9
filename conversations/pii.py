"""Finds personal data in free text (e-mail addresses, phone numbers, card numbers, IBANs) and masks it.

Exports, the training dataset builder and the retention job call `mask_pii`; names and street
addresses are not detected (no pattern finds them reliably), so anonymised text may still hold them.
"""

import re
from collections.abc import Callable

EMAIL_MASK, PHONE_MASK, CARD_MASK, IBAN_MASK = "[email]", "[phone]", "[card]", "[iban]"

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}(?![\w-])", re.IGNORECASE)
# Country code, check digits, then groups of four (spaced or not) and a shorter last group.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# 13 to 19 digits, optionally grouped by single spaces or hyphens; confirmed by the Luhn check.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
# An optional + or 00, then digits with the separators people type; digit counts are checked below.
# Not next to a letter, '#', '-' or a decimal point: "LL-10423388" and "#10423388" are order numbers.
_PHONE = re.compile(r"(?<![\w#/.+-])(?:\+\s?)?\(?\d[\d ()/-]{6,}\d(?![\w-]|[.,]\d)")
# Shapes a phone pattern also matches that are not phone numbers: dates and year ranges.
_NOT_PHONE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/-]\d{1,2}[/-]\d{2,4}|\d{4} ?- ?\d{4}")


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum every payment card number carries."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """Whether a string is an IBAN by its ISO 13616 mod-97 check."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return CARD_MASK if luhn_valid(digits) else match.group()


def _iban(match: re.Match[str]) -> str:
    return IBAN_MASK if iban_valid(match.group()) else match.group()


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    international = text.startswith("+") or text.startswith("00")
    if not (7 if international else 8) <= len(digits) <= 15 or _NOT_PHONE.fullmatch(text.strip("() ")):
        return text
    return PHONE_MASK


_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]] = [
    (_EMAIL, EMAIL_MASK),
    (_IBAN, _iban),
    (_CARD, _card),
    (_PHONE, _phone),
]


def mask_pii(text: str) -> str:
    """`text` with e-mail addresses, IBANs, card numbers and phone numbers replaced by [email] etc."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def mask_pii_in(value: object) -> object:
    """`value` with every string inside it (dict values, list items, nested) masked."""
    if isinstance(value, str):
        return mask_pii(value)
    if isinstance(value, dict):
        return {key: mask_pii_in(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_pii_in(item) for item in value]
    return value
