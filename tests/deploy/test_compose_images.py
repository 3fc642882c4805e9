"""Both images built by a real engine and deploy/compose.yaml run with them: the app gets ready, answers a chat, and
the worker runs the retraining an admin starts.

Podman builds and runs them (deploy/local/build-images.sh, from a Debian base made with debootstrap: no image
registry is reachable), with podman-compose, deploy/compose.yaml and deploy/local/compose.local.yaml (no GPU here:
the reservations go, and vLLM is the suite's stand-in model server in the app image). Minutes of building and CPU
training: it runs only with SUPPORTBOT_TEST_IMAGES=1, after the suite (deploy/README.md, "Checking the images").
"""

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.auth import SESSION_COOKIE
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "supportbot-images-check"
ADMIN, PASSWORD = "admin@example.com", "a long admin password for the check"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SUPPORTBOT_TEST_IMAGES") != "1",
        reason="builds images: SUPPORTBOT_TEST_IMAGES=1 (deploy/README.md)",
    ),
    # Building, then training the first adapter and the intent classifier and retraining, on a CPU.
    pytest.mark.timeout(7200),
]


def podman_compose() -> list[str]:
    found = shutil.which("podman-compose") or str(ROOT / ".venv" / "bin" / "podman-compose")
    assert shutil.which("podman") and Path(found).exists(), "podman and podman-compose (deploy/README.md)"
    return [found]


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert not check or done.returncode == 0, f"podman {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def logs(service: str) -> str:
    done = subprocess.run(["podman", "logs", container(service)], capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr)[-4000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The images built and the compose project up; yields the app's published URL, then takes it all down."""
    started = time.monotonic()
    subprocess.run([ROOT / "deploy" / "local" / "build-images.sh"], check=True, timeout=3600)
    print(f"images built in {time.monotonic() - started:.0f} s")
    port = free_port()
    env_file = tmp_path_factory.mktemp("compose") / "check.env"
    env_file.write_text(
        f"SUPPORTBOT_SECRET_KEY={secrets.token_hex(32)}\nPOSTGRES_PASSWORD={secrets.token_hex(16)}\n"
        f"APP_PUBLISH=127.0.0.1:{port}\nVLLM_IMAGE=localhost/supportbot-vllm-stand-in:latest\n"
    )
    files = [ROOT / "deploy" / "compose.yaml", ROOT / "deploy" / "local" / "compose.local.yaml"]
    compose = [*podman_compose(), "--env-file", str(env_file), "-p", PROJECT, *(f"-f{path}" for path in files)]
    subprocess.run([*compose, "down", "-v"], capture_output=True, timeout=300)
    try:
        started = time.monotonic()
        # compose.yaml's order, kept here: podman 4.3 (Debian 12) cannot wait for a healthy container, and fails
        # to start one whose dependencies have dependencies of their own ("not found in input list").
        subprocess.run([*compose, "up", "-d", "--no-deps", "postgres", "prepare"], check=True, timeout=600)
        # The base model converted, the first adapter and the intent classifier trained, on this CPU.
        assert podman("wait", container("prepare"), timeout=3600).strip() == "0", logs("prepare")
        print(f"prepare done in {time.monotonic() - started:.0f} s")
        subprocess.run([*compose, "up", "-d", "--no-deps", "vllm", "app"], check=True, timeout=600)
        url = f"http://127.0.0.1:{port}"
        wait_for("the app ready", lambda: httpx.get(f"{url}/readyz").status_code == 200, 900, "app")
        print(f"app ready {time.monotonic() - started:.0f} s after compose up")
        subprocess.run([*compose, "up", "-d", "--no-deps", "worker"], check=True, timeout=600)
        yield url
        print(f"compose up to the end of the checks: {time.monotonic() - started:.0f} s")
    finally:
        subprocess.run([*compose, "down", "-v"], capture_output=True, timeout=300)


def wait_for(what: str, check, timeout_s: float, service: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(3)
    pytest.fail(f"{what} not within {timeout_s:.0f} s; {service}'s log:\n{logs(service)}")


def test_compose_runs_the_images_app_ready_chat_answered_and_worker_retrains(stack: str) -> None:
    with httpx.Client(base_url=stack, timeout=60) as client:
        ready = client.get("/readyz").json()
        assert ready["checks"] == {"database": True, "model_server": True}
        # compose.yaml's health check of the app (podman runs it when asked: no systemd here to run it on its interval).
        podman("healthcheck", "run", container("app"))

        conversation_id, headers = open_conversation(client)
        reply = bot_reply(send(client, conversation_id, headers, "How long do I have to return an item?"))
        assert reply["failed"] is False and reply["text"].strip(), reply

        # An admin, created with the image's CLI as deploy/README.md says, starts a retraining from the API.
        subprocess.run(["podman", "exec", "-i", container("app"), "supportbot", "staff", "create-admin",
                        "--email", ADMIN, "--name", "Admin", "--password-stdin"],
                       input=PASSWORD + "\n", text=True, check=True, timeout=300)  # fmt: skip
        session = client.post("/api/staff/session", json={"email": ADMIN, "password": PASSWORD})
        assert session.status_code == 200, session.text
        # The session cookie is Secure in production (behind TLS): sent by hand over this plain connection.
        admin = {
            "X-CSRF-Token": session.json()["csrf_token"],
            "Cookie": f"{SESSION_COOKIE}={session.cookies[SESSION_COOKIE]}",
        }
        run = client.post("/api/admin/runs", headers=admin)
        assert run.status_code == 202, run.text
        assert run.json()["status"] == "queued", "the app queues; it has no trainer"

        def finished() -> dict | None:
            found = client.get(f"/api/admin/runs/{run.json()['id']}", headers=admin).json()
            return found if found["status"] not in ("queued", "running") else None

        done = wait_for("the retraining run", finished, 1800, "worker")
        assert done["status"] == "finished", (done, logs("worker"))
        assert f"running retraining run {done['id']}" in logs("worker"), "the worker container ran it"
