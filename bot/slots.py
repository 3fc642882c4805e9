"""Facts a customer gives (order number, e-mail, phone, product) pulled out of their messages.

Slots outlive context eviction: they are stored with the conversation and rendered into every prompt.
"""

import re
from collections.abc import Mapping, Sequence

# Defaults fit common order-number shapes ("LL-104233", "#104233"); a pack can override any pattern.
DEFAULT_PATTERNS: dict[str, str] = {
    "order_number": r"(?<![\w-])(?:[A-Z]{2,4}-?\d{4,10}|#\d{5,10})(?![\w-])",
    "email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "phone": r"(?<!\w)\+?\d[\d ()-]{7,}\d(?!\w)",
    # "My name is Ada Lovelace": canned replies greet the customer by it ({customer_name}).
    "customer_name": r"\bmy name is\s+((?-i:[A-ZÀ-ÖØ-Þ])[^\W\d_]*(?:[ '-](?-i:[A-ZÀ-ÖØ-Þ])[^\W\d_]*)?)",
}

SLOT_LABELS = {
    "order_number": "order number", "email": "e-mail", "phone": "phone number", "product": "product",
    "customer_name": "customer's name",
}  # fmt: skip
# Slots that identify no one: every other one (e-mail, phone, a new address, a pack's own) is personal, and staff see
# it masked wherever a trace or a conversation's details are shown.
NOT_PERSONAL_SLOTS = frozenset({"order_number", "product"})


def catalogue_pattern(products: Sequence[str]) -> re.Pattern[str]:
    """Any of the product names as whole words, plural or not; longer names win ("desk lamp" over "lamp")."""
    names = sorted({name.strip() for name in products if name.strip()}, key=len, reverse=True)
    words = "|".join(r"\s+".join(map(re.escape, name.split())) for name in names)
    return re.compile(rf"(?<!\w)({words})(?:e?s)?(?!\w)", re.IGNORECASE)


class SlotExtractor:
    """Finds slot values in text: one regular expression per slot, and the pack's product catalogue."""

    def __init__(self, patterns: Mapping[str, str] | None = None, products: Sequence[str] = ()) -> None:
        merged = {**DEFAULT_PATTERNS, **(patterns or {})}
        self.patterns = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in merged.items()}
        self.product_names = {" ".join(name.split()).casefold(): name.strip() for name in products if name.strip()}
        self.product_pattern = catalogue_pattern(products) if self.product_names else None

    def extract(self, text: str) -> dict[str, str]:
        """The last value of each slot mentioned in `text` (customers correct themselves)."""
        found: dict[str, str] = {}
        for name, pattern in self.patterns.items():
            matches = pattern.findall(text)
            if matches:
                value = matches[-1].strip()
                found[name] = value.upper() if name == "order_number" else value
        # A phone pattern would also match long digit runs inside an order number.
        if "phone" in found and "order_number" in found and found["phone"] in found["order_number"]:
            del found["phone"]
        if self.product_pattern is not None:
            mentioned = self.product_pattern.findall(text)
            if mentioned:
                found["product"] = self.product_names[" ".join(mentioned[-1].split()).casefold()]
        return found


def render_slots(slots: Mapping[str, str]) -> str:
    return "; ".join(f"{SLOT_LABELS.get(name, name.replace('_', ' '))}: {value}" for name, value in slots.items())


def mask(value: str) -> str:
    """Personal data as staff see it: "jane@example.com" is "j***@example.com"; masking twice changes nothing."""
    local, at, domain = value.partition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    return f"{value[:1]}***{value[-2:]}" if len(value) > 4 else "***"


# Result fields of an action that hold personal data, by name: shipping_address, email, phone, customer_name...
_PERSONAL_FIELD = re.compile(r"address|e-?mail|phone|name", re.IGNORECASE)


def masked_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """An action result's fields as staff see them in the trace: personal ones (by name) masked."""
    return {name: mask(value) if _PERSONAL_FIELD.search(name) else value for name, value in fields.items()}


def masked_slots(slots: Mapping[str, str]) -> dict[str, str]:
    """The slots as staff see them: the order number and product as given, everything else masked."""
    return {name: value if name in NOT_PERSONAL_SLOTS else mask(value) for name, value in slots.items()}
