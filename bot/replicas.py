"""Several vLLM replicas behind one chat client: which replica serves which adapter, and whose turn it is.

The view comes from each replica's /v1/models, refreshed every few seconds and at once after a failure.
"""

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

# "dns+http://vllm-headless:8000" stands for every address the name resolves to (a headless service).
DNS_PREFIX = "dns+"
# After a request finds no replica serving its model, the view is re-read at most this often.
_MIN_FORCED_REFRESH_S = 1.0


def expand_urls(urls: Sequence[str]) -> list[str]:
    """Replica base URLs, each `dns+` entry replaced by one URL per address its name resolves to now."""
    expanded: list[str] = []
    for url in urls:
        if not url.startswith(DNS_PREFIX):
            expanded.append(url.rstrip("/"))
            continue
        parts = urlsplit(url.removeprefix(DNS_PREFIX))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            # A headless service with no ready pod has no addresses: no replica, not a crash.
            logger.warning("vLLM replicas: %s does not resolve (%s)", parts.hostname, error)
            continue
        for address in sorted({str(info[4][0]) for info in infos}):
            host = f"[{address}]" if ":" in address else address
            expanded.append(f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}")
    return list(dict.fromkeys(expanded))


def first_healthy(urls: Sequence[str], timeout_s: float = 3.0) -> str:
    """One replica that answers /health (the only one, unchecked, when a single URL is configured)."""
    if len(urls) == 1 and not urls[0].startswith(DNS_PREFIX):
        return urls[0].rstrip("/")
    for url in expand_urls(urls):
        try:
            if httpx.get(f"{url}/health", timeout=timeout_s).status_code == 200:
                return url
        except httpx.HTTPError:
            continue
    raise RuntimeError(f"no vLLM replica answers among {list(urls)}")


@dataclass(frozen=True)
class Replica:
    """One vLLM server as last seen: whether it answered and the models (base and adapters) it lists."""

    url: str
    up: bool
    models: frozenset[str] = frozenset()
    error: str | None = None


class ReplicaPool:
    """The replicas a client may send to, with the models each serves; requests rotate among them.

    A stale view is refreshed in the background while requests use the one they have; only the first
    request, and one that finds no replica serving its model, waits for a fresh view.
    """

    def __init__(self, urls: Sequence[str], *, refresh_s: float = 10.0, timeout_s: float = 3.0) -> None:
        if not urls:
            raise ValueError("at least one vLLM URL is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._replicas: dict[str, Replica] = {}
        self._refreshed_at: float | None = None
        self._refreshing: asyncio.Task | None = None
        self._turn = itertools.count()

    @property
    def single(self) -> bool:
        """One fixed server: requests go straight to it, as with no pool at all."""
        return len(self.urls) == 1 and not self.urls[0].startswith(DNS_PREFIX)

    def snapshot(self) -> dict[str, Replica]:
        """The replicas as last seen (the record of which replica serves which adapter)."""
        return dict(self._replicas)

    async def refresh(self) -> dict[str, Replica]:
        """Resolve the replica addresses and ask each for its models now."""
        resolves = any(url.startswith(DNS_PREFIX) for url in self.urls)
        urls = await asyncio.to_thread(expand_urls, self.urls) if resolves else expand_urls(self.urls)
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            replicas = await asyncio.gather(*(self._probe(client, url) for url in urls))
        previous = self._replicas
        self._replicas = {replica.url: replica for replica in replicas}
        self._refreshed_at = time.monotonic()
        for replica in replicas:
            was = previous.get(replica.url)
            if was is None or was.up != replica.up:
                if replica.up:
                    logger.info("vLLM replica %s up, serving %s", replica.url, sorted(replica.models))
                else:
                    logger.warning("vLLM replica %s down: %s", replica.url, replica.error)
        return self.snapshot()

    async def _probe(self, client: httpx.AsyncClient, url: str) -> Replica:
        try:
            response = await client.get(f"{url}/v1/models")
            response.raise_for_status()
            return Replica(url=url, up=True, models=frozenset(model["id"] for model in response.json()["data"]))
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            return Replica(url=url, up=False, error=str(error) or type(error).__name__)

    async def view(self) -> dict[str, Replica]:
        """The current view; waits only when there is none yet, else refreshes a stale one in the background."""
        if self._refreshed_at is None:
            return await self.refresh()
        stale = time.monotonic() - self._refreshed_at >= self.refresh_s
        if stale and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self.refresh())
        return self.snapshot()

    async def serving(self, model: str) -> list[str]:
        """Replicas whose /v1/models lists `model`, in round-robin order for this request."""
        found = [replica.url for replica in (await self.view()).values() if model in replica.models]
        if not found and (self._refreshed_at is None or time.monotonic() - self._refreshed_at >= _MIN_FORCED_REFRESH_S):
            # A replica may have loaded the adapter (or come back) since the last look.
            found = [replica.url for replica in (await self.refresh()).values() if model in replica.models]
        if not found:
            return []
        start = next(self._turn) % len(found)
        return found[start:] + found[:start]

    def mark_failed(self, url: str, error: str) -> None:
        """Stop sending to a replica that just failed until a refresh finds it healthy again."""
        self._replicas[url] = Replica(url=url, up=False, error=error)
        self._refreshed_at = (self._refreshed_at or 0.0) - self.refresh_s
