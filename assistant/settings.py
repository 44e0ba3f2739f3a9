"""One settings object, read from the environment and `.env`; built at the entry point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from assistant.errors import ConfigError

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xoxb-your-token"}


def _default_threads() -> int:
    # llama-cpp-python defaults n_threads to half the cores (1 on a 2-core machine); decode
    # speed measured here is best with every core (docs/benchmarks.md), so default to all.
    return max(1, len(os.sched_getaffinity(0)))


class Settings(BaseSettings):
    """Every knob of the assistant. Environment names are given by each field's alias."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "production", "test"] = Field(
        "development", alias="ASSISTANT_ENV"
    )
    redis_url: str | None = Field(None, alias="REDIS_URL")
    # The memory cap of the embedded Valkey (`assistant up` without REDIS_URL) and of compose's
    # Redis; with noeviction, writes past it fail (503) instead of growing without end.
    redis_maxmemory: str = Field("1gb", alias="ASSISTANT_REDIS_MAXMEMORY",
                                 pattern=r"^[0-9]+(?:[kmg]b?)?$")
    # With a Sentinel REDIS_URL (sentinel://host:26379;sentinel://host2:26379/0), the name of
    # the monitored master (assistant/redis_client.py, docs/scaling.md).
    redis_sentinel_master: str = Field("mymaster", alias="REDIS_SENTINEL_MASTER", min_length=1)

    model: str = Field("smollm2", alias="ASSISTANT_MODEL")
    # For load tests: "stub" answers instantly with a few fixed tokens and never loads a model
    # (worker/stub.py; `make bench` measures the plumbing with it). "llama" is the real model.
    engine: Literal["llama", "stub"] = Field("llama", alias="ASSISTANT_ENGINE")
    # The worker loads the model in a child and decodes a few tokens before it takes any
    # message; a failure stops it (assistant/selftest.py, docs/operations.md runbook).
    engine_selftest: bool = Field(True, alias="ASSISTANT_ENGINE_SELFTEST")
    models_dir: Path = Field(Path("models"), alias="ASSISTANT_MODELS_DIR")
    data_dir: Path = Field(Path(".data"), alias="ASSISTANT_DATA_DIR")
    context_size: int = Field(2048, alias="ASSISTANT_CONTEXT_SIZE", ge=256)
    threads: int = Field(default_factory=_default_threads, alias="ASSISTANT_THREADS", ge=1)
    threads_batch: int | None = Field(None, alias="ASSISTANT_THREADS_BATCH", ge=1)
    max_tokens: int = Field(256, alias="ASSISTANT_MAX_TOKENS", ge=1)
    temperature: float = Field(0.7, alias="ASSISTANT_TEMPERATURE", ge=0.0, le=2.0)

    host: str = Field("127.0.0.1", alias="ASSISTANT_HOST")
    port: int = Field(8000, alias="ASSISTANT_PORT", ge=1, le=65535)
    reply_timeout: float = Field(120.0, alias="ASSISTANT_REPLY_TIMEOUT", gt=0)
    max_input_chars: int = Field(4000, alias="ASSISTANT_MAX_INPUT_CHARS", ge=1)

    # The OpenAI-compatible API (docs/openai-api.md): caps on a request's messages and on its
    # total characters (messages and tool schemas), the most reply tokens a client may ask for
    # (larger max_tokens are clamped to it), and extra model names accepted as aliases of the
    # served model (comma-separated, e.g. "gpt-4o-mini" for a client that cannot change it).
    api_max_messages: int = Field(256, alias="ASSISTANT_API_MAX_MESSAGES", ge=1)
    api_max_chars: int = Field(200_000, alias="ASSISTANT_API_MAX_CHARS", ge=1)
    api_max_tokens: int = Field(1024, alias="ASSISTANT_API_MAX_TOKENS", ge=1)
    model_aliases: str = Field("", alias="ASSISTANT_MODEL_ALIASES")

    # Streamed tokens are sent in batches at most this often (the first token at once).
    stream_interval_ms: int = Field(100, alias="ASSISTANT_STREAM_INTERVAL_MS", ge=0, le=5000)

    memory_retention_days: float = Field(30.0, alias="ASSISTANT_MEMORY_RETENTION_DAYS", gt=0)
    worker_concurrency: int = Field(1, alias="ASSISTANT_WORKER_CONCURRENCY", ge=1)
    # Turns one worker process answers at once (docs/scaling.md, "Continuous batching"): 1 is
    # one turn per process (worker/llama.py, prefork pool); N > 1 runs the continuous-batching
    # engine (worker/batching.py) with N slots in one process fed by N Celery threads.
    batch_slots: int = Field(1, alias="ASSISTANT_BATCH_SLOTS", ge=1, le=64)
    max_deliveries: int = Field(3, alias="ASSISTANT_MAX_DELIVERIES", ge=1)
    # Celery/kombu redeliver a message not acked within this many seconds: it must be longer
    # than the longest turn plus the longest retry countdown (docs/operations.md), and
    # is what a message whose worker node was killed waits (docs/operations.md, Faults). A
    # redelivered duplicate is harmless (conversation lock + per-message dedupe).
    visibility_timeout: int = Field(300, alias="ASSISTANT_VISIBILITY_TIMEOUT", ge=10)
    # A turn's hard limit (Celery's time_limit: the pool process is killed and replaced), and
    # how long a running turn may go without producing a piece before its worker is not ready
    # and its pool process is recycled (worker/watchdog.py). Both are far above the longest
    # real turn: 2,048 prompt tokens read cold and 256 written, then a summary, ~35 s on 2
    # cores (docs/operations.md, Faults).
    turn_time_limit: int = Field(180, alias="ASSISTANT_TURN_TIME_LIMIT", ge=10)
    stall_seconds: int = Field(90, alias="ASSISTANT_STALL_SECONDS", ge=5)
    # A task waiting this long while a pool process is free and none was fetched: the node's
    # consumer stopped (worker/recovery.py, ConsumerWatch); the node restarts itself.
    consumer_stuck_seconds: int = Field(30, alias="ASSISTANT_CONSUMER_STUCK_SECONDS", ge=5)
    # Set by `assistant up` for its embedded Valkey, where its worker is the only one: at
    # start, the worker puts back what a dead predecessor left delivered and unacknowledged
    # instead of waiting out the visibility timeout (worker/recovery.py).
    sole_worker: bool = Field(False, alias="ASSISTANT_SOLE_WORKER")

    # Debugging aid, off by default: keep each turn's full prompt in Redis for an hour.
    trace_prompts: bool = Field(False, alias="ASSISTANT_TRACE_PROMPTS")

    # Fairness (assistant/limits.py): token buckets per user and per channel ("N/second",
    # "N/minute", "N/hour"; empty = off), a daily token quota per user (0 = off) and a queue
    # depth past which new messages are told they wait in line.
    user_rate_limit: str = Field("20/minute", alias="ASSISTANT_USER_RATE_LIMIT")
    channel_rate_limit: str = Field("60/minute", alias="ASSISTANT_CHANNEL_RATE_LIMIT")
    user_daily_tokens: int = Field(100_000, alias="ASSISTANT_USER_DAILY_TOKENS", ge=0)
    max_queue_depth: int = Field(50, alias="ASSISTANT_MAX_QUEUE_DEPTH", ge=1)

    # Bounds on what one caller can make the service hold (docs/security.md, issue 15): the
    # largest request body on any route (413 before it is read), the queue depth past which
    # new messages are refused with 503 + Retry-After (0 = never), and the replies one user
    # may wait for at once (429 past it).
    max_body_bytes: int = Field(1_048_576, alias="ASSISTANT_MAX_BODY_BYTES", ge=1024)
    hard_queue_depth: int = Field(500, alias="ASSISTANT_HARD_QUEUE_DEPTH", ge=0)
    max_open_streams: int = Field(8, alias="ASSISTANT_MAX_OPEN_STREAMS", ge=1)
    # /docs, /redoc, /openapi.json, /metrics and the details of /readyz are for operators:
    # off for the public unless this is true (an admin session or ASSISTANT_OPS_TOKEN as a
    # bearer token always sees them). /healthz is always public.
    public_ops: bool = Field(False, alias="ASSISTANT_PUBLIC_OPS")
    ops_token: SecretStr = Field(SecretStr(""), alias="ASSISTANT_OPS_TOKEN")

    # Observability: each worker serves Prometheus metrics on this port (0 = off); logs are
    # JSON when not on a terminal ("auto"), or as set.
    worker_metrics_port: int = Field(9101, alias="ASSISTANT_WORKER_METRICS_PORT", ge=0,
                                     le=65535)
    # Where worker metrics listen: loopback by default (a scraper on another host needs
    # 0.0.0.0 or the host's address, behind a firewall).
    worker_metrics_host: str = Field("127.0.0.1", alias="ASSISTANT_WORKER_METRICS_HOST")
    log_format: Literal["auto", "json", "text"] = Field("auto", alias="ASSISTANT_LOG_FORMAT")

    # Safety (assistant/safety, docs/safety.md): the policy file (which checks run and what
    # each category does, per platform and channel; empty = the built-in default policy),
    # strikes (blocked messages per window before a mute), the optional Llama Guard 3 judge
    # (a separate guard GGUF; off when empty) and the durable store for the moderation log.
    safety_enabled: bool = Field(True, alias="ASSISTANT_SAFETY")
    safety_policy: Path | None = Field(None, alias="ASSISTANT_SAFETY_POLICY")
    strike_limit: int = Field(3, alias="ASSISTANT_STRIKE_LIMIT", ge=0)
    strike_window_s: int = Field(3600, alias="ASSISTANT_STRIKE_WINDOW_SECONDS", ge=1)
    mute_s: int = Field(3600, alias="ASSISTANT_MUTE_SECONDS", ge=1)
    guard_model: str | None = Field(None, alias="ASSISTANT_GUARD_MODEL")
    guard_threads: int = Field(1, alias="ASSISTANT_GUARD_THREADS", ge=1)
    # A guard that fails or answers unreadably: block the text (true) or let it pass (false).
    guard_fail_closed: bool = Field(False, alias="ASSISTANT_GUARD_FAIL_CLOSED")
    database_url: str | None = Field(None, alias="DATABASE_URL")

    # Slack (integrations/slack): bot token, signing secret (HTTP Events API), app-level
    # token (Socket Mode), and the Web API base URL (tests point it at a local fake).
    slack_bot_token: SecretStr | None = Field(None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", alias="SLACK_API_URL")

    # Telegram (integrations/telegram): bot token; webhook mode when a URL is set.
    telegram_bot_token: SecretStr | None = Field(None, alias="TELEGRAM_BOT_TOKEN")
    telegram_webhook_url: str | None = Field(None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: SecretStr | None = Field(None, alias="TELEGRAM_WEBHOOK_SECRET")
    telegram_api_url: str = Field("https://api.telegram.org/bot", alias="TELEGRAM_API_URL")

    pypi_url: str = Field("https://pypi.org", alias="ASSISTANT_PYPI_URL")
    hf_token: SecretStr | None = Field(None, alias="HF_TOKEN")

    # Speed on long conversations (worker/kvcache.py, worker/affinity.py, docs/scaling.md):
    # the bytes of saved per-conversation KV states (0 = off; ~22 KiB a token for SmolLM2) in
    # one directory shared by a host's worker processes (default /dev/shm/assistant-kv/<model
    # fingerprint>, else under the data dir), and routing each conversation back to the worker
    # node that answered it.
    # 1 GiB holds ~45k tokens of state: 8 conversations of 20 long turns need ~320 MB, and an
    # LRU smaller than a round of conversations evicts each one just before its next turn.
    kv_cache_mb: int = Field(1024, alias="ASSISTANT_KV_CACHE_MB", ge=0)
    kv_cache_dir: Path | None = Field(None, alias="ASSISTANT_KV_CACHE_DIR")
    affinity: bool = Field(True, alias="ASSISTANT_AFFINITY")

    # The admin panel at /admin (integrations/web/admin, docs/admin.md): one admin account; it
    # stays off while the password is empty (and a placeholder is refused outside
    # development). An empty session secret is replaced by a random one per process (sessions
    # then end on a restart and are not shared by several web processes). X-Forwarded-For and
    # X-Forwarded-Proto are believed only from these proxy addresses (comma-separated).
    admin_username: str = Field("admin", alias="ADMIN_USERNAME", min_length=1)
    admin_password: SecretStr = Field(SecretStr(""), alias="ADMIN_PASSWORD")
    admin_session_secret: SecretStr = Field(SecretStr(""), alias="ADMIN_SESSION_SECRET")
    admin_trusted_proxies: str = Field("", alias="ADMIN_TRUSTED_PROXIES")

    # The conversation archive (assistant/store, docs/admin-store.md): conversations without a
    # message for this many days are deleted from it (0 = kept until an admin or the user
    # deletes them). Redis memory has its own ASSISTANT_MEMORY_RETENTION_DAYS.
    archive_retention_days: float = Field(0.0, alias="ASSISTANT_ARCHIVE_RETENTION_DAYS", ge=0)

    # Long-term memory (assistant/recall, docs/memory.md): the platforms where people can
    # make and use memories (comma-separated; empty = off), the shared channels where an admin
    # allows them ("platform:workspace:channel" or "platform:channel"), how long an unedited
    # memory is kept (0 = until the person deletes it), the prompt tokens memories may take
    # per turn, and the most memories one person may keep.
    longterm_platforms: str = Field("slack,telegram,web", alias="ASSISTANT_LONGTERM_PLATFORMS")
    longterm_group_channels: str = Field("", alias="ASSISTANT_LONGTERM_GROUP_CHANNELS")
    longterm_retention_days: float = Field(0.0, alias="ASSISTANT_LONGTERM_RETENTION_DAYS",
                                           ge=0)
    longterm_prompt_tokens: int = Field(120, alias="ASSISTANT_LONGTERM_PROMPT_TOKENS", ge=0,
                                        le=2000)
    longterm_max_per_person: int = Field(2000, alias="ASSISTANT_LONGTERM_MAX_PER_PERSON",
                                         ge=1)
    # Automatic extraction after a turn (off by default; docs/memory.md has its measured
    # precision), and the conversations where memory is off although their platform has it
    # ("platform:workspace:channel" or "platform:channel"; a DM's channel too).
    longterm_auto: bool = Field(False, alias="ASSISTANT_LONGTERM_AUTO")
    longterm_off_channels: str = Field("", alias="ASSISTANT_LONGTERM_OFF_CHANNELS")
    # The policy on admins reading memories: off, they see counts only; on, the admin panel
    # shows one person's memories on request and audits every view.
    longterm_admin_contents: bool = Field(False, alias="ASSISTANT_LONGTERM_ADMIN_CONTENTS")

    # Who may talk to the assistant (assistant/identity, docs/security.md). "auto": sign-in
    # when OIDC_ISSUER is set, else local mode (no sign-in), which runs only on the loopback
    # address; "signin": local accounts (and OIDC when set); "none": no sign-in on purpose.
    auth: Literal["auto", "signin", "none"] = Field("auto", alias="ASSISTANT_AUTH")
    oidc_issuer: str | None = Field(None, alias="OIDC_ISSUER")
    oidc_client_id: str = Field("", alias="OIDC_CLIENT_ID")
    oidc_client_secret: SecretStr = Field(SecretStr(""), alias="OIDC_CLIENT_SECRET")
    oidc_scopes: str = Field("openid email profile", alias="OIDC_SCOPES")
    oidc_groups_claim: str = Field("groups", alias="OIDC_GROUPS_CLAIM")
    oidc_admin_group: str = Field("", alias="OIDC_ADMIN_GROUP")
    # The callback URL registered with the provider; empty: this server's own /auth/oidc/callback.
    oidc_redirect_url: str = Field("", alias="OIDC_REDIRECT_URL")
    # Per client address, for what stays public: the sign-in forms and the OIDC redirects.
    public_rate_limit: str = Field("30/minute", alias="ASSISTANT_PUBLIC_RATE_LIMIT")
    # Per client address, for health checks, metrics and the platforms' webhooks.
    open_rate_limit: str = Field("600/minute", alias="ASSISTANT_OPEN_RATE_LIMIT")
    web_session_hours: float = Field(12.0, alias="ASSISTANT_SESSION_HOURS", gt=0)
    # The knowledge base (docs/knowledge.md): whether turns look in it, how many tokens of
    # passages a prompt may carry, how many passages at most, and the largest file it takes.
    knowledge_enabled: bool = Field(True, alias="ASSISTANT_KNOWLEDGE")
    knowledge_tokens: int = Field(700, alias="ASSISTANT_KNOWLEDGE_TOKENS", ge=50)
    knowledge_top_k: int = Field(5, alias="ASSISTANT_KNOWLEDGE_TOP_K", ge=1, le=20)
    knowledge_max_mb: float = Field(25.0, alias="ASSISTANT_KNOWLEDGE_MAX_MB", gt=0)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "development":
            return self
        for name, value in self.secrets().items():
            if value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ConfigError(f"{name} holds a placeholder secret; set a real one")
        return self

    def secrets(self) -> dict[str, SecretStr]:
        """The secret-valued settings that are set, by environment name."""
        found: dict[str, SecretStr] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                found[field.alias or name] = value
        return found

    @property
    def n_threads_batch(self) -> int:
        return self.threads_batch or self.threads

    @property
    def sql_url(self) -> str:
        """The durable store: DATABASE_URL, or an SQLite file in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'assistant.db'}"

    @property
    def retention_seconds(self) -> int:
        return int(self.memory_retention_days * 86400)

    def public_dict(self) -> dict[str, Any]:
        """Effective settings by environment name, secrets masked: safe to print or log."""
        shown: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            elif name in ("redis_url", "database_url") and value:
                value = _mask_url_password(value)
            shown[field.alias or name] = value
        return shown


def _mask_url_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    if ";" in url:  # a Sentinel URL: several sentinel:// entries, each may hold the password
        return ";".join(_mask_url_password(entry) for entry in url.split(";"))
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":**********@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
