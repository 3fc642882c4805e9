"""The model stores on disk: one folder per version, and a pointer to the promoted one.

LoRA adapters and intent classifiers each have one. Versions are named `<prefix>-v<N>` and never
reused, so vLLM never sees two adapters under one name.
"""

import json
import os
import re
from pathlib import Path

from finetune.sft import ADAPTER_META

ACTIVE_FILE = "active.json"
# bot.intents.CLASSIFIER_FILE; not imported, so that the store does not pull in torch.
CLASSIFIER_MARKER = "classifier.json"


class AdapterNotFound(Exception):
    """The named adapter version does not exist in the store."""


class AdapterRegistry:
    """Versions kept under one root folder; a version is complete once its marker file exists."""

    def __init__(self, root: Path, prefix: str = "domain", marker: str = ADAPTER_META) -> None:
        self.root = root
        self.prefix = prefix
        self.marker = marker
        self._pattern = re.compile(rf"^{re.escape(prefix)}-v(\d+)$")

    def path(self, name: str) -> Path:
        return self.root / name

    def versions(self) -> list[str]:
        """Complete versions, oldest first; staging folders of interrupted runs are skipped."""
        if not self.root.exists():
            return []
        found = [
            (int(match.group(1)), entry.name)
            for entry in self.root.iterdir()
            if (match := self._pattern.match(entry.name)) and (entry / self.marker).exists()
        ]
        return [name for _, name in sorted(found)]

    def next_name(self) -> str:
        numbers = [
            int(match.group(1))
            for entry in (self.root.iterdir() if self.root.exists() else [])
            if (match := self._pattern.match(entry.name.removesuffix(".partial")))
        ]
        return f"{self.prefix}-v{max(numbers, default=0) + 1}"

    def _pointer(self) -> dict:
        pointer = self.root / ACTIVE_FILE
        return json.loads(pointer.read_text()) if pointer.exists() else {}

    def active(self) -> str | None:
        """The promoted version, or None when nothing has been promoted yet."""
        name = self._pointer().get("active")
        return name if name in self.versions() else None

    def previous(self) -> str | None:
        """The version promoted before the active one (what a rollback returns to)."""
        history = self._pointer().get("history", [])
        active = self.active()
        return next((name for name in reversed(history) if name != active and name in self.versions()), None)

    def promote(self, name: str) -> None:
        if name not in self.versions():
            raise AdapterNotFound(name)
        pointer = self._pointer()
        history = [*pointer.get("history", []), *([pointer["active"]] if pointer.get("active") else [])]
        # Write-then-rename, so a crash never leaves a half-written pointer.
        staging = self.root / (ACTIVE_FILE + ".tmp")
        staging.write_text(json.dumps({"active": name, "history": history[-20:]}))
        os.replace(staging, self.root / ACTIVE_FILE)

    def metadata(self, name: str) -> dict:
        if name not in self.versions():
            raise AdapterNotFound(name)
        return json.loads((self.path(name) / self.marker).read_text())


def classifier_registry(root: Path) -> AdapterRegistry:
    """The intent classifiers' store: folders `intent-vN` holding a classifier.json."""
    return AdapterRegistry(root, prefix="intent", marker=CLASSIFIER_MARKER)
