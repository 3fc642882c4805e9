"""The first domain adapter: trained on the domain pack's seed conversations at first start.

The conversations get the same system text the dialogue manager will send, so training matches serving.
"""

import logging
from pathlib import Path

from bot.context import relevant_policies, system_text
from bot.domain import DomainPack, load_pack
from core.settings import Settings
from finetune.sft import LoraRecipe, ProgressFn, TrainResult, train_lora
from runtime.registry import AdapterRegistry, promote

logger = logging.getLogger(__name__)


def training_pack(settings: Settings) -> DomainPack:
    """The configured domain pack as training and evaluation use it: without its seed conversations and must-pass
    checks where the company's own conversations replace them (`pack_seeds` "none")."""
    pack = load_pack(settings.domain_pack)
    return pack.without_seeds() if settings.pack_seeds == "none" else pack


def with_system(pack: DomainPack, messages: list[dict[str, str]], intent: str | None) -> list[dict[str, str]]:
    """A conversation preceded by the system text the dialogue manager sends for its intent."""
    names = {known.name for known in pack.intents}
    if intent in names:
        policies = [pack.policy(policy_id) for policy_id in pack.intent(intent).policies]
    else:
        first = next((m["content"] for m in messages if m["role"] == "user"), "")
        policies = relevant_policies(pack, first)
    return [{"role": "system", "content": system_text(pack, policies)}, *messages]


def seed_dataset(pack: DomainPack) -> list[list[dict[str, str]]]:
    """The seed conversations with the system text the dialogue manager sends for their intent."""
    return [
        with_system(pack, [{"role": m.role, "content": m.content} for m in seed.messages], seed.intent)
        for seed in pack.seed_conversations()
    ]


def ensure_seed_adapter(
    *, registry: AdapterRegistry, base_model_dir: Path, pack: DomainPack, recipe: LoraRecipe,
    on_step: ProgressFn | None = None,
) -> TrainResult | None:  # fmt: skip
    """Train and promote the first adapter unless one is already promoted or the pack has no seed conversations
    (the base model then serves until the first retraining on the company's own); returns None if skipped."""
    if registry.active() is not None:
        return None
    conversations = seed_dataset(pack)
    if not conversations:
        logger.info("%s has no seed conversations: no first adapter, the base model serves", pack.name)
        return None
    name = registry.next_name()
    logger.info("training the first domain adapter %s on %s's seed conversations", name, pack.name)
    result = train_lora(
        base_model_dir=base_model_dir,
        conversations=conversations,
        output_dir=registry.path(name),
        recipe=recipe,
        on_step=on_step,
    )
    promote(registry, name)
    return result
