"""The model stores on disk: one folder per version, and a pointer to the promoted one.

LoRA adapters and intent classifiers each have one. Versions are named `<prefix>-v<N>` and never
reused, so vLLM never sees two adapters under one name.
"""

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import httpx
from pydantic import BaseModel

from bot.vllm_admin import AdapterLoadFailed, load_adapter_into_vllm

logger = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"
# What training writes into an adapter's folder last (its record of the run): the version is complete once it exists.
ADAPTER_META = "supportbot-adapter.json"
# bot.intents.CLASSIFIER_FILE; not imported, so that the store does not pull in torch.
CLASSIFIER_MARKER = "classifier.json"
# bot.selection.SELECTOR_MARKER, not imported for the same reason.
SELECTOR_MARKER = "selector.json"


class AdapterVersion(BaseModel):
    """One adapter version in the store."""

    name: str
    active: bool
    metadata: dict


class AdapterList(BaseModel):
    """All adapter versions, oldest first, and the one in service."""

    active: str | None
    versions: list[AdapterVersion]


class AdapterNotFound(Exception):
    """The named adapter version does not exist in the store."""

    code = "adapter_not_found"


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

    def listing(self) -> AdapterList:
        """Every version with its metadata, and which one is in service."""
        active = self.active()
        return AdapterList(
            active=active,
            versions=[
                AdapterVersion(name=name, active=name == active, metadata=self.metadata(name))
                for name in self.versions()
            ],
        )

    def metadata(self, name: str) -> dict:
        if name not in self.versions():
            raise AdapterNotFound(name)
        return json.loads((self.path(name) / self.marker).read_text())


def classifier_registry(root: Path) -> AdapterRegistry:
    """The intent classifiers' store: folders `intent-vN` holding a classifier.json."""
    return AdapterRegistry(root, prefix="intent", marker=CLASSIFIER_MARKER)


def selector_registry(root: Path) -> AdapterRegistry:
    """The answer selectors' store: folders `selector-vN` holding a selector.json (bot/selection.py)."""
    return AdapterRegistry(root, prefix="selector", marker=SELECTOR_MARKER)


def promote(registry: AdapterRegistry, name: str, *, serve_on: str | Sequence[str] | None = None) -> str | None:
    """Put version `name` in service and return the version it replaces (a rollback promotes an older one).

    The one way anything is promoted: the CLI, a retraining run, first start, the admin API. With `serve_on`
    (vLLM URLs) the adapter is loaded there first, so a refused load leaves the version in service as it was;
    the running app polls the pointer and swaps the new version in.
    """
    if name not in registry.versions():
        raise AdapterNotFound(name)
    previous = registry.active()
    if serve_on is not None:
        try:
            load_adapter_into_vllm(serve_on, name, registry.path(name))
        except (AdapterLoadFailed, httpx.HTTPError) as error:
            raise AdapterLoadFailed(f"vLLM could not load {name}: {error}") from error
    registry.promote(name)
    logger.info("%s promoted (was %s)", name, previous)
    return previous
