"""Export a fine-tuned sequence classifier to ONNX, check parity with torch, quantise to int8.

The TorchScript-based exporter (``dynamo=False``) is used: with torch 2.13 and transformers 5.x it
traces BERT cleanly with dynamic batch and sequence axes and gives a compact graph that
onnxruntime's dynamic int8 quantiser handles well.  The dynamo exporter also works but is slower
to run and produced no smaller/faster model here.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17


def _with_embedding(model):
    """Wrap a MeanPoolClassifier so the graph returns (logits, pooled embedding): one encoder pass serves the
    center head, the urgency head and embedding similarity."""
    import torch

    class _Outputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            pooled = self.inner.embed(input_ids, attention_mask, token_type_ids)
            return self.inner.classifier(pooled), pooled

    return _Outputs(model)


def export_onnx(model, tokenizer, path: str | Path, max_length: int = 128) -> Path:
    """Write ``model`` (a MeanPoolClassifier) to ``path`` with dynamic axes; outputs ``logits`` and, when the model
    can pool, ``embedding``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    sample = tokenizer(
        ["a sample complaint to trace the graph", "short"],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    args = tuple(sample[name] for name in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["logits"] = {0: "batch"}
    outputs = ["logits"]
    graph = model
    if hasattr(model, "embed") and hasattr(model, "classifier"):
        graph = _with_embedding(model)
        outputs.append("embedding")
        axes["embedding"] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            args,
            str(path),
            input_names=INPUT_NAMES,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(path))
    return path


def quantize_int8(fp32_path: str | Path, int8_path: str | Path) -> Path:
    """Dynamic (weight-only int8, activations quantised on the fly) quantisation for CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantiser warns about pre-processing
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    return Path(int8_path)


def session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _by_length(texts) -> tuple[list[str], np.ndarray]:
    """Texts sorted by length (less padding per batch) and the permutation to undo it."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [texts[i] for i in order], np.argsort(order)


def onnx_logits(sess, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    names = {i.name for i in sess.get_inputs()}
    texts, undo = _by_length(list(texts))
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        out.append(sess.run(None, {k: np.asarray(enc[k], dtype=np.int64) for k in INPUT_NAMES if k in names})[0])
    return np.concatenate(out)[undo] if out else np.zeros((0, 0), dtype=np.float32)


def torch_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    import torch

    model.eval()
    texts, undo = _by_length(list(texts))
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(model(**enc).logits.float().numpy())
    return np.concatenate(out)[undo] if out else np.zeros((0, 0), dtype=np.float32)


def parity(model, tokenizer, onnx_path: str | Path, texts: list[str], max_length: int) -> dict:
    """max |logit difference| and top-1 agreement between torch and the ONNX model on ``texts``."""
    if not texts:
        raise ValueError("parity check needs at least one text")
    ref = torch_logits(model, tokenizer, texts, max_length)
    got = onnx_logits(session(onnx_path), tokenizer, texts, max_length)
    return {
        "max_abs_diff": float(np.abs(ref - got).max()),
        "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
        "n": len(texts),
    }
