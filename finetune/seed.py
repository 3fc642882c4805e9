"""The first domain adapter: trained on the domain pack's seed conversations at first start.

The conversations get the same system text the dialogue manager will send, so training matches serving.
"""

import logging
from pathlib import Path

from bot.context import relevant_policies, system_text
from bot.domain import DomainPack
from finetune.registry import AdapterRegistry
from finetune.sft import LoraRecipe, ProgressFn, TrainResult, train_lora

logger = logging.getLogger(__name__)


def seed_dataset(pack: DomainPack) -> list[list[dict[str, str]]]:
    """The seed conversations with the system text the dialogue manager sends for their intent."""
    intents = {intent.name: intent for intent in pack.intents}
    conversations = []
    for seed in pack.seed_conversations():
        messages = [{"role": message.role, "content": message.content} for message in seed.messages]
        if seed.intent in intents:
            policies = [pack.policy(policy_id) for policy_id in intents[seed.intent].policies]
        else:
            policies = relevant_policies(pack, messages[0]["content"])
        conversations.append([{"role": "system", "content": system_text(pack, policies)}, *messages])
    return conversations


def ensure_seed_adapter(
    *, registry: AdapterRegistry, base_model_dir: Path, pack: DomainPack, recipe: LoraRecipe,
    on_step: ProgressFn | None = None,
) -> TrainResult | None:  # fmt: skip
    """Train and promote the first adapter unless one is already promoted; returns None if skipped."""
    if registry.active() is not None:
        return None
    name = registry.next_name()
    logger.info("training the first domain adapter %s on %s's seed conversations", name, pack.name)
    result = train_lora(
        base_model_dir=base_model_dir,
        conversations=seed_dataset(pack),
        output_dir=registry.path(name),
        recipe=recipe,
        on_step=on_step,
    )
    registry.promote(name)
    return result
