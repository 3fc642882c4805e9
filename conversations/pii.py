"""Finds personal data in free text (e-mail addresses, phone numbers, card numbers, IBANs) and masks it.

Exports, the training dataset builder and the retention job call `mask_pii`; names and street
addresses are not detected (no pattern finds them reliably), so anonymised text may still hold them.
"""

import re
from collections.abc import Callable

EMAIL_MASK, PHONE_MASK, CARD_MASK, IBAN_MASK = "[email]", "[phone]", "[card]", "[iban]"

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}(?![\w-])", re.IGNORECASE)
# Country code and check digits, then 11 to 30 letters or digits in any case, grouped by single spaces any
# way ("de89 3704 0044 0532 0130 00", "DE 89 37040044 053201 3000"); the mod-97 check confirms it, trying
# shorter prefixes when the match ran on into the next word.
_IBAN = re.compile(r"\b[A-Za-z]{2} ?\d{2}(?: ?[A-Za-z0-9]){11,30}\b")
# 13 to 19 digits, optionally grouped by single spaces, hyphens or dots; confirmed by the Luhn check.
_CARD = re.compile(r"(?<![\d.-])\d(?:[ .-]?\d){12,18}(?![\d])")
# An optional + or 00, then digits with the separators people type; digit counts are checked below.
# Not next to a letter, '#', '-' or a decimal point: "LL-10423388" and "#10423388" are order numbers.
_PHONE = re.compile(r"(?<![\w#/.+-])(?:\+\s?)?\(?\d[\d ()/-]{6,}\d(?![\w-]|[.,]\d)")
# Dotted numbers: groups of 2 to 4 digits joined by dots ("415.555.0100", "06.12.34.56.78"), so that
# decimals ("3.14159265", "1299.00") stay as they are.
_DOTTED_PHONE = re.compile(r"(?<![\w#/.+-])(?:\+\s?\d{1,3}[ .]?)?\(?\d{2,4}\)?(?:\.\d{2,4}){2,5}(?![\w-]|[.,]\d)")
# Shapes a phone pattern also matches that are not phone numbers: dates and year ranges.
_NOT_PHONE = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4} ?- ?\d{4}|\d{4}\.\d{1,2}\.\d{1,2}"
)


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
    """Whether a string is an IBAN by its ISO 13616 mod-97 check (any case, any single spaces)."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return CARD_MASK if luhn_valid(digits) else match.group()


def _iban(match: re.Match[str]) -> str:
    text = match.group()
    # The longest prefix ending at a group boundary that passes the check: "DE89 ... 00 for" holds the IBAN.
    for end in range(len(text), 14, -1):
        if (end == len(text) or text[end] == " ") and iban_valid(text[:end]):
            return IBAN_MASK + text[end:]
    return text


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
    (_DOTTED_PHONE, _phone),
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
