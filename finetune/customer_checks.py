"""The pack's must-pass checks as customers get them: each check's message answered by the whole dialogue
(retrieval, routing, the answer check and the settings' `answers_from`) with a given model, not by the bare model.

What customers are told is what the gate must protect. A candidate whose bare reply words a policy wrongly, but
whose wrong sentence the product never sends (the help content's own sentences answer, or the answer check
replaces the model's), tells no customer anything untrue; one whose wrong sentence gets through fails here.
The bare model's replies are still scored (finetune/evaluate.py) and guard against forgetting.

The pack's actions are left out: their replies are templates over the company's systems, never the model's, so
a message that would call one is answered here as if the pack had none, which asks more of the model.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.context import Turn
from bot.dialogue import DialogueManager, Swappable, TurnResult
from bot.domain import Check, DomainPack
from bot.knowledge import KnowledgeIndex, SentenceEncoder
from bot.llm import VLLMChatModel
from bot.routing import DialogueState
from core.settings import Settings
from finetune.evaluate import check_passed
from runtime.dialogue import live_articles, load_promoted_classifier, settings_dialogue


@dataclass
class CustomerChecks:
    """One model's must-pass checks, answered as a customer would be."""

    passed: int = 0
    total: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """Each failed check's id and reply, for staff to read."""
    results: dict[str, bool] = field(default_factory=dict)
    """Each check's id and whether it passed, for the gate to pair with another model's."""


def customer_dialogue(settings: Settings, pack: DomainPack, engine: Engine, vllm_url: str) -> DialogueManager:
    """A dialogue manager as the app builds one, on the knowledge base customers are answered from and the promoted
    intent classifier, sending to `vllm_url` with greedy decoding; no actions."""
    with Session(engine) as session:
        articles = live_articles(session)
    knowledge = KnowledgeIndex.build(articles or pack.articles, SentenceEncoder())
    knowledge.embed_sentences()
    _, classifier = load_promoted_classifier(settings)
    llm = VLLMChatModel(base_url=vllm_url, max_tokens=settings.max_reply_tokens, timeout_s=settings.llm_timeout_s,
                        temperature=0.0)  # fmt: skip
    return settings_dialogue(settings, pack, llm=llm, knowledge=Swappable(knowledge), model=settings.served_model_name,
                             classifier=classifier)  # fmt: skip


async def _reply(dialogue: DialogueManager, message: str) -> str:
    result = None
    async for event in dialogue.respond(turns=[Turn("customer", message, id=1)], state=DialogueState()):
        if isinstance(event, TurnResult):
            result = event
    return (result.text or "") if result is not None else ""


def customer_check_scores(
    dialogue: DialogueManager, models: Sequence[str], checks: Sequence[Check]
) -> dict[str, CustomerChecks]:
    """`CustomerChecks` for each of `models`, one check at a time (as one customer each)."""

    async def score_all() -> dict[str, CustomerChecks]:
        scores = {}
        for model in models:
            dialogue.models.switch(model)
            score = scores[model] = CustomerChecks()
            for check in checks:
                reply = await _reply(dialogue, check.prompt)
                score.total += 1
                score.results[check.id] = check_passed(check, reply)
                if score.results[check.id]:
                    score.passed += 1
                else:
                    score.failed[check.id] = reply
        return scores

    return asyncio.run(score_all())
