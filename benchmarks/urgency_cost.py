"""Cost of the urgency head in the triage model's encoder pass, side by side in one run.

    .venv/bin/python benchmarks/urgency_cost.py --model var/runs/triage/<run>/model [--rounds 3]

Three variants of the same int8 artifact, each predicting the blind urgency set text by text (the service's
per-text mode): (a) the graph with only the center logits (as before this change), (b) the graph that also
returns the pooled embedding, no head, (c) embedding + urgency head + closest cited presentation. Prints the CPU,
ms per text (best of interleaved rounds) and the ratios.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import onnx

from evaluation.cpu_info import describe_cpu
from triage.classifier import URGENCY_HEAD_FILE, TriageClassifier

ROOT = Path(__file__).resolve().parent.parent


def variant(src: Path, dest: Path, *, embedding: bool, head: bool) -> Path:
    shutil.copytree(src, dest)
    if not head:
        (dest / URGENCY_HEAD_FILE).unlink(missing_ok=True)
    if not embedding:
        for name in ("model.int8.onnx", "model.onnx"):
            graph = onnx.load(str(dest / name))
            keep = [o for o in graph.graph.output if o.name == "logits"]
            del graph.graph.output[:]
            graph.graph.output.extend(keep)
            onnx.save(graph, str(dest / name))
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with (ROOT / "datasets/triage/blind/urgency_blind_v1.csv").open(newline="", encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    print(describe_cpu())
    tmp = Path(tempfile.mkdtemp(prefix="urgency-cost-"))
    models = {
        "logits only (before)": variant(args.model, tmp / "a", embedding=False, head=False),
        "logits + embedding": variant(args.model, tmp / "b", embedding=True, head=False),
        "logits + embedding + urgency head": variant(args.model, tmp / "c", embedding=True, head=True),
    }
    loaded = {name: TriageClassifier.from_folder(path, intra_op_threads=1) for name, path in models.items()}
    for clf in loaded.values():
        clf.predict(texts[:5])
    best = {name: float("inf") for name in loaded}
    for _ in range(args.rounds):
        for name, clf in loaded.items():
            t0 = time.perf_counter()
            for text in texts:
                clf.predict([text])
            best[name] = min(best[name], (time.perf_counter() - t0) / len(texts) * 1000)
    base = best["logits only (before)"]
    print(f"\n{len(texts)} texts, one per call, 1 thread, best of {args.rounds} interleaved rounds\n")
    print("| variant | ms per text | vs before |\n|---|---:|---:|")
    for name, ms in best.items():
        print(f"| {name} | {ms:.2f} | {ms / base:.2f}x |")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
