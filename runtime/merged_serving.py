"""Customers' replies from the promoted version merged into the base weights, on a vLLM without LoRA kernels.

A promotion first answers through the runtime-LoRA server (seconds); meanwhile the version is merged. The merged
server in service then takes no new requests; once its replies have finished, the new weights are loaded into it in
place (vLLM's `reload_weights`, under a second) and traffic moves back to it. Where that cannot be done (no merged
server yet, or the reload fails) a fresh vLLM is started on the merged model in the other slot (blue/green) and
traffic moves when it answers. Either way no reply fails during the switch. A fresh start takes 37 s on an idle
2-core CPU and about 8 minutes while customers keep both cores busy (tests/bench/README.md), hence the reload.

Each server loads its model through one of two fixed paths, `serving-blue` and `serving-green` (links to the
version's merged folder), and is served under that name, which a reload keeps: the app asks the server for its slot's
name and records the reply under the version. A server restarted after a crash loads whatever its link points at.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bot.llm import VLLMChatModel
from core.process import free_port
from core.vllm_process import VLLMConfig, VLLMServer, VLLMStartError
from runtime.merge import MergeFailed, merge_in_subprocess

logger = logging.getLogger(__name__)

# A model dir, the served name and a port -> how to launch vLLM on them (see core.vllm_process.vllm_config).
ConfigFactory = Callable[[Path, str, int], VLLMConfig]
SLOTS = ("blue", "green")
RELOAD_TIMEOUT_S = 120.0


@dataclass
class Switch:
    """One version put on its merged server: how long each step took, counted from when it was asked for."""

    version: str
    merge_s: float
    start_s: float
    total_s: float
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class MergedServing:
    """The merged vLLM servers this app runs: the one answering customers, and any still draining."""

    def __init__(
        self,
        *,
        llm: VLLMChatModel,
        base_model_dir: Path,
        adapter_path: Callable[[str], Path],
        merged_dir: Path,
        logs_dir: Path,
        make_config: ConfigFactory,
        drain_timeout_s: float = 90.0,
    ) -> None:
        self.llm = llm
        self.base_model_dir = base_model_dir
        self.adapter_path = adapter_path
        self.merged_dir = merged_dir
        self.logs_dir = logs_dir
        self.make_config = make_config
        self.drain_timeout_s = drain_timeout_s
        self.version: str | None = None
        self.server: VLLMServer | None = None
        self.state = "idle"
        self.failed: dict[str, str] = {}
        self.switches: list[Switch] = []
        self.slot: str | None = None
        self._draining: dict[str, tuple[VLLMServer, str, asyncio.Task]] = {}
        self._task: asyncio.Task | None = None
        self._starting: VLLMServer | None = None

    def follow(self, version: str) -> None:
        """Bring `version` (just promoted, or in service at start) onto a merged server, in the background.

        One switch at a time: a version promoted during a switch is followed when that one has finished.
        A version that failed to merge or start stays on the LoRA server and is not retried until promoted again.
        """
        if version == self.version or version in self.failed:
            return
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._switch(version), name=f"merged-serving-{version}")

    def forget_failure(self, version: str) -> None:
        self.failed.pop(version, None)

    async def _switch(self, version: str) -> None:
        asked = time.monotonic()
        old = (self.version, self.server, self.slot) if self.server is not None else None
        if old is not None:
            # The bot asks for the new version already (through LoRA until it is served merged), so the old server
            # gets no new request: it only finishes the replies it has.
            self.llm.route(old[0], None)
            self.version = self.server = self.slot = None
        try:
            self.state = f"merging {version}"
            out_dir = self.merged_dir / version
            await asyncio.to_thread(
                merge_in_subprocess,
                self.base_model_dir,
                self.adapter_path(version),
                out_dir,
                self.logs_dir / f"merge-{version}.log",
            )
            merged = time.monotonic()
            server = slot = None
            if old is not None:
                self.state = f"reloading {version}"
                if await self._reload(old[1], old[0], old[2], out_dir):
                    server, slot = old[1], old[2]
                else:
                    self._retire(*old)
                old = None
            if server is None:
                slot = await self._free_slot()
                self.state = f"starting {version}"
                config = self.make_config(self._point(slot, out_dir), f"serving-{slot}", free_port())
                server = self._starting = VLLMServer(config, adapters=dict)
                await asyncio.to_thread(server.start)
        except (MergeFailed, VLLMStartError, OSError) as error:
            self.failed[version] = str(error)
            self.state = f"failed {version}"
            logger.error("%s stays on the LoRA server: merged serving failed: %s", version, error)
            return
        except asyncio.CancelledError:
            self.state = "idle"
            raise
        finally:
            self._starting = None
            if old is not None:  # the merge failed or was cancelled before the old server was reused
                self._retire(*old)
        self.llm.route(version, server.url, served_as=server.config.served_model_name)
        self.version, self.server, self.slot = version, server, slot
        self.state = "serving"
        done = time.monotonic()
        switch = Switch(version=version, merge_s=merged - asked, start_s=done - merged, total_s=done - asked)
        self.switches = [*self.switches[-19:], switch]
        logger.info(
            "%s now answers from its merged model at %s (%s; merge %.1f s, vLLM start or reload %.1f s)",
            version,
            server.url,
            slot,
            switch.merge_s,
            switch.start_s,
        )

    async def _reload(self, server: VLLMServer, old_version: str, slot: str, out_dir: Path) -> bool:
        """Load the merged weights in `out_dir` into `server`, in place, once `old_version`'s replies on it have
        finished: well under a second, where a fresh server takes minutes on a busy CPU. False when the server
        cannot (it was started without vLLM's development endpoints, or the call failed): the caller starts a fresh
        server instead. The slot's link moves first, so a restart after a crash loads the new version too."""
        self._starting = server  # stopped with the app while it waits
        await self._wait_drained(old_version, server)
        self._point(slot, out_dir)
        try:
            async with httpx.AsyncClient(timeout=RELOAD_TIMEOUT_S) as client:
                reloaded = await client.post(
                    f"{server.url}/collective_rpc",
                    json={"method": "reload_weights", "kwargs": {"weights_path": str(out_dir.resolve())}},
                )
                reloaded.raise_for_status()
                # The prefix cache holds keys and values the old weights computed.
                (await client.post(f"{server.url}/reset_prefix_cache")).raise_for_status()
        except httpx.HTTPError as error:
            logger.warning("could not reload %s in place (%s); starting a fresh server", server.url, error)
            return False
        return True

    def _retire(self, version: str, server: VLLMServer, slot: str) -> None:
        drain = asyncio.create_task(self._drain(version, server), name=f"drain-{version}")
        self._draining[version] = (server, slot, drain)

    async def _free_slot(self) -> str:
        """A model path no running server was started from; waits for a draining server when both are taken."""
        while True:
            taken = {slot for _, slot, _ in self._draining.values()}
            free = [slot for slot in SLOTS if slot not in taken]
            if free:
                return free[0]
            await asyncio.wait([drain for _, _, drain in self._draining.values()], return_when=asyncio.FIRST_COMPLETED)

    def _point(self, slot: str, out_dir: Path) -> Path:
        """Re-point the slot's link at a merged folder (a new link renamed over the old one) and return the link."""
        link = self.merged_dir / f"serving-{slot}"
        staging = self.merged_dir / f".serving-{slot}.tmp"
        staging.unlink(missing_ok=True)
        staging.symlink_to(out_dir.resolve(), target_is_directory=True)
        os.replace(staging, link)
        return link

    async def _wait_drained(self, version: str, server: VLLMServer) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while self.llm.in_flight(server.url) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        left = self.llm.in_flight(server.url)
        if left:
            logger.warning("%s's merged server still streams %d reply(ies) after the drain limit", version, left)

    async def _drain(self, version: str, server: VLLMServer) -> None:
        await self._wait_drained(version, server)
        await asyncio.to_thread(server.stop)
        self._draining.pop(version, None)
        logger.info("%s's merged server at %s stopped", version, server.url)

    def status(self) -> dict:
        """What an admin sees: the version on its merged server, any switch going on, the last switches."""
        return {
            "version": self.version,
            "url": self.server.url if self.server is not None else None,
            "state": self.state,
            "slot": self.slot,
            "draining": sorted(self._draining),
            "failed": dict(self.failed),
            "switches": [
                {
                    "version": s.version,
                    "merge_s": round(s.merge_s, 1),
                    "start_s": round(s.start_s, 1),
                    "total_s": round(s.total_s, 1),
                    "at": s.at.isoformat(),
                }
                for s in self.switches
            ],  # fmt: skip
        }

    def stop(self) -> None:
        """Stop every merged server (app shutdown)."""
        if self._task is not None:
            self._task.cancel()
        servers = [*(server for server, _, _ in self._draining.values()), self.server, self._starting]
        for server in servers:
            if server is not None:
                server.stop()
        self._draining.clear()
        self.server = self.version = None
