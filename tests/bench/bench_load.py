"""Load benchmark: N customers at once, each keeping its event stream open and sending T messages in turn.

Reports HTTP status counts per route, failed and "busy" replies, customer messages missing from the
transcripts, and latency p50/p95. Starts the app itself on SQLite or a private PostgreSQL, or targets a running one.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.utils.load import report, run_load  # noqa: E402
from tests.utils.ports import free_port  # noqa: E402
from tests.utils.server import stop_process  # noqa: E402


@contextmanager
def started_app(args: argparse.Namespace, database_url: str, vllm_url: str | None, log_path: Path) -> Iterator[str]:
    """`supportbot start` on `database_url`, as a user runs it, with the rate limits out of the way."""
    port = free_port()
    env = {
        **os.environ,
        "SUPPORTBOT_DATA_DIR": str(args.data_dir),
        "SUPPORTBOT_DATABASE_URL": database_url,
        "SUPPORTBOT_PORT": str(port),
        "SUPPORTBOT_VLLM_PORT": str(free_port()),
        "SUPPORTBOT_RATE_LIMIT_PER_MINUTE_ADDRESS": "1000000",
        "SUPPORTBOT_NEW_CONVERSATIONS_PER_MINUTE_ADDRESS": "1000000",
        "SUPPORTBOT_RATE_LIMIT_PER_MINUTE_CONVERSATION": "1000",
        "SUPPORTBOT_RETENTION_EVERY_HOURS": "0",
    }
    if vllm_url:
        env["SUPPORTBOT_VLLM_URL"] = vllm_url
    for pair in args.env:
        name, _, value = pair.partition("=")
        env[name] = value
    # A stand-in model needs no prepared adapter; a real one gets what `supportbot start` prepares.
    command = [sys.executable, "-m", "cli", "start"]
    if args.skip_prepare or args.fake_model_delay_s is not None:
        command.append("--skip-prepare")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.start_timeout_s
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the app exited with {process.returncode}; see {log_path}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the app did not become ready; see {log_path}")
            time.sleep(1)
        yield url
    finally:
        stop_process(process, timeout_s=60)


def database_for(kind: str, stack: ExitStack, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'load.db'}"
    from tests.utils.postgres import PostgresServer

    server = PostgresServer.start()
    stack.callback(server.stop)
    return server.url(server.create_database())


def model_url(args: argparse.Namespace, stack: ExitStack) -> str | None:
    if args.fake_model_delay_s is None:
        return args.vllm_url
    from tests.utils.fake_vllm import FakeVLLM

    fake = FakeVLLM("fake", piece_delay_s=args.fake_model_delay_s).start()
    stack.callback(fake.stop)
    return fake.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=100, help="customers arriving at the same moment")
    parser.add_argument("--turns", type=int, default=10, help="messages each customer sends, one after another")
    parser.add_argument(
        "--hold-s", type=float, default=30.0, help="after the last reply, wait up to this long for the event stream"
    )
    parser.add_argument("--app", help="a running app's URL; without it the benchmark starts one")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var", help="the started app's data directory")
    parser.add_argument("--vllm-url", help="a running vLLM for the started app (default: the app starts its own)")
    parser.add_argument(
        "--fake-model-delay-s",
        type=float,
        help="serve replies from a stand-in model (tests/utils/fake_vllm.py) waiting this long per piece",
    )
    parser.add_argument(
        "--skip-prepare", action="store_true", help="start the app without preparing models (and intent classifier)"
    )
    parser.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the started app")
    parser.add_argument("--start-timeout-s", type=float, default=900.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with ExitStack() as stack:
        if args.app:
            app = args.app.rstrip("/")
        else:
            workdir = Path(stack.enter_context(_tempdir()))
            url = database_for(args.database, stack, workdir)
            log_path = args.data_dir / "logs" / f"bench-load-{args.database}-{args.conversations}x{args.turns}.log"
            app = stack.enter_context(started_app(args, url, model_url(args, stack), log_path))
            print(f"app log: {log_path}")
        print(f"{args.conversations} conversations x {args.turns} turns against {app} ({args.database})", flush=True)
        run, customers, wall = asyncio.run(run_load(app, args.conversations, args.turns, args.hold_s))
    results = {"conversations": args.conversations, "turns": args.turns, "database": args.database}
    results |= report(run, customers, wall)
    for name, value in results.items():
        print(f"{name:22} {value:.2f}" if isinstance(value, float) else f"{name:22} {value}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=2))


@contextmanager
def _tempdir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="supportbot-load-") as folder:
        yield folder


if __name__ == "__main__":
    main()
