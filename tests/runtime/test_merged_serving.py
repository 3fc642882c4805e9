"""The promoted version answers customers from its merged model on a vLLM of its own. Promotion and rollback load
the new version's merged weights into that server in place once its replies have finished, without a failed reply:
replies streaming during the switch finish."""

import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psutil

from conversations.db import make_engine
from conversations.models import StaffRole
from runtime.registry import AdapterRegistry
from tests.utils.conversation import open_conversation, parse_sse
from tests.utils.staff import Staff, make_staff

QUESTIONS = [
    "How long do I have to return a lamp I bought last week?",
    "Can you explain how refunds work when an item arrives damaged?",
    "What should I do if my parcel never arrived?",
    "How much does shipping cost and how long does it take?",
]

TALK_EVERY_S = 5.0


@dataclass
class Sent:
    """One customer message and what came back, with when it finished."""

    question: str
    events: list[tuple[str, dict]] = field(default_factory=list)
    done_at: float | None = None
    error: str | None = None

    @property
    def reply(self) -> dict | None:
        return next((data for name, data in self.events if name == "bot_message"), None)


def send_one(url: str, question: str) -> Sent:
    sent = Sent(question)
    try:
        with httpx.Client(base_url=url, timeout=180) as http:
            conversation_id, headers = open_conversation(http)
            with http.stream(
                "POST", f"/api/conversations/{conversation_id}/messages", json={"text": question}, headers=headers
            ) as response:
                assert response.status_code == 200, response.read()
                sent.events = parse_sse(list(response.iter_lines()))
    except (httpx.HTTPError, AssertionError) as error:
        sent.error = repr(error)
    sent.done_at = time.monotonic()
    return sent


def send_many(url: str, count: int) -> tuple[list[Sent], list[threading.Thread]]:
    results: list[Sent] = []
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    threads = [threading.Thread(target=lambda q=question: results.append(send_one(url, q))) for question in questions]
    for thread in threads:
        thread.start()
    return results, threads


def model_server(client: httpx.Client, admin: Staff) -> dict:
    response = client.get("/api/admin/model-server", cookies=admin.cookies)
    assert response.status_code == 200, response.text
    return response.json()


def wait_merged(client: httpx.Client, admin: Staff, version: str, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = model_server(client, admin)
        merged = status["merged"]
        if merged["version"] == version and merged["state"] == "serving":
            return status
        assert version not in merged["failed"], merged["failed"][version]
        time.sleep(2)
    raise AssertionError(f"{version} never got its merged server: {model_server(client, admin)}")


def vllm_servers(live_app) -> dict[int, list[str]]:
    """vLLM API servers under the app: pid -> command line."""
    found = {}
    for child in psutil.Process(live_app.process.pid).children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "vllm.entrypoints.openai.api_server" in " ".join(command):
            found[child.pid] = command
    return found


def prompt_tokens_seen(url: str) -> float:
    """Prompt tokens a vLLM server has processed, from its own Prometheus metrics (aborted requests included:
    the app may close a reply's stream early)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:prompt_tokens_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def answered_by(url: str, live_app, question: str) -> bool:
    """Send one message; True when the model answered it and the server at `url` did the work."""
    before = prompt_tokens_seen(url)
    sent = send_one(live_app.url, question)
    assert sent.reply is not None and sent.reply["failed"] is False, sent.events
    if sent.reply["decision"] != "answer":
        return False
    deadline = time.monotonic() + 30  # vLLM updates its counters a moment after the work
    while prompt_tokens_seen(url) == before and time.monotonic() < deadline:
        time.sleep(1)
    assert prompt_tokens_seen(url) > before, f"the reply to {question!r} did not come from {url}"
    return True


def greedy(status: dict, prompt: str = "How long do I have to return a lamp?") -> str:
    """The merged server's reply at temperature 0, asked under the name it serves (its slot's)."""
    merged = status["merged"]
    response = httpx.post(
        f"{merged['url']}/v1/chat/completions",
        json={
            "model": f"serving-{merged['slot']}",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 24,
            "temperature": 0,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def switch_with_replies_in_flight(
    live_app, client: httpx.Client, admin: Staff, path: str, old: str, new: str
) -> tuple[str, str]:
    """Switch from `old` to `new` with replies in flight; returns the merged server's greedy reply before and after."""
    status = wait_merged(client, admin, old)
    old_url = status["merged"]["url"]
    slot_name = f"serving-{status['merged']['slot']}"
    old_pid = next(pid for pid, command in vllm_servers(live_app).items() if slot_name in command)
    before = greedy(status)

    # Several replies at once, so some are still streaming from the old merged server when it is retired.
    in_flight, threads = send_many(live_app.url, 6)
    time.sleep(1.0)
    response = client.post(path, cookies=admin.cookies, headers=admin.headers)
    promoted_at = time.monotonic()
    assert response.status_code == 200, response.text
    assert response.json()["active"] == new

    # Traffic keeps flowing while the new version is merged and its server starts.
    during: list[Sent] = []
    stop = threading.Event()

    def keep_talking() -> None:
        # A customer every few seconds, not back to back: a saturated 2-core machine would take many minutes to
        # start the new server, and a steady trickle proves no reply fails just as well.
        while not stop.is_set():
            during.append(send_one(live_app.url, QUESTIONS[len(during) % len(QUESTIONS)]))
            stop.wait(TALK_EVERY_S)

    talker = threading.Thread(target=keep_talking)
    talker.start()
    try:
        status = wait_merged(client, admin, new)
    finally:
        stop.set()
        talker.join(timeout=300)
        for thread in threads:
            thread.join(timeout=300)

    for sent in [*in_flight, *during]:
        assert sent.error is None, sent.error
        assert sent.reply is not None and sent.reply["failed"] is False, sent.events
    late = [s for s in in_flight if s.reply["model"] == old and s.done_at is not None and s.done_at > promoted_at]
    assert late, "no reply was still streaming from the old version when the switch began"
    assert all(s.reply["model"] == new for s in during if s.reply["decision"] == "answer")
    assert during  # the first is sent as the promotion is answered; an in-place reload can be done before the next

    # The new version now answers from the same merged server, its weights reloaded in place; it runs no LoRA.
    new_url = status["merged"]["url"]
    assert new_url == old_url and status["routes"] == {new: new_url}
    assert psutil.pid_exists(old_pid) and psutil.Process(old_pid).status() != psutil.STATUS_ZOMBIE
    assert "--enable-lora" not in vllm_servers(live_app)[old_pid]
    assert any([answered_by(new_url, live_app, question) for question in QUESTIONS[:2]])
    assert not model_server(client, admin)["merged"]["draining"]
    return before, greedy(status)


def test_merged_promotion_and_rollback_fail_no_reply(live_app, client: httpx.Client) -> None:
    admin = make_staff(
        make_engine(live_app.settings.resolved_database_url),
        f"merge-{uuid.uuid4().hex[:8]}@example.com",
        "Merge Admin",
        StaffRole.admin,
    )
    registry = AdapterRegistry(live_app.settings.adapters_dir)
    in_service = registry.active()
    assert in_service is not None
    other = next(name for name in reversed(registry.versions()) if name != in_service)

    # A staff member still sees which version wrote each reply, and how the model is served.
    status = wait_merged(client, admin, in_service)
    assert status["model"] == in_service and status["tuning"]["dtype"] in ("float32", "bfloat16")
    assert status["tuning"]["threads_bind"]

    first, promoted = switch_with_replies_in_flight(
        live_app, client, admin, f"/api/admin/adapters/{other}/promote", in_service, other
    )
    _, rolled_back = switch_with_replies_in_flight(
        live_app, client, admin, "/api/admin/adapters/rollback", other, in_service
    )
    # The server really serves the weights of the version in service: the promoted version writes another reply, and
    # the rollback brings the first one back word for word (greedy decoding; the prefix cache was reset).
    assert promoted != first and rolled_back == first, (first, promoted, rolled_back)
    switches = model_server(client, admin)["merged"]["switches"]
    # Rolling back reuses the merged folder written when it was first served.
    assert switches[-1]["version"] == in_service and switches[-1]["merge_s"] < 2.0
