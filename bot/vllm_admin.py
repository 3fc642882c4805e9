"""The vLLM server's admin API: hot-load a LoRA adapter into one server or every replica.

Used wherever an adapter must be served before it answers: promotion, the app's watcher, evaluation.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

import httpx

from bot.replicas import expand_urls

logger = logging.getLogger(__name__)


class AdapterLoadFailed(RuntimeError):
    """A vLLM server refused the adapter, or none could be reached to load it."""

    code = "model_server_refused"


def load_adapter_into_vllm(vllm_url: str | Sequence[str], name: str, path: Path) -> list[str]:
    """Hot-load an adapter under a new name; an adapter already loaded under that name is fine.

    Given several replica URLs (`dns+` entries expanded), it is loaded into each one that can be reached;
    one that cannot is skipped (the app's promotion watcher loads it there once it is back), but a replica
    that refuses the adapter, or none reachable, is an error. Returns the servers that have it now.
    The path must be the same on every replica: the adapter store is shared (see deploy/README.md).
    """
    if isinstance(vllm_url, str):
        _load_adapter(vllm_url, name, path)
        return [vllm_url]
    loaded, unreachable, refused = [], [], []
    for url in expand_urls(vllm_url):
        try:
            _load_adapter(url, name, path)
            loaded.append(url)
        except httpx.TransportError as error:
            logger.warning("vLLM replica %s unreachable while loading %s: %s", url, name, error)
            unreachable.append(url)
        except AdapterLoadFailed as error:
            refused.append(str(error))
    if refused:
        raise AdapterLoadFailed("; ".join(refused))
    if not loaded:
        raise AdapterLoadFailed(f"no vLLM replica reachable to load {name} (tried {unreachable or list(vllm_url)})")
    logger.info("adapter %s loaded on %s", name, loaded)
    return loaded


def _load_adapter(vllm_url: str, name: str, path: Path) -> None:
    response = httpx.post(
        f"{vllm_url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path.resolve())}, timeout=300
    )
    if response.status_code != 200 and "already" not in response.text.lower():
        raise AdapterLoadFailed(f"vLLM {vllm_url} refused adapter {name}: {response.status_code} {response.text[:300]}")
