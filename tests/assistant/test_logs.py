"""Structured logs: JSON lines with ids off a terminal, text on one."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from assistant.logs import JsonFormatter, configure_logging, log_context, wants_json
from assistant.settings import Settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_context_ids(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(ASSISTANT_LOG_FORMAT="auto"), stream=stream)
    log = logging.getLogger("tests.logs")
    log.info("outside")
    with log_context(conversation="c0ffee"):
        with log_context(message_id="m1,m2"):
            log.warning("inside %s", "both", extra={"unrelated": 1})
        log.info("conversation only")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed\nover two lines")
    entries = lines(stream)
    assert [e["msg"] for e in entries] == [
        "outside", "inside both", "conversation only", "failed\nover two lines"]
    assert len(stream.getvalue().splitlines()) == 4  # one line per record, even multi-line
    assert entries[0]["message_id"] is None and entries[0]["conversation"] is None
    assert entries[1] | {"time": None} == {
        "time": None, "level": "WARNING", "logger": "tests.logs", "msg": "inside both",
        "message_id": "m1,m2", "conversation": "c0ffee"}
    assert entries[2]["message_id"] is None and entries[2]["conversation"] == "c0ffee"
    assert "ValueError: boom" in str(entries[3]["exc"])
    assert str(entries[0]["time"]).endswith("Z")


def test_context_is_per_thread(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(ASSISTANT_LOG_FORMAT="json"), stream=stream)
    log = logging.getLogger("tests.logs")
    with log_context(message_id="main"):
        other = threading.Thread(target=lambda: log.info("other thread"))
        other.start()
        other.join()
        log.info("main thread")
    by_msg = {e["msg"]: e for e in lines(stream)}
    assert by_msg["other thread"]["message_id"] is None
    assert by_msg["main thread"]["message_id"] == "main"


def test_text_on_a_terminal_and_reconfiguring_replaces_our_handler(restore_root: None
                                                                   ) -> None:
    terminal = Terminal()
    configure_logging(Settings(ASSISTANT_LOG_FORMAT="auto"), stream=terminal)
    configure_logging(Settings(ASSISTANT_LOG_FORMAT="auto"), stream=terminal)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "assistant"]
    assert len(ours) == 1
    with log_context(message_id="m9", conversation="abc"):
        logging.getLogger("tests.logs").info("hello")
    (line,) = terminal.getvalue().splitlines()
    assert line.endswith("INFO tests.logs [message_id=m9 conversation=abc]: hello")
    assert not line.startswith("{")


@pytest.mark.parametrize(("setting", "tty", "expected"), [
    ("auto", False, True), ("auto", True, False), ("json", True, True), ("text", False, False),
])
def test_format_choice(setting: str, tty: bool, expected: bool) -> None:
    stream = Terminal() if tty else io.StringIO()
    assert wants_json(setting, stream) is expected  # type: ignore[arg-type]


def test_json_formatter_alone_tolerates_records_without_ids() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %d", (1,), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "plain 1" and entry["message_id"] is None


def test_request_urls_with_tokens_stay_out_of_info_logs(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(ASSISTANT_LOG_FORMAT="json"), stream=stream)
    logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot123:SECRET/x")
    assert "SECRET" not in stream.getvalue()
