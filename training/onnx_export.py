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


def export_onnx(model, tokenizer, path: str | Path, max_length: int = 128, *, eager: bool = False) -> Path:
    """Write ``model`` (a MeanPoolClassifier) to ``path`` with dynamic axes; outputs ``logits`` and, when the model
    can pool, ``embedding``.  ``eager``: trace transformers' eager attention instead of its default (SDPA); the
    eager graph is the one onnxruntime's transformer optimizer recognises (``fuse_transformer``), the SDPA graph's
    mask arithmetic is not (nothing fuses but the GELU and the residual LayerNorms)."""
    path = Path(path)
    configs = [c for c in (getattr(model, "config", None), getattr(getattr(model, "bert", None), "config", None))
               if c is not None]
    previous = [getattr(c, "_attn_implementation", None) for c in configs]
    if eager:
        for c in configs:
            c._attn_implementation = "eager"
    try:
        return _export(model, tokenizer, path, max_length)
    finally:
        for c, value in zip(configs, previous):
            c._attn_implementation = value


def _export(model, tokenizer, path: Path, max_length: int) -> Path:
    import torch

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


# onnxruntime's offline transformer optimizer (issue 16, benchmarks/fused_int8.py): one Attention node per layer
# (Q/K/V in one MatMul, mask and softmax inside), EmbedLayerNormalization, SkipLayerNormalization, BiasGelu.  The
# dynamic quantiser turns Attention into QAttention and EmbedLayerNormalization into QEmbedLayerNormalization.
FUSED_OPS = ("Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu")


def fuse_transformer(fp32_path: str | Path, fused_path: str | Path, num_heads: int, hidden_size: int) -> dict:
    """``fp32_path`` (an ``export_onnx(..., eager=True)`` graph) with onnxruntime's BERT fusions, written to
    ``fused_path``; returns the fused-operator counts.  Python fusions only (opt_level 0): the graph holds no
    hardware-specific kernels, onnxruntime's own graph optimisations still run when a session loads it.  Raises
    ``ValueError`` when no attention fused (an SDPA export, another architecture): a silent no-op would be
    recorded as a fused model.  Inputs and outputs (``logits``, ``embedding``) keep their names and shapes."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = optimize_model(str(fp32_path), model_type="bert", num_heads=int(num_heads), hidden_size=int(hidden_size),
                           opt_level=0)
    stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if k in FUSED_OPS}
    if not stats.get("Attention"):
        raise ValueError(f"{Path(fp32_path).name}: no attention fused ({stats}); export it with eager attention")
    before = onnx.load(str(fp32_path), load_external_data=False).graph
    after = model.model.graph
    sig = lambda graph: [(v.name, v.type.SerializeToString()) for v in graph.output]  # noqa: E731
    if sig(before) != sig(after) or [i.name for i in before.input] != [i.name for i in after.input]:
        raise ValueError(f"fusing {Path(fp32_path).name} changed its inputs or outputs")
    Path(fused_path).parent.mkdir(parents=True, exist_ok=True)
    model.save_model_to_file(str(fused_path))
    onnx.checker.check_model(str(fused_path))
    return stats


def fused_int8(fp32_path: str | Path, int8_path: str | Path, scheme: str, num_heads: int, hidden_size: int, *,
               exclude=()) -> dict:
    """The int8 graph of the fused graph: ``fuse_transformer`` (a temporary fp32 file), then ``quantize_int8`` by a
    dynamic ``scheme``; returns the fused-operator counts.  ``exclude`` patterns are matched against the fused
    graph's node names (the Q/K/V projections and the embeddings are no longer separate nodes there)."""
    import tempfile

    if scheme == "static-qdq":
        raise ValueError("fusing is for the dynamic int8 schemes (static-qdq quantises MatMul/Gemm only; it would "
                         "leave the fused attention in fp32)")
    with tempfile.TemporaryDirectory(prefix="fused-") as tmp:
        fused = Path(tmp) / "fused.onnx"
        stats = fuse_transformer(fp32_path, fused, num_heads, hidden_size)
        quantize_int8(fused, int8_path, scheme, exclude=exclude)
    return stats


# int8 schemes (issue 16: a 2-layer student lost its last points in quantisation, so the scheme is an option).
# "dynamic" is the project's original one and stays the default of every export path.
QUANT_SCHEMES = {
    "dynamic": "dynamic int8: int8 weights, one scale per tensor; activations quantised per call (uint8)",
    "dynamic-per-channel": "dynamic int8 with one weight scale per output channel",
    "dynamic-reduce-range": "dynamic int8 with 7-bit weights (reduce_range; avoids u8s8 saturation without VNNI)",
    "static-qdq": "static int8 (QDQ): weights per channel, activation scales fixed from calibration texts (MinMax)",
}


def quantizable_nodes(fp32_path: str | Path) -> list[str]:
    """Names of the nodes the int8 quantisers act on: MatMul/Gemm with a weight initialiser, Gather of an embedding
    table (word, position, token type)."""
    import onnx

    model = onnx.load(str(fp32_path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and any(x in weights for x in node.input[:2]):
            out.append(node.name)
        elif node.op_type == "Gather" and node.input and node.input[0] in weights:
            out.append(node.name)
    return out


def excluded_nodes(fp32_path: str | Path, patterns) -> list[str]:
    """Quantisable node names containing any of ``patterns`` (substrings such as ``word_embeddings``,
    ``classifier``, ``layer.1/output``); a pattern that matches nothing is an error (a typo would otherwise
    silently quantise everything)."""
    names = quantizable_nodes(fp32_path)
    out = []
    for pattern in patterns:
        hits = [n for n in names if pattern in n]
        if not hits:
            raise ValueError(f"int8 exclusion {pattern!r} matches no quantisable node of {Path(fp32_path).name}")
        out += [n for n in hits if n not in out]
    # the dynamic quantiser first rewrites a Gemm as MatMul + Add and names the MatMul "<gemm>_MatMul"
    return out + [f"{n}_MatMul" for n in out if n.endswith("Gemm")]


class _Feeds:
    """onnxruntime CalibrationDataReader over a list of input dicts (one text per call, as served)."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not called by the MinMax calibrator
        raise NotImplementedError


def calibration_feeds(tokenizer, texts: list[str], max_length: int) -> list[dict]:
    """One input dict per text (unpadded, the way the service runs int8), for static calibration."""
    feeds = []
    for text in texts:
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        feeds.append({k: np.asarray(enc[k], dtype=np.int64) for k in INPUT_NAMES if k in enc})
    return feeds


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, scheme: str = "dynamic", *, exclude=(),
                  calibration: list[dict] | None = None, op_types: tuple[str, ...] | None = None) -> Path:
    """int8 graph of ``fp32_path`` by ``scheme`` (``QUANT_SCHEMES``); ``exclude``: node-name substrings kept fp32
    (``excluded_nodes``); ``calibration``: input dicts for ``static-qdq`` (``calibration_feeds`` of training
    texts); ``op_types`` (dynamic schemes): the operator types quantised (default: every type the quantiser knows,
    e.g. ``("MatMul", "Gather")`` keeps a fused graph's Attention in fp32).  "dynamic" with nothing excluded is the
    original plain ``quantize_dynamic(weight_type=QInt8)``."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    if scheme not in QUANT_SCHEMES:
        raise ValueError(f"unknown int8 scheme {scheme!r}; choose one of {sorted(QUANT_SCHEMES)}")
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantiser warns about pre-processing
    skip = excluded_nodes(fp32_path, exclude) if exclude else []
    if scheme == "static-qdq":
        if not calibration:
            raise ValueError("static-qdq needs calibration inputs (calibration_feeds of training texts)")
        quantize_static(str(fp32_path), str(int8_path), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=skip, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"MatMulConstBOnly": True})
        return Path(int8_path)
    options = {"per_channel": scheme == "dynamic-per-channel", "reduce_range": scheme == "dynamic-reduce-range"}
    if skip:
        options["nodes_to_exclude"] = skip
    if op_types:
        options["op_types_to_quantize"] = list(op_types)
    # a fused graph (fuse_transformer) holds com.microsoft operators that ONNX shape inference cannot type; every
    # activation of these graphs is float32 (the default is only consulted where inference returned nothing)
    options["extra_options"] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, **options)
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
