"""Intent classifier training for retraining runs and the CLI: train a new version, gate it, promote it.

First start trains one on the domain pack's examples; each retraining run adds the staff's relabels.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.domain import DomainPack, load_pack
from core.settings import Settings
from finetune.intents import ClassifierRecipe, examples_from_pack, intent_texts_from_pack, train_intent_classifier
from runtime.registry import classifier_registry, promote

PROMOTE_TOLERANCE = 0.005
"""A new classifier is promoted unless its held-out macro-F1 is this much below the active one's."""


@dataclass
class TrainedClassifier:
    """A classifier version just trained: what its classifier.json holds and whether it now serves."""

    name: str
    meta: dict[str, Any]
    promoted: bool
    reason: str


def train_pack_classifier(
    settings: Settings,
    recipe: ClassifierRecipe | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> TrainedClassifier:
    """Train a new classifier version on the configured pack and promote it if it is not worse.

    Also what first start calls when no classifier has been promoted yet.
    """
    recipe = recipe or ClassifierRecipe()
    pack = load_pack(settings.domain_pack)
    registry = classifier_registry(settings.classifiers_dir)
    settings.classifiers_dir.mkdir(parents=True, exist_ok=True)
    name = registry.next_name()
    if on_start is not None:
        on_start(name)
    meta = train_intent_classifier(
        examples_from_pack(pack),
        output_dir=registry.path(name),
        recipe=recipe,
        on_progress=on_progress,
        intent_texts=intent_texts_from_pack(pack),
    )
    active = registry.active()
    promoted, reason = True, "no classifier was active"
    if active is not None:
        current = registry.metadata(active)
        if set(current.get("labels", [])) != set(meta["labels"]):
            reason = f"the pack's intents changed since {active}"
        else:
            # Both numbers come from held-out examples that their own classifier was calibrated on
            # before any refit; with an unchanged pack and recipe it is the same split.
            before = (current.get("metrics") or {}).get("macro_f1", 0.0)
            after = (meta.get("metrics") or {}).get("macro_f1", 0.0)
            promoted = after >= before - PROMOTE_TOLERANCE
            reason = f"held-out macro-F1 {after:.3f} vs {before:.3f} for {active}"
    if promoted:
        promote(registry, name)
    return TrainedClassifier(name=name, meta=meta, promoted=promoted, reason=reason)


def retrain_classifier(settings: Settings, pack: DomainPack, relabels: list[tuple[str, str]]) -> dict:
    """Retrain the intent classifier on the pack's examples plus staff relabels, and gate it on
    held-out macro-F1. Skipped when there is nothing new to learn and a classifier is in service."""
    registry = classifier_registry(settings.classifiers_dir)
    active = registry.active()
    known = {intent.name for intent in pack.intents}
    extra = [(text, intent) for text, intent in relabels if intent in known]
    if active is not None and not extra:
        return {"name": None, "skipped": "no intent relabels since the pack's examples", "in_service": active}
    name = registry.next_name()
    settings.classifiers_dir.mkdir(parents=True, exist_ok=True)
    meta = train_intent_classifier(
        examples_from_pack(pack) + extra, output_dir=registry.path(name), intent_texts=intent_texts_from_pack(pack)
    )
    after = (meta.get("metrics") or {}).get("macro_f1", 0.0)
    before = (registry.metadata(active).get("metrics") or {}).get("macro_f1", 0.0) if active else None
    promoted = before is None or after >= before - PROMOTE_TOLERANCE
    if promoted:
        promote(registry, name)
    return {"name": name, "relabels": len(extra), "macro_f1": after, "in_service_macro_f1": before,
            "promoted": promoted}  # fmt: skip
