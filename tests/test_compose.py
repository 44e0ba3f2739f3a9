"""compose.yaml and the Dockerfile, checked without a Docker engine (this machine has none)."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from assistant.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_the_backbone_services_are_there() -> None:
    assert {"redis", "web", "worker", "model"} <= set(SERVICES)
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name


def test_every_named_volume_is_declared() -> None:
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in COMPOSE["volumes"], source


def test_dependencies_name_real_services() -> None:
    for service in SERVICES.values():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "build" in s])
def test_every_command_of_our_image_exists(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")  # as compose sets it
    command = SERVICES[name]["command"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if command[0] == "assistant":
        assert "assistant" in scripts
        result = CliRunner().invoke(cli, [*command[1:], "--help"])
        assert result.exit_code == 0, result.output
    elif command[0] == "celery":
        app_ref = command[command.index("-A") + 1]
        module = importlib.import_module(app_ref)
        assert module.app.main == "assistant"
        assert command[command.index("-A") + 2] == "worker"
    else:
        pytest.fail(f"unknown command {command!r} in service {name}")


def test_redis_keeps_queued_messages() -> None:
    command = " ".join(SERVICES["redis"]["command"])
    assert "noeviction" in command and "--appendonly yes" in command
    assert "healthcheck" in SERVICES["redis"]


def test_services_reach_redis_by_its_service_name() -> None:
    for name in ("web", "worker"):
        assert SERVICES[name]["environment"]["REDIS_URL"].startswith(
            "redis://:${REDIS_PASSWORD:?")
        assert "@redis:6379/" in SERVICES[name]["environment"]["REDIS_URL"]


def test_dockerfile_copies_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path


def test_every_variable_compose_uses_is_documented() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "compose.yaml").read_text()))
    documented = (ROOT / ".env.example").read_text()
    assert used, "compose.yaml should take its settings from the environment"
    assert sorted(v for v in used if not re.search(rf"^#? ?{v}=", documented, re.M)) == []


def test_adapters_only_start_in_their_profiles() -> None:
    assert SERVICES["slack"]["profiles"] == ["slack"]
    assert SERVICES["telegram"]["profiles"] == ["telegram"]
    for name in ("redis", "web", "worker", "model"):
        assert "profiles" not in SERVICES[name], name


def test_long_running_services_are_restarted_and_the_worker_checks_progress() -> None:
    """Issue 16: what dies comes back; the worker's health is more than a ping."""
    for name, service in SERVICES.items():
        if name != "model":  # a one-shot job
            assert service.get("restart") == "unless-stopped", name
    check = SERVICES["worker"]["healthcheck"]["test"]
    assert check[1:] == ["python", "-m", "worker.health"]
    module = importlib.import_module("worker.health")
    assert callable(module.main)


def test_compose_turns_sign_in_on() -> None:
    """The web port is published beyond the machine: local mode must not be what runs there
    (docs/security.md)."""
    from assistant.identity.modes import exposure_problem
    from assistant.settings import Settings

    environment = SERVICES["web"]["environment"]
    auth = re.fullmatch(r"\$\{ASSISTANT_AUTH:-(\w+)\}", environment["ASSISTANT_AUTH"])
    assert auth and auth.group(1) == "signin"
    settings = Settings(ASSISTANT_HOST="0.0.0.0", ASSISTANT_AUTH=auth.group(1))  # type: ignore[call-arg]
    assert exposure_problem(settings) is None
    assert exposure_problem(Settings(ASSISTANT_HOST="0.0.0.0")) is not None  # type: ignore[call-arg]


def test_the_image_writes_its_caches_to_a_volume_its_user_owns() -> None:
    """The first process on a host writes the safety and embedding caches under
    ASSISTANT_DATA_DIR; /app is root's, so the image points it at /data (owned by its user)
    and compose mounts one volume there for the web and the workers."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ASSISTANT_DATA_DIR=/data" in dockerfile
    assert "chown assistant:assistant /data" in dockerfile
    for service in ("web", "worker"):
        assert "assistant-data:/data" in COMPOSE["services"][service]["volumes"], service
    assert "assistant-data" in COMPOSE["volumes"]
