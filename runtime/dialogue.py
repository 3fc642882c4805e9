"""The dialogue as the settings describe it, on the promoted intent classifier and the live knowledge base.

One builder for the app's dialogue (serving/services.py) and the retraining gate's (finetune/customer_checks.py).
"""

import logging

from sqlmodel import Session

from bot.actions import ActionRunner
from bot.articles import Article
from bot.context import ChatTemplateCounter
from bot.dialogue import DialogueManager, Swappable
from bot.domain import DomainPack
from bot.intents import IntentClassifier, load_classifier
from bot.knowledge import KnowledgeIndex
from bot.llm import ChatModel
from bot.routing import RoutingConfig, RuleRouter
from bot.selection import AnswerSelector, SelectorError, load_selector
from conversations.knowledge import list_articles
from core.settings import Settings
from runtime.registry import classifier_registry, selector_registry

logger = logging.getLogger(__name__)


def load_promoted_classifier(settings: Settings) -> tuple[str | None, IntentClassifier | None]:
    """The promoted intent classifier's version and model, or (None, None) when none is promoted yet."""
    registry = classifier_registry(settings.classifiers_dir)
    active = registry.active()
    if active is None:
        logger.warning("no intent classifier promoted yet: every message goes to the LLM")
        return None, None
    return active, load_classifier(registry.path(active))


def load_promoted_selector(settings: Settings) -> tuple[str | None, AnswerSelector | None]:
    """The promoted answer selector's version and model, or (None, None) when none is promoted (or it cannot be
    read: the scores' rules then decide, as before any was trained)."""
    if settings.answer_selection != "learned":
        return None, None
    registry = selector_registry(settings.selectors_dir)
    active = registry.active()
    if active is None:
        logger.info("no answer selector promoted yet: the scores' rules select the answer sentences")
        return None, None
    try:
        return active, load_selector(registry.path(active))
    except SelectorError:
        logger.exception("answer selector %s cannot be loaded: the scores' rules select instead", active)
        return None, None


def routing_config(settings: Settings, classifier: IntentClassifier | None) -> RoutingConfig:
    """Routing thresholds: the settings' where given, else what the classifier recommends."""
    recommended = classifier.recommended if classifier is not None else {}
    return RoutingConfig(
        confidence_threshold=settings.intent_threshold or recommended.get("threshold", 0.5),
        margin=settings.intent_margin if settings.intent_margin is not None else recommended.get("margin", 0.1),
        misses_before_handoff=settings.misses_before_handoff,
        negative_turns_before_handoff=settings.negative_turns_before_handoff,
    )


def settings_dialogue(
    settings: Settings,
    pack: DomainPack,
    *,
    llm: ChatModel,
    knowledge: Swappable[KnowledgeIndex],
    model: str,
    classifier: IntentClassifier | None,
    actions: ActionRunner | None = None,
    selector: AnswerSelector | None = None,
) -> DialogueManager:
    """A dialogue manager as the settings describe it: the app's, and the retraining gate's."""
    return DialogueManager(
        pack=pack,
        llm=llm,
        knowledge=knowledge,
        counter=ChatTemplateCounter(settings.base_model_dir),
        models=Swappable(model),
        classifier=Swappable(classifier),
        router=RuleRouter(pack, routing_config(settings, classifier)),
        context_tokens=settings.vllm_max_model_len,
        reply_tokens=settings.max_reply_tokens,
        summary_model=settings.served_model_name,
        first_sentence_within_s=settings.first_sentence_within_s or None,
        answers_from=settings.answers_from,
        actions=actions,
        selector=Swappable(selector),
    )


def live_articles(session: Session) -> list[Article]:
    """The articles customers are answered from: every one not retired, at its current version (the app's index,
    serving/knowledge.py, and the retraining gate's)."""
    return [
        Article(slug=row.slug, title=row.title, text=row.text, version=row.version)
        for row in list_articles(session=session, include_retired=False)
    ]
