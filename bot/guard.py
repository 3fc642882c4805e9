"""Protects the system prompt: spots requests for it, and stops replies that would repeat it.

Replies stream through `LeakGuard`, which holds back a short tail so a leak is caught before it is sent.
"""

import re

_INJECTION = re.compile(
    r"ignore (?:all |any |the |your |my )?(?:previous |prior |above |earlier )?(?:instructions|rules|prompts?)"
    r"|(?:system|initial|hidden|original) (?:prompt|instructions|message)"
    r"|(?:reveal|repeat|print|show|tell me|output|what are|recite) (?:me )?(?:your|the) (?:instructions|rules|prompt)"
    r"|you are now (?:a|an|in) |developer mode|jailbreak|\bdan mode\b",
    re.IGNORECASE,
)


def looks_like_injection(text: str) -> bool:
    return bool(_INJECTION.search(text))


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
