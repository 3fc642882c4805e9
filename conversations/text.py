"""What text the store accepts: valid Unicode without control characters, so every database can keep it
and no console, export or prompt carries invisible characters a client slipped in."""

import re
from typing import Annotated

from pydantic import AfterValidator

# C0 and C1 control characters and DEL, except the tab and line breaks a message may hold.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A lone UTF-16 surrogate (JSON allows "\ud800"); no database can encode it as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class InvalidText(ValueError):
    """The text holds a control character or a lone UTF-16 surrogate; `code` is the API's error code."""

    code = "invalid_text"


def plain_text(text: str) -> str:
    """`text` with CR LF as LF; raises `InvalidText` for a control character or a lone surrogate rather than
    dropping what the sender may have meant."""
    if found := _SURROGATE.search(text):
        raise InvalidText(f"The text contains U+{ord(found.group()):04X}, half of a UTF-16 pair, not a character.")
    if found := _CONTROL.search(text):
        raise InvalidText(f"The text contains the control character U+{ord(found.group()):04X}.")
    return text.replace("\r\n", "\n")


# A string field of an input model that goes through `plain_text` (a bad one is a 422 naming the field).
PlainText = Annotated[str, AfterValidator(plain_text)]
