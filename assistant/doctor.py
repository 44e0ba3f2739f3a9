"""``assistant doctor``: what is wrong here, and what to do, in one command.

Each check returns ok, warn or fail with a detail and, unless ok, what to do. The engine is
tested in a child process (``assistant.selftest``), so a build that crashes on this CPU is
reported instead of taking the command down with it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from assistant import models, selftest
from assistant.settings import Settings

Status = Literal["ok", "warn", "fail"]
CHROMIUM = Path("/usr/bin/chromium")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def check_python() -> Check:
    # The package needs 3.11 (pyproject.toml): an older Python cannot have installed it.
    venv = "a virtualenv" if sys.prefix != sys.base_prefix else "no virtualenv"
    return Check("python", "ok", f"{platform.python_version()} ({sys.executable}, {venv})")


def check_cpu() -> Check:
    features = selftest.host_cpu_features()
    detail = f"{platform.machine()}, {_cpu_name()}; features: {', '.join(features) or 'unknown'}"
    return Check("cpu", "ok", detail)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def check_model(settings: Settings) -> tuple[Check, Path | None]:
    try:
        path = models.resolve_model_path(settings.model, settings.models_dir)
    except Exception as exc:
        return Check("model", "fail", str(exc), "`assistant model pull`"), None
    digest = models.file_sha256(path)
    known = models.KNOWN_MODELS.get(settings.model)
    pinned = known.sha256 if known is not None else None
    if settings.model.startswith(models.HF_PREFIX):
        pinned = models.hf_pin(settings.model)[1]
    try:
        family = models.template_family_of(path)
    except Exception as exc:  # a damaged header: the checksum and the engine check say more
        family = f"unreadable ({exc})"
    detail = (f"{path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {digest}, "
              f"chat template: {family})")
    if pinned and pinned != digest:
        return Check("model", "fail", detail + f"; expected sha256 {pinned}",
                     f"the file is damaged or replaced: delete it and `assistant model pull "
                     f"{settings.model}`"), None
    return Check("model", "ok", detail + (" (matches its pin)" if pinned else "")), path


def check_engine(settings: Settings, model_path: Path | None,
                 run: Callable[[list[str]], selftest.SelfTestResult] = selftest.run) -> Check:
    if model_path is None:
        return Check("engine", "fail", "not tested: no model", "`assistant model pull`")
    result = run(selftest.engine_check_command(model_path, settings.threads))
    build = f"llama-cpp-python {result.details.get('llama_cpp_version', '?')}; {result.system_info}"
    if result.ok:
        return Check("engine", "ok", f"{result.summary}; {build}")
    return Check("engine", "fail", f"{result.summary}; {build}", result.fix)


def check_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        return Check("redis", "ok", "REDIS_URL unset: `assistant up` starts an embedded Valkey")
    from assistant.redis_client import connect

    try:
        client = connect(settings.redis_url, master_name=settings.redis_sentinel_master,
                         socket_timeout=3, socket_connect_timeout=3)
        info = client.info("server")
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "?")
    except Exception as exc:
        return Check("redis", "fail", f"{type(exc).__name__}: {exc}",
                     "start Redis or fix REDIS_URL (docs/operations.md)")
    detail = f"version {info.get('redis_version', '?')}, maxmemory-policy {policy}"
    if policy != "noeviction":
        return Check("redis", "warn", detail, "set maxmemory-policy noeviction: the broker "
                     "must never drop queued messages")
    return Check("redis", "ok", detail)


def check_store(settings: Settings) -> Check:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(settings.sql_url)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        parent = Path(url.database).resolve().parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            return Check("store", "fail", f"{shown}: {parent} is not writable",
                         "set ASSISTANT_DATA_DIR or DATABASE_URL to a writable place")
        return Check("store", "ok", f"{shown} (created at the first start)")
    try:
        engine = create_engine(settings.sql_url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return Check("store", "fail", f"{shown}: {type(exc).__name__}: {exc}",
                     "start the database or fix DATABASE_URL")
    return Check("store", "ok", shown)


def check_chromium() -> Check:
    found = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if not found:
        return Check("chromium", "warn", "not found (only the browser tests need it)",
                     "apt-get install chromium")
    return Check("chromium", "ok", str(found))


def run_checks(settings: Settings) -> list[Check]:
    checks = [check_python(), check_cpu()]
    model_check, model_path = check_model(settings)
    checks += [model_check, check_engine(settings, model_path), check_redis(settings),
               check_store(settings), check_chromium()]
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"[{check.status:>4}] {check.name}: {check.detail}")
        if check.fix:
            lines.append(f"       what to do: {check.fix}")
    return "\n".join(lines)
