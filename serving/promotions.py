"""Picks up promoted models while the app runs: adapters, intent classifiers and answer selectors are swapped in.

Promotion writes a pointer file (any process may do it: the CLI, a training job); the app polls it.
"""

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool

from bot.dialogue import DialogueManager
from bot.domain import DomainPack
from bot.intents import load_classifier
from bot.llm import VLLMChatModel
from bot.routing import RuleRouter
from bot.selection import load_selector
from bot.vllm_admin import load_adapter_into_vllm
from core.settings import Settings
from runtime.dialogue import routing_config
from runtime.merged_serving import MergedServing
from runtime.registry import AdapterRegistry, classifier_registry, selector_registry

logger = logging.getLogger(__name__)


class PromotionWatcher:
    """Polls the adapter and classifier stores and swaps in whatever was promoted.

    A new adapter is hot-loaded into vLLM first and only then becomes the bot's model, so no request
    is sent to an adapter vLLM lacks; replies already streaming finish on the adapter they started on.
    With vLLM run elsewhere (one server or several replicas), a server found without the promoted
    adapter (restarted, or newly scaled up) gets it loaded again; until then no request is routed to it.
    With `merged` (a managed vLLM), the promoted version then moves onto a merged model of its own.
    """

    def __init__(
        self,
        settings: Settings,
        pack: DomainPack,
        llm: VLLMChatModel,
        dialogue: DialogueManager,
        classifier_name: str | None,
        merged: MergedServing | None = None,
        selector_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.pack = pack
        self.llm = llm
        self.dialogue = dialogue
        self.classifier_name = classifier_name
        self.selector_name = selector_name
        self.interval_s = settings.promotion_check_s
        self.merged = merged
        self._checking = asyncio.Lock()
        self.classifiers = classifier_registry(settings.classifiers_dir)
        self.adapters = AdapterRegistry(settings.adapters_dir)
        self.selectors = selector_registry(settings.selectors_dir)

    async def check(self) -> bool:
        """Swap in promoted versions not yet in use; True when something changed."""
        # One check at a time: the admin API's promotion and the polling loop must not swap the same version twice.
        async with self._checking:
            return await self._check_adapter() | await self._check_classifier() | await self._check_selector()

    async def _check_adapter(self) -> bool:
        active = await run_in_threadpool(self.adapters.active)
        dialogue = self.dialogue
        if active is None:
            return False
        if active == dialogue.models.current():
            if not self.settings.manages_vllm:
                await self._reload_where_missing(active)
            if self.merged is not None:
                self.merged.follow(active)
            return False
        settings = self.settings
        await run_in_threadpool(
            load_adapter_into_vllm, settings.vllm_urls or settings.resolved_vllm_url, active, self.adapters.path(active)
        )
        if not self.llm.replicas.single:
            await self.llm.replicas.refresh()
        previous = dialogue.models.current()
        dialogue.models.switch(active)
        logger.info("adapter %s now answers customers (was %s)", active, previous)
        if self.merged is not None:
            self.merged.forget_failure(active)  # promoted again: worth another try
            self.merged.follow(active)
        return True

    async def _reload_where_missing(self, active: str) -> None:
        """A vLLM server run elsewhere forgets runtime-loaded adapters when it restarts: load it there again."""
        replicas = await self.llm.replicas.view()
        missing = [url for url, replica in replicas.items() if replica.up and active not in replica.models]
        if not missing:
            return
        logger.warning("vLLM replica(s) %s lack adapter %s; loading it", missing, active)
        await run_in_threadpool(load_adapter_into_vllm, missing, active, self.adapters.path(active))
        await self.llm.replicas.refresh()

    async def _check_classifier(self) -> bool:
        active = await run_in_threadpool(self.classifiers.active)
        if active is None or active == self.classifier_name:
            return False
        classifier = await run_in_threadpool(load_classifier, self.classifiers.path(active))
        dialogue = self.dialogue
        # The router carries the new classifier's calibrated thresholds; swap it first.
        dialogue.router = RuleRouter(self.pack, routing_config(self.settings, classifier))
        dialogue.classifier.switch(classifier)
        logger.info("intent classifier %s now in use (was %s)", active, self.classifier_name)
        self.classifier_name = active
        return True

    async def _check_selector(self) -> bool:
        if self.settings.answer_selection != "learned":
            return False
        active = await run_in_threadpool(self.selectors.active)
        if active is None or active == self.selector_name:
            return False
        selector = await run_in_threadpool(load_selector, self.selectors.path(active))
        self.dialogue.selector.switch(selector)
        logger.info("answer selector %s now in use (was %s)", active, self.selector_name)
        self.selector_name = active
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - a broken candidate must not stop the app
                logger.exception("could not swap in a promoted model")
            await asyncio.sleep(self.interval_s)
