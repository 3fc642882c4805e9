"""Personal data is masked in text bound for exports and training; ordinary numbers are left alone."""

import pytest

from conversations.pii import iban_valid, luhn_valid, mask_pii, mask_pii_in


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to jane.doe+shop@example.co.uk.", "write to [email]."),
        ("JANE@EXAMPLE.COM or bob@mail.example.org", "[email] or [email]"),
        ("call +49 30 1234 5678 today", "call [phone] today"),
        ("my number is (030) 1234-5678", "my number is [phone]"),
        ("ring 555-123-4567, thanks", "ring [phone], thanks"),
        ("0044 20 7946 0958", "[phone]"),
        ("06 12 34 56 78", "[phone]"),
        ("card 4111 1111 1111 1111 please", "card [card] please"),
        ("card 4111-1111-1111-1111", "card [card]"),
        ("amex 378282246310005", "amex [card]"),
        ("IBAN DE89 3704 0044 0532 0130 00 for the refund", "IBAN [iban] for the refund"),
        ("GB82WEST12345698765432", "[iban]"),
        # Written as people write them, not as the standard prints them.
        ("iban de89 3704 0044 0532 0130 00 please", "iban [iban] please"),
        ("gb82west12345698765432", "[iban]"),
        ("DE 89 37040044 053201 3000, thanks", "[iban], thanks"),
        ("card 4111.1111.1111.1111 expires soon", "card [card] expires soon"),
        ("call 415.555.0100 today.", "call [phone] today."),
        ("+1 415.555.0100", "[phone]"),
        ("06.12.34.56.78", "[phone]"),
    ],
)
def test_personal_data_is_masked(text: str, masked: str) -> None:
    assert mask_pii(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "order LL-10423388 and #10423388",
        "between 2023-2024 and on 2024-01-15 or 15/01/2024",
        "it costs 1299.00 EUR, version 3.14159265",
        "4111 1111 1111 1112 fails the Luhn check",  # 16 digits: not a card, too long for a phone
        "DE89 3704 0044 0532 0130 01 fails the IBAN check",
        "room 12, 3 lamps, 45 minutes",
        "email me at the shop",
        "on 15.01.2024 it cost 1.299,00 EUR; pi is 3.14159265",
        "de89 is not an iban, nor is de89 3704 0044 0532 0130 01",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert mask_pii(text) == text


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE00 3704 0044 0532 0130 00")


def test_nested_values_are_masked() -> None:
    slots = {"email": "a@b.io", "order_number": "LL-104233", "seen": ["+1 415 555 0100", 3]}
    assert mask_pii_in(slots) == {"email": "[email]", "order_number": "LL-104233", "seen": ["[phone]", 3]}
