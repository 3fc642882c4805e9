"""Protects the system prompt: spots requests for it, and stops replies that would repeat it.

Replies stream through `LeakGuard`, which holds back a short tail so a leak is caught before it is sent.
"""

import re
import unicodedata

_INJECTION = re.compile(
    r"(?:ignore|disregard|forget|override|bypass|skip) (?:all |any |the |your |my |of )*"
    r"(?:previous |prior |above |earlier |preceding |former |existing |original )?"
    r"(?:instructions|rules|prompts?|directions|guidelines|directives|guardrails)"
    r"|(?:system|initial|hidden|original|secret) (?:prompt|instructions|message)"
    r"|(?:reveal|repeat|print|show|tell me|output|what are|recite) (?:me )?(?:your|the) (?:instructions|rules|prompt)"
    r"|you are now (?:a|an|in) |developer mode|jailbreak|\bdan mode\b"
    # The same requests in the languages customers most often write in besides English.
    r"|ignorier\w* (?:\w+ ){0,3}(?:anweisungen|regeln|vorgaben)|systemprompt|systemanweisung"
    r"|ignor\w* (?:\w+ ){0,3}(?:instructions|consignes|r[eè]gles) (?:pr[eé]c[eé]dentes|ant[eé]rieures)"
    r"|ignora\w* (?:\w+ ){0,3}(?:instrucciones|reglas|istruzioni|regole) ?(?:anteriores|precedenti)?"
    r"|(?:instrucciones|prompt) del sistema|prompt (?:du|de) syst[eè]me|prompt di sistema",
    re.IGNORECASE,
)
# Characters that render as nothing (zero-width spaces and joiners, soft hyphens, direction marks): inserted
# between letters they hide a phrase from a plain text match.
_INVISIBLE = re.compile(r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        r"\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")  # fmt: skip


def looks_like_injection(text: str) -> bool:
    """Whether `text` asks the bot to drop its instructions or show them; compatibility forms (full-width
    letters), invisible characters and runs of spacing or punctuation between words do not hide the phrase."""
    folded = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    spaced = re.sub(r"[\s_*~`\-.,:;|/\\]+", " ", folded)
    return bool(_INJECTION.search(folded) or _INJECTION.search(spaced))


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


class LeakGuard:
    """Passes streamed text through unless it starts repeating a protected text verbatim.

    A leak is a run of `window` characters (after normalising case, spacing and punctuation) that also
    appears in the protected text. Only the tail that could still grow into such a run is held back,
    so ordinary replies stream without delay.
    """

    def __init__(self, protected: str, window: int = 60) -> None:
        self.window = window
        self._protected = _normalise(protected)
        self._pending = ""
        self.leaked = False

    def _matching_tail(self, text: str) -> int:
        """Length of the longest normalised suffix of `text` found in the protected text."""
        normalised = _normalise(text)
        for length in range(min(len(normalised), self.window), 0, -1):
            if normalised[-length:] in self._protected:
                return length
        return 0

    def feed(self, piece: str) -> str:
        """Text safe to send now; empty once a leak is found."""
        if self.leaked:
            return ""
        self._pending += piece
        matched = self._matching_tail(self._pending)
        if matched >= self.window:
            self.leaked = True
            self._pending = ""
            return ""
        if matched == 0:
            released, self._pending = self._pending, ""
            return released
        # Hold back the shortest raw tail that still covers the matching normalised suffix.
        for keep in range(1, len(self._pending) + 1):
            if len(_normalise(self._pending[-keep:])) >= matched:
                break
        released, self._pending = self._pending[:-keep], self._pending[-keep:]
        return released

    def flush(self) -> str:
        """The held-back tail, at the end of a reply without a leak."""
        released, self._pending = ("" if self.leaked else self._pending), ""
        return released


# Secrets a support chat must never ask for or repeat. Nouns first, then what asking for them looks like.
_SECRET = (
    r"(?:pass ?words?|pass ?codes?|pass ?phrases?|\bpins?\b(?: codes?| numbers?)?|(?:full |whole |complete |long )?"
    r"(?:credit |debit |bank )?card(?:'s)? (?:numbers?|details|digits)|security codes?|\bcvv2?\b|\bcvc2?\b|\bcsc\b"
    r"|verification codes?|one[- ]time (?:pass)?codes?|\botp\b|login details|sign[- ]in details|credentials)"
)
_ASK = re.compile(
    r"(?:share|send|give|provide|tell|type|paste|post|write|confirm|reply with|need|require|let me know|"
    r"what(?:'s| is| are)|can i (?:have|get)|could you|enter)\b[^.?!\n]{0,40}?"
    + _SECRET
    + r"|"
    + _SECRET
    + r"[^.?!\n]{0,30}?\b(?:here|in (?:the|this) chat|with me|to me)\b",
    re.IGNORECASE,
)
_NEVER = re.compile(r"\b(?:never|not|n't|no need|don't|do not|won't|will not|without)\b", re.IGNORECASE)
_CARD_DIGITS = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_CODE_NEAR = re.compile(r"(?:security code|\bcvv2?\b|\bcvc2?\b|\bcsc\b|\bpin\b)\D{0,20}(\d{3,4})\b", re.IGNORECASE)
_GIVEN_SECRET = re.compile(
    r"(?:password|passcode|pin|security code|cvv|cvc)\s*(?:is|was|:|=)\s*[\"']?([^\s\"',;]{3,})", re.IGNORECASE
)


def secret_reasons(reply: str, customer_text: str = "") -> list[str]:
    """Why `reply` must not be sent: it asks for a secret, or repeats a card number, code or password.

    `customer_text` is what the customer wrote: a password or code they typed must never come back.
    """
    reasons = []
    for match in _ASK.finditer(reply):
        # "We never ask for your full card number" is the opposite of asking for it.
        start = reply.rfind(".", 0, match.start()) + 1
        if not _NEVER.search(reply[start : match.end()]):
            reasons.append(f"asks for a secret: {match.group(0)!r}")
    for digits in _CARD_DIGITS.findall(reply):
        if len(re.sub(r"\D", "", digits)) >= 13:
            reasons.append("repeats a card number")
    if _CODE_NEAR.search(reply):
        reasons.append("repeats a security code")
    for secret in _GIVEN_SECRET.findall(customer_text):
        if secret.lower() in reply.lower():
            reasons.append("repeats a secret the customer typed")
    return reasons
