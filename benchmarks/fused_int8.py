"""Fused-then-quantised int8 against today's int8 of one triage artefact: fidelity to fp32, accuracy, texts/s.

    OPENBLAS_NUM_THREADS=1 flock /work/bench.lock .venv/bin/python benchmarks/fused_int8.py \\
        --model var/runs/triage/<run>/model [--rounds 5] [--json out.json]

Issue 16: the export quantises the traced graph operator by operator (MatMulInteger per projection, the attention
arithmetic in fp32 between them).  onnxruntime's offline transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")``) fuses each layer's attention into one
``Attention`` node (Q/K/V in one MatMul), the embeddings into ``EmbedLayerNormalization``, residual + LayerNorm
into ``SkipLayerNormalization``, bias + GELU into ``BiasGelu``; the dynamic quantiser then gives ``QAttention`` and
``QEmbedLayerNormalization``.  This compares, on the artefact's own weights:

- ``fp32``: the artefact's ``model.onnx`` (the reference of every error column);
- ``int8``: today's export, ``quantize_int8(model.onnx, scheme)``, and ``int8, A/A copy``, the same file in its
  own sessions (the run's noise: two identical engines should give 1.00x);
- ``int8, eager export``: the same weights re-exported with eager attention (the graph the optimizer recognises;
  ``export_onnx(eager=True)``) and quantised the same way, unfused: separates the export change from the fusion;
- ``fused fp32`` and ``fused int8``: that eager graph through ``fuse_transformer``, then the same scheme.

The weights are read back from ``model.onnx`` (``training.distill.state_dict_from_onnx``, exact), so any artefact
folder works, and the rebuilt model's parity with ``model.onnx`` is printed.  Texts: the run's external test rows
(``report/split.csv`` beside the folder) for accuracy; parity columns also use external validation rows, up to
``--n-parity`` texts.  Every variant runs through ``TriageClassifier`` as the service runs it: int8 one text per call
(deterministic mode; with 2 threads, two single-threaded sessions take the texts of a call side by side), fp32 in
padded batches.  Speed: texts/s at batch 1 (one call per test text, in file order: realistic complaint lengths) and
batch 32 (length-sorted calls of 32), interleaved rounds with the engine order rotated each round, intra-op threads 1
and 2; ratios are per round against ``int8`` at the same threads (median and range).  Not a test: prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from evaluation.cpu_info import describe_cpu  # noqa: E402
from training import onnx_export  # noqa: E402
from training.distill import (  # noqa: E402
    load_state,
    load_tokenizer,
    state_dict_from_onnx,
    teacher_layer_count,
)
from training.triage_train import TrainOptions, new_model  # noqa: E402
from triage.classifier import VARIANTS as FILES  # noqa: E402
from triage.classifier import TriageClassifier  # noqa: E402

LINK = ("tokenizer", "labels.json", "meta.json")
BASE = "int8"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def variant_dir(model: Path, root: Path, name: str) -> Path:
    d = root / name.replace(" ", "_").replace(",", "")
    d.mkdir(parents=True, exist_ok=True)
    for item in LINK:
        if not (d / item).exists():
            (d / item).symlink_to((model / item).resolve())
    return d


def outputs_of(path: Path) -> list[tuple[str, list]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in graph.output]


def op_counts(path: Path, ops=("MatMulInteger", "QAttention", "QEmbedLayerNormalization", "Attention",
                                "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu", "MatMul")) -> dict:
    import onnx

    nodes = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    return {op: nodes.count(op) for op in ops if op in nodes}


def fidelity(ref, ref_emb, got, emb, y_test, n_test) -> dict:
    err = np.abs(ref - got)
    cos = (ref_emb * emb).sum(1) / (np.linalg.norm(ref_emb, axis=1) * np.linalg.norm(emb, axis=1))
    return {"agree": float((ref.argmax(1) == got.argmax(1)).mean()), "max_err": float(err.max()),
            "mean_err": float(err.mean()), "emb_cos_min": float(cos.min()), "emb_cos_mean": float(cos.mean()),
            "test_acc": float((got[:n_test].argmax(1) == y_test).mean())}


def timed(fn, texts, batch) -> tuple[float, float]:
    """(texts per wall-clock second, texts per CPU-second of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch):
        fn(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - start), len(texts) / max(time.process_time() - cpu, 1e-9)


def timed_each(fn, texts) -> list[float]:
    """Seconds of each one-text call (the per-text minimum over rounds is the least disturbed by other load)."""
    out = []
    for text in texts:
        start = time.perf_counter()
        fn([text])
        out.append(time.perf_counter() - start)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="artefact folder with model.onnx (fp32), tokenizer, meta")
    p.add_argument("--split", type=Path, default=None, help="split.csv (default: <model>/../report/split.csv)")
    p.add_argument("--scheme", default=TrainOptions().int8_scheme, choices=sorted(onnx_export.QUANT_SCHEMES))
    p.add_argument("--heads", type=int, default=12, help="attention heads (all-MiniLM-L6-v2: 12)")
    p.add_argument("--hidden", type=int, default=384, help="hidden size (all-MiniLM-L6-v2: 384)")
    p.add_argument("--n-parity", type=int, default=400, help="texts of the parity columns (test, then validation)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    p.add_argument("--n-single", type=int, default=64, help="texts timed one per call")
    p.add_argument("--n", type=int, default=128, help="texts timed in calls of 32")
    p.add_argument("--no-fp32-speed", action="store_true", help="time the int8 variants only")
    p.add_argument("--work", type=Path, default=None, help="keep the variant graphs here (default: temporary)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    print(f"uptime before: {uptime()}")
    print(f"CPU: {describe_cpu()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    model = args.model.resolve()
    meta = json.loads((model / "meta.json").read_text())
    labels = json.loads((model / "labels.json").read_text())
    max_length = int(meta["max_length"])
    split = pd.read_csv(args.split or model.parent / "report" / "split.csv")
    external = split[(split["origin"] == "external") & split["center"].isin(labels)]
    test, val = external[external["split"] == "test"], external[external["split"] == "val"]
    index = {c: i for i, c in enumerate(labels)}
    test_texts, y_test = list(test["text"]), test["center"].map(index).to_numpy()
    texts = (test_texts + list(val["text"]))[: max(args.n_parity, len(test_texts))]
    work = args.work or Path(tempfile.mkdtemp(prefix="fused-int8-"))
    work.mkdir(parents=True, exist_ok=True)

    # the artefact's weights, re-exported with eager attention (exact read-back; parity printed below)
    state = state_dict_from_onnx(model / "model.onnx")
    layers = teacher_layer_count(state)
    torch_model = new_model(labels, layers)
    load_state(torch_model, state, str(model / "model.onnx"))
    torch_model.eval()
    tokenizer = load_tokenizer(model)
    print(f"model {model} ({layers} layers, {len(labels)} labels, max_length {max_length}); scheme {args.scheme}; "
          f"parity texts n={len(texts)} (external test {len(test_texts)} + validation), accuracy on the test rows")

    dirs, built = {}, {}
    d = dirs["fp32"] = variant_dir(model, work, "fp32")
    shutil.copy(model / "model.onnx", d / FILES["fp32"])
    d = dirs["int8"] = variant_dir(model, work, "int8")
    started = time.time()
    onnx_export.quantize_int8(model / "model.onnx", d / FILES["int8"], args.scheme)
    built["int8"] = {"seconds": time.time() - started}
    # A/A control: the same file in its own sessions (how far two identical engines drift apart in this run)
    d = dirs["int8, A/A copy"] = variant_dir(model, work, "int8, A/A copy")
    shutil.copy(dirs["int8"] / FILES["int8"], d / FILES["int8"])
    eager = onnx_export.export_onnx(torch_model, tokenizer, work / "eager.onnx", max_length, eager=True)
    d = dirs["int8, eager export"] = variant_dir(model, work, "int8, eager export")
    started = time.time()
    onnx_export.quantize_int8(eager, d / FILES["int8"], args.scheme)
    built["int8, eager export"] = {"seconds": time.time() - started}
    d = dirs["fused fp32"] = variant_dir(model, work, "fused fp32")
    started = time.time()
    stats = onnx_export.fuse_transformer(eager, d / FILES["fp32"], args.heads, args.hidden)
    built["fused fp32"] = {"seconds": time.time() - started, "fused": stats}
    d = dirs["fused int8"] = variant_dir(model, work, "fused int8")
    started = time.time()
    onnx_export.quantize_int8(dirs["fused fp32"] / FILES["fp32"], d / FILES["int8"], args.scheme)
    built["fused int8"] = {"seconds": time.time() - started + built["fused fp32"]["seconds"]}
    print(f"fused operators: {stats}")
    # which fused operators pay in int8 on this CPU: keep the fused attention / embeddings in fp32
    for name, ops in (("fused int8, fp32 attention", ("MatMul", "Gather", "EmbedLayerNormalization")),
                      ("fused int8, fp32 embeddings", ("MatMul", "Attention", "Gather"))):
        d = dirs[name] = variant_dir(model, work, name)
        onnx_export.quantize_int8(dirs["fused fp32"] / FILES["fp32"], d / FILES["int8"], args.scheme, op_types=ops)

    def kind(name: str) -> str:
        return "int8" if "int8" in name else "fp32"

    ref_outputs = outputs_of(model / "model.onnx")
    ref, ref_emb = TriageClassifier.from_folder(dirs["fp32"], variant="fp32", intra_op_threads=1).predict_outputs(texts)
    d = variant_dir(model, work, "eager fp32")
    shutil.copy(eager, d / FILES["fp32"])
    eager_ref = TriageClassifier.from_folder(d, variant="fp32", intra_op_threads=1)
    print(f"eager re-export vs model.onnx: max |logit diff| {np.abs(eager_ref.predict_logits(texts) - ref).max():.2e}")
    out = {"cpu": describe_cpu(), "model": str(model), "layers": layers, "scheme": args.scheme, "n_parity": len(texts),
           "n_test": len(test_texts), "fused": stats, "variants": {}, "uptime_before": uptime()}
    print("\n| variant | outputs kept | top-1 agreement with fp32 | max / mean abs logit error | "
          "min / mean embedding cosine | test accuracy | MB | operators |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, d in dirs.items():
        path = d / FILES[kind(name)]
        clf = TriageClassifier.from_folder(d, variant=kind(name), intra_op_threads=1)
        got, emb = clf.predict_outputs(texts)
        f = fidelity(ref, ref_emb, got, emb, y_test, len(test_texts))
        f["outputs_kept"] = outputs_of(path) == ref_outputs
        f["mb"] = path.stat().st_size / 2**20
        f["ops"] = op_counts(path)
        f.update(built.get(name, {}))
        out["variants"][name] = f
        print(f"| {name} | {'yes' if f['outputs_kept'] else 'NO: ' + str(outputs_of(path))} | {f['agree']:.1%} | "
              f"{f['max_err']:.3f} / {f['mean_err']:.4f} | {f['emb_cos_min']:.4f} / {f['emb_cos_mean']:.5f} | "
              f"{f['test_acc']:.1%} | {f['mb']:.1f} | {f['ops']} |", flush=True)

    single = test_texts[: args.n_single]
    batch32 = sorted(texts[: args.n], key=len)
    names = [n for n in dirs if not (args.no_fp32_speed and kind(n) == "fp32")]
    engines = {}
    for threads in args.threads:
        for name in names:
            engines[(name, threads)] = TriageClassifier.from_folder(dirs[name], variant=kind(name),
                                                                    intra_op_threads=threads).predict_logits
    for fn in engines.values():
        fn(single[:8])
        fn(batch32[:32])
    keys = list(engines)
    speed = {k: {"b1": [], "b32": [], "b1_cpu": [], "b32_cpu": []} for k in keys}
    each = {k: [] for k in keys}
    print(f"\nuptime before timing: {uptime()}")
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            for b, batch, items in (("b1", 1, single), ("b32", 32, batch32)):
                wall, cpu = timed(engines[k], items, batch)
                speed[k][b].append(wall)
                speed[k][f"{b}_cpu"].append(cpu)
            each[k].append(timed_each(engines[k], single))
    print(f"uptime after timing: {uptime()}")
    out["uptime_after"] = uptime()
    print(f"\n{args.rounds} interleaved rounds; b1: {len(single)} test texts one per call; b32: {len(batch32)} texts "
          f"length-sorted in calls of 32; ratio = per-round texts/s / {BASE!r} at the same threads (median [min-max]); "
          "'CPU' columns: texts per CPU-second of this process (what a saturated server's throughput follows; less "
          "disturbed than wall time when other processes share the cores)")
    print("| variant | threads | b1 texts/s median [min-max] | b1 vs int8 | b32 texts/s median [min-max] | b32 vs int8 "
          "| b1 CPU vs int8 | b32 CPU vs int8 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    out["speed"] = []
    for (name, threads), s in speed.items():
        row = {"variant": name, "threads": threads}
        cells = []
        for b in ("b1", "b32", "b1_cpu", "b32_cpu"):
            v = s[b]
            ratios = [x / y for x, y in zip(v, speed[(BASE, threads)][b])]
            row[b] = {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v,
                      "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
            if not b.endswith("_cpu"):
                cells.append(f"{row[b]['median']:.0f} [{min(v):.0f}-{max(v):.0f}]")
            cells.append(f"{row[b]['ratio_median']:.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
        out["speed"].append(row)
        print(f"| {name} | {threads} | " + " | ".join(cells) + " |")
    # best case per text: the minimum over rounds of each text's one-call time, summed over the texts
    print(f"\nbest case at batch 1: per text, the fastest of {args.rounds} calls (one per round), summed over "
          f"{len(single)} texts; ratio: per-text minima / {BASE!r}'s at the same threads (median [10th-90th pct] "
          "over texts)")
    print("| variant | threads | ms per text (sum of minima / n) | vs int8 (texts/s) | per-text ratio median [p10-p90] |")
    print("|---|---:|---:|---:|---:|")
    out["best_case_b1"] = []
    for (name, threads), runs in each.items():
        best = np.min(np.asarray(runs), axis=0)
        base = np.min(np.asarray(each[(BASE, threads)]), axis=0)
        ratio = base / best
        row = {"variant": name, "threads": threads, "ms_per_text": float(best.mean() * 1e3),
               "vs_int8": float(base.sum() / best.sum()), "per_text_ratio_median": float(np.median(ratio)),
               "p10": float(np.percentile(ratio, 10)), "p90": float(np.percentile(ratio, 90))}
        out["best_case_b1"].append(row)
        print(f"| {name} | {threads} | {row['ms_per_text']:.2f} | {row['vs_int8']:.2f}x | "
              f"{row['per_text_ratio_median']:.2f}x [{row['p10']:.2f}-{row['p90']:.2f}] |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nuptime at the end: {uptime()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
