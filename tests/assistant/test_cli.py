import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from assistant.cli import main
from assistant.settings import Settings
from tests.auxil.stack import ROOT, free_port


def test_config_prints_settings_with_secrets_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@db:6379/0")
    monkeypatch.setenv("ASSISTANT_PORT", "8123")
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["ASSISTANT_PORT"] == 8123
    assert shown["HF_TOKEN"] == "**********"
    assert shown["REDIS_URL"] == "redis://:**********@db:6379/0"
    assert "supersecret" not in result.output and "hunter2" not in result.output


def test_bad_settings_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_PORT", "not-a-port")
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code != 0 and "ASSISTANT_PORT" in result.output


def test_placeholder_secrets_are_refused_outside_development() -> None:
    with pytest.raises(Exception, match="placeholder"):
        Settings(ASSISTANT_ENV="production", HF_TOKEN="changeme")
    assert Settings(ASSISTANT_ENV="development", HF_TOKEN="changeme").hf_token is not None


def test_model_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", str(tmp_path))
    assert "no models" in CliRunner().invoke(main, ["model", "list"]).output
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    assert "tiny.gguf" in CliRunner().invoke(main, ["model", "list"]).output


@pytest.mark.integration
def test_up_starts_everything_and_ctrl_c_stops_it(tmp_path: Path, model_path: Path) -> None:
    """`assistant up` with no REDIS_URL: embedded Valkey, a worker, the web server; then SIGINT."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(ASSISTANT_PORT=str(port), ASSISTANT_MODEL=str(model_path),
               ASSISTANT_DATA_DIR=str(tmp_path / "data"), ASSISTANT_MAX_TOKENS="16",
               ASSISTANT_KV_CACHE_DIR=str(tmp_path / "kv"),  # not the host's /dev/shm store
               PYTHONUNBUFFERED="1")
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "assistant.cli", "up"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while b"The assistant is up" not in log_path.read_bytes():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.3)
            output = log_path.read_text()
            assert "started an embedded Valkey" in output
            assert f"http://127.0.0.1:{port}/" in output
            deadline = time.monotonic() + 60
            while httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
                assert time.monotonic() < deadline, "no worker became ready"
                time.sleep(0.5)
            reply = httpx.post(f"http://127.0.0.1:{port}/api/chat", json={"text": "hi"},
                               timeout=60)
            assert reply.status_code == 200 and reply.json()["reply"]
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert "stopped" in log_path.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
    # No process of ours is left behind: no worker, no uvicorn, no valkey for this data dir.
    marker = f"ASSISTANT_DATA_DIR={tmp_path / 'data'}".encode()
    assert processes_with(marker) == []
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout == ""


def processes_with(environment_entry: bytes) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if environment_entry in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_worker_plan_never_puts_more_threads_than_cores() -> None:
    from assistant.cli import plan_worker

    assert plan_worker(cores=2, processes=1, threads=2).threads == 2
    two = plan_worker(cores=2, processes=2, threads=2)
    assert (two.processes, two.threads) == (2, 1) and "exceed the 2 cores" in two.note
    scaled = plan_worker(cores=8, processes=1, threads=8, autoscale=(4, 1))
    assert (scaled.processes, scaled.min_processes, scaled.threads) == (4, 1, 2)
    with pytest.raises(Exception, match="core of its own"):
        plan_worker(cores=2, processes=3, threads=1)


def test_worker_command_carries_the_plan() -> None:
    from assistant.cli import WorkerPlan, worker_command

    settings = Settings()
    command = worker_command(settings, WorkerPlan(2, None, 1), queues="assistant.turns")
    assert command[1:6] == ["-m", "celery", "-A", "worker.app", "worker"]
    assert "--concurrency=2" in command and command[-2:] == ["--queues", "assistant.turns"]
    assert "--autoscale=4,1" in worker_command(settings, WorkerPlan(4, 1, 1))


def test_batch_slots_run_one_process_on_a_thread_pool() -> None:
    """ASSISTANT_BATCH_SLOTS=N > 1: one process, Celery's thread pool of N (worker/app.py)."""
    from assistant.cli import WorkerPlan, worker_command
    from worker.app import batching_pool

    batched = Settings(ASSISTANT_BATCH_SLOTS="8")
    command = worker_command(batched, WorkerPlan(2, None, 1))
    assert "--pool=threads" in command and "--concurrency=8" in command
    assert "--pool=prefork" not in command and "--concurrency=2" not in command
    assert batching_pool(batched) == {"worker_pool": "threads", "worker_concurrency": 8}
    assert batching_pool(Settings()) == {"worker_concurrency": 1}
    assert "--pool=prefork" in worker_command(Settings(), WorkerPlan(2, None, 1))


def test_worker_refuses_a_bad_autoscale() -> None:
    result = CliRunner().invoke(main, ["worker", "--autoscale", "1,4"])
    assert result.exit_code != 0 and "MIN <= MAX" in result.output
