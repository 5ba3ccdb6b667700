"""int8 schemes of one triage artefact side by side: fidelity to fp32 on validation texts, per-node sensitivity, speed.

    .venv/bin/python benchmarks/int8_schemes.py --model var/runs/triage/<run>/model [--sensitivity] [--speed]
    OPENBLAS_NUM_THREADS=1 flock /work/bench.lock .venv/bin/python benchmarks/int8_schemes.py --model DIR --speed \
        --schemes dynamic static-qdq

Issue 16: a 2-layer student equals its teacher in fp32 but loses points in its int8 graph, so the scheme is chosen
here **on validation texts** (agreement with the fp32 graph's top-1, logit error, validation accuracy), never on
the in-source test rows (printed in a last column for the record only).  Every variant is the artefact's own fp32
graph quantised by ``training.onnx_export.quantize_int8`` and run the way the service runs int8: one text per call
(``TriageClassifier``, deterministic mode).  Calibration texts for ``static-qdq``: training-split texts of the
artefact's own split (seed in its meta.json), never validation or test.

Per-node sensitivity (``--sensitivity``): dynamic int8 of one quantisable node only, and of all but that node;
max/mean |logit - fp32 logit| and top-1 agreement on the validation texts.

Speed (``--speed``): texts/s at batch 1 (one text per call) and batch 32 (calls of 32 texts; int8 runs them one per
call, as served; ``padded`` = one padded call of 32, only meaningful for a batch-invariant graph), best and median
of interleaved rounds; centre head only (no urgency head), 1 intra-op thread.  Not a test: prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from evaluation.cpu_info import describe_cpu  # noqa: E402
from serving.settings import get_settings  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402

from training import onnx_export  # noqa: E402
from training.distill import load_tokenizer  # noqa: E402
from training.triage_data import load_examples, make_splits  # noqa: E402
from triage.classifier import TriageClassifier  # noqa: E402

LINK = ("tokenizer", "labels.json", "meta.json", "model.onnx")
# named variants: (scheme, node-name substrings kept fp32)
VARIANTS = {
    "dynamic": ("dynamic", ()),
    "dynamic-per-channel": ("dynamic-per-channel", ()),
    "dynamic-reduce-range": ("dynamic-reduce-range", ()),
    "dynamic, fp32 word embeddings": ("dynamic", ("word_embeddings",)),
    "dynamic, fp32 embeddings + head": ("dynamic", ("embeddings", "classifier")),
    "dynamic, fp32 last FFN": ("dynamic", ("LAST/intermediate", "LAST/output/dense")),
    # the FFN's second MatMul (input: the GELU output, 1,536 wide) of every layer / of the first layer only
    "dynamic, fp32 FFN-out": ("dynamic", ("EACH/output/dense",)),
    "dynamic, fp32 layer-0 FFN-out": ("dynamic", ("layer.0/output/dense",)),
    "dynamic-per-channel, fp32 embeddings + head": ("dynamic-per-channel", ("embeddings", "classifier")),
    "dynamic-per-channel, fp32 FFN-out": ("dynamic-per-channel", ("EACH/output/dense",)),
    "dynamic-per-channel, fp32 layer-0 FFN-out": ("dynamic-per-channel", ("layer.0/output/dense",)),
    "static-qdq": ("static-qdq", ()),
    "static-qdq, fp32 head": ("static-qdq", ("classifier",)),
}


def expand(patterns, layers: int) -> tuple[str, ...]:
    """LAST -> the last encoder layer; EACH -> one pattern per layer."""
    out = []
    for x in patterns:
        if "EACH" in x:
            out += [x.replace("EACH", f"layer.{i}") for i in range(max(layers, 1))]
        else:
            out.append(x.replace("LAST", f"layer.{max(layers, 1) - 1}"))
    return tuple(out)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def variant_dir(model: Path, root: Path, name: str) -> Path:
    d = root / name.replace(" ", "_").replace(",", "").replace("+", "and")
    d.mkdir(parents=True, exist_ok=True)
    for item in LINK:
        if not (d / item).exists():
            (d / item).symlink_to((model / item).resolve())
    return d


def fidelity(ref: np.ndarray, ref_emb, got: np.ndarray, got_emb, y: np.ndarray) -> dict:
    err = np.abs(ref - got)
    out = {"agree": float((ref.argmax(1) == got.argmax(1)).mean()), "max_err": float(err.max()),
           "mean_err": float(err.mean()), "acc": float((got.argmax(1) == y).mean())}
    if ref_emb is not None and got_emb is not None:
        cos = (ref_emb * got_emb).sum(1) / (np.linalg.norm(ref_emb, axis=1) * np.linalg.norm(got_emb, axis=1))
        out["emb_cos_min"] = float(cos.min())
    return out


def timed(fn, texts, batch) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        fn(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="artefact folder with model.onnx (fp32)")
    p.add_argument("--schemes", nargs="*", default=list(VARIANTS), help=f"variants (default all): {list(VARIANTS)}")
    p.add_argument("--calibration", type=int, default=300, help="training texts for static calibration")
    p.add_argument("--sensitivity", action="store_true", help="per-node sensitivity (dynamic int8)")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=128, help="texts timed at batch 32")
    p.add_argument("--n-single", type=int, default=64, help="texts timed one per call")
    p.add_argument("--work", type=Path, default=None, help="keep the variant graphs here (default: temporary)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    unknown = [s for s in args.schemes if s not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")

    model = args.model.resolve()
    meta = json.loads((model / "meta.json").read_text())
    labels = json.loads((model / "labels.json").read_text())
    index = {c: i for i, c in enumerate(labels)}
    df = make_splits(load_examples(get_settings()), seed=int(meta.get("seed", 13)))
    df = df[df["center"].isin(labels)]
    val = df[df["split"] == "val"]
    test = df[(df["split"] == "test") & (df["origin"] == "external")]
    train = df[df["split"] == "train"].sample(frac=1.0, random_state=0)
    val_texts, y_val = list(val["text"]), val["center"].map(index).to_numpy()
    test_texts, y_test = list(test["text"]), test["center"].map(index).to_numpy()
    layers = int(meta.get("layers") or 0)

    work = args.work or Path(tempfile.mkdtemp(prefix="int8-schemes-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(model)
    calib = onnx_export.calibration_feeds(tokenizer, list(train["text"])[: args.calibration], int(meta["max_length"]))
    print(f"CPU: {describe_cpu()}; load {loadavg()}")
    print(f"model {model} ({layers} layers); validation n={len(val_texts)}, test n={len(test_texts)}, "
          f"calibration n={len(calib)} training texts")

    fp32 = TriageClassifier.from_folder(model, variant="fp32", intra_op_threads=1)
    ref_val, ref_val_emb = fp32.predict_outputs(val_texts)
    ref_test, _ = fp32.predict_outputs(test_texts)
    print(f"fp32: validation accuracy {(ref_val.argmax(1) == y_val).mean():.1%}, test {(ref_test.argmax(1) == y_test).mean():.1%}")
    out = {"cpu": describe_cpu(), "model": str(model), "n_val": len(val_texts), "n_test": len(test_texts),
           "fp32_val_acc": float((ref_val.argmax(1) == y_val).mean()),
           "fp32_test_acc": float((ref_test.argmax(1) == y_test).mean()), "variants": {}, "sensitivity": {}}

    dirs = {}
    print("\n| variant | top-1 agreement with fp32 (val) | max / mean abs logit error | min embedding cosine | "
          "val accuracy | batched vs alone max diff | MB | test accuracy (record only) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.schemes:
        scheme, exclude = VARIANTS[name]
        exclude = expand(exclude, layers)
        d = variant_dir(model, work, name)
        started = time.time()
        onnx_export.quantize_int8(model / "model.onnx", d / "model.int8.onnx", scheme, exclude=exclude,
                                  calibration=calib if scheme == "static-qdq" else None)
        seconds = time.time() - started
        dirs[name] = d
        clf = TriageClassifier.from_folder(d, variant="int8", intra_op_threads=1)
        got, emb = clf.predict_outputs(val_texts)
        f = fidelity(ref_val, ref_val_emb, got, emb, y_val)
        batched = TriageClassifier.from_folder(d, variant="int8", intra_op_threads=1, deterministic=False)
        f["batch_diff"] = float(np.abs(batched.predict_logits(val_texts) - got).max())
        f["test_acc"] = float((clf.predict_logits(test_texts).argmax(1) == y_test).mean())
        f["mb"] = (d / "model.int8.onnx").stat().st_size / 2**20
        f["quantise_s"] = seconds
        out["variants"][name] = f
        print(f"| {name} | {f['agree']:.1%} | {f['max_err']:.3f} / {f['mean_err']:.3f} | "
              f"{f.get('emb_cos_min', float('nan')):.4f} | {f['acc']:.1%} | {f['batch_diff']:.2e} | {f['mb']:.1f} | "
              f"{f['test_acc']:.1%} |", flush=True)

    if args.sensitivity:
        nodes = onnx_export.quantizable_nodes(model / "model.onnx")
        print(f"\n### per-node sensitivity (dynamic int8; {len(nodes)} quantisable nodes; validation n={len(val_texts)})\n")
        print("| node | only this node: agreement / max / mean err | all but this node: agreement / max / mean err |")
        print("|---|---:|---:|")
        sd = work / "sensitivity"
        for node in nodes:
            row = {}
            names = [node, f"{node}_MatMul"] if node.endswith("Gemm") else [node]  # the quantiser renames a Gemm
            for kind, kwargs in (("only", {"nodes_to_quantize": names}), ("all_but", {"nodes_to_exclude": names})):
                d = variant_dir(model, sd, kind)
                quantize_dynamic(str(model / "model.onnx"), str(d / "model.int8.onnx"), weight_type=QuantType.QInt8,
                                 **kwargs)
                got, emb = TriageClassifier.from_folder(d, variant="int8", intra_op_threads=1).predict_outputs(val_texts)
                row[kind] = fidelity(ref_val, ref_val_emb, got, emb, y_val)
            out["sensitivity"][node] = row
            o, a = row["only"], row["all_but"]
            print(f"| {node} | {o['agree']:.1%} / {o['max_err']:.3f} / {o['mean_err']:.4f} | "
                  f"{a['agree']:.1%} / {a['max_err']:.3f} / {a['mean_err']:.4f} |", flush=True)

    if args.speed:
        single, batch32 = val_texts[: args.n_single], val_texts[: args.n]
        engines = {"fp32": TriageClassifier.from_folder(model, variant="fp32", intra_op_threads=1).predict_logits}
        for name, d in dirs.items():
            engines[name] = TriageClassifier.from_folder(d, variant="int8", intra_op_threads=1).predict_logits
            if out["variants"][name]["batch_diff"] < 1e-3:  # batch-invariant: one padded call per batch is safe
                engines[f"{name}, padded"] = TriageClassifier.from_folder(
                    d, variant="int8", intra_op_threads=1, deterministic=False).predict_logits
        for fn in engines.values():
            fn(single[:8])
        speed = {name: {"b1": [], "b32": []} for name in engines}
        print(f"\nload before timing: {loadavg()}")
        for _ in range(args.rounds):
            for name, fn in engines.items():
                speed[name]["b1"].append(timed(fn, single, 1))
                speed[name]["b32"].append(timed(fn, batch32, 32))
        print(f"load after timing: {loadavg()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
        print(f"\n| engine (1 thread) | b1 best | b1 median | b32 best | b32 median | b1 vs dynamic | b32 vs dynamic |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        base = speed.get("dynamic") or speed["fp32"]
        out["speed"] = {}
        for name, s in speed.items():
            b1, b32 = max(s["b1"]), max(s["b32"])
            out["speed"][name] = {"b1_best": b1, "b1_median": statistics.median(s["b1"]), "b32_best": b32,
                                  "b32_median": statistics.median(s["b32"])}
            print(f"| {name} | {b1:.0f} | {statistics.median(s['b1']):.0f} | {b32:.0f} | "
                  f"{statistics.median(s['b32']):.0f} | {b1 / max(base['b1']):.2f}x | {b32 / max(base['b32']):.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload at the end: {loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
