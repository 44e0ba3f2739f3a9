"""Attack: walk in through a default (issue 15, item 8).

``.env.example`` set development mode (which skips the placeholder checks), compose ran
PostgreSQL with a default password and Redis with none, the admin password had no minimum
length, and the saved model states lived in a directory any user of the host could plant files
in (/dev/shm). Each default is checked here; the states directory with real files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from assistant.settings import Settings
from integrations.web.admin.auth import MIN_PASSWORD_LENGTH, password_problem
from tests.auxil.stack import ROOT
from worker import kvcache

COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
SERVICES = yaml.safe_load(COMPOSE_TEXT)["services"]


def test_the_example_configuration_is_production() -> None:
    example = (ROOT / ".env.example").read_text()
    assert re.findall(r"^ASSISTANT_ENV=(\S+)", example, re.M) == ["production"]
    assert re.findall(r"^ASSISTANT_PUBLIC_OPS=(\S+)", example, re.M) == ["false"]


def test_a_short_admin_password_keeps_the_panel_off_outside_development() -> None:
    short = "x" * (MIN_PASSWORD_LENGTH - 1)
    for environment in ("production", "test"):
        settings = Settings(ASSISTANT_ENV=environment, ADMIN_PASSWORD=short)  # type: ignore[call-arg]
        assert password_problem(settings) is not None and "shorter" in str(
            password_problem(settings))
        long_enough = Settings(ASSISTANT_ENV=environment,  # type: ignore[call-arg]
                               ADMIN_PASSWORD="x" * MIN_PASSWORD_LENGTH)
        assert password_problem(long_enough) is None


def test_compose_requires_the_database_and_redis_passwords() -> None:
    assert "POSTGRES_PASSWORD:-" not in COMPOSE_TEXT  # no default password anywhere
    uses = re.findall(r"\$\{POSTGRES_PASSWORD(:[?-])", COMPOSE_TEXT)
    assert uses and set(uses) == {":?"}
    redis_command = SERVICES["redis"]["command"]
    assert redis_command[redis_command.index("--requirepass") + 1].startswith(
        "${REDIS_PASSWORD:?")
    for name, service in SERVICES.items():
        url = service.get("environment", {}).get("REDIS_URL")
        if url is not None:
            assert url.startswith("redis://:${REDIS_PASSWORD:?"), name


@pytest.mark.parametrize("problem", ["other-owner", "writable-by-others", "symlink"])
def test_a_states_directory_someone_else_controls_is_refused(tmp_path: Path, problem: str
                                                            ) -> None:
    root = tmp_path / "shared-kv"
    root.mkdir(mode=0o700)
    directory = root / "fingerprint"
    if problem == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        directory.symlink_to(elsewhere)
    else:
        directory.mkdir(mode=0o700)
        if problem == "other-owner":
            if os.getuid() != 0:
                pytest.skip("only root can give a directory to another user")
            os.chown(directory, 54321, 54321)
        else:
            directory.chmod(0o777)
    with pytest.raises(PermissionError):
        kvcache.KvStateDirectory(directory, 1 << 20)


def test_a_foreign_states_directory_falls_back_to_private_memory(
        tmp_path: Path, model_path: Path) -> None:
    root = tmp_path / "kv"
    root.mkdir(mode=0o777)  # e.g. made by another user in /dev/shm
    root.chmod(0o777)
    settings = Settings(ASSISTANT_KV_CACHE_DIR=str(root))  # type: ignore[call-arg]
    cache = kvcache.make_cache(settings, model_path, 512)
    assert isinstance(cache, kvcache.KvStateCache)
    assert list(root.iterdir()) == []  # nothing was written into it


def test_our_own_states_directory_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "kv" / "fingerprint"
    kvcache.KvStateDirectory(directory, 1 << 20)
    for level in (directory.parent, directory):
        assert level.stat().st_mode & 0o077 == 0
