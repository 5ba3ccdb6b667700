"""Added cost of the nearest-exemplar blend (issue 12) per text: the same artefact served with and without it.

    flock /work/bench.lock .venv/bin/python benchmarks/exemplar_blend_cost.py --model var/runs/exemplars/<run>/model

Both variants run the same int8 encoder pass (logits + pooled embedding); the blend adds a cosine look-up over the
exemplar bank and a log-linear mix. Texts: the external test rows of the artefact's split (seed from meta.json).
Figures: ms per text, ``predict`` one call per text (batch 1) and one call of 32 texts, best and median of
``--rounds`` interleaved rounds, plus the numpy blend alone on precomputed embeddings. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    from evaluation.cpu_info import describe_cpu
    from serving.settings import get_settings
    from training.triage_data import load_examples, make_splits
    from triage.classifier import TriageClassifier
    from triage.exemplars import log_softmax

    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, required=True, help="artefact folder with center_exemplars.json")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=64, help="texts timed one per call")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    meta = json.loads((args.model / "meta.json").read_text())
    df = make_splits(load_examples(get_settings()), int(meta.get("seed", 13)))
    texts = list(df[(df["split"] == "test") & (df["origin"] == "external")]["text"])[: max(args.n, 32)]
    engines = {name: TriageClassifier.from_folder(args.model, variant="int8", intra_op_threads=args.threads,
                                                  blend=use) for name, use in (("head", False), ("blend", True))}
    for clf in engines.values():
        clf.predict(texts[:4])  # warm-up
    times: dict[str, list[float]] = {f"{n} {m}": [] for n in engines for m in ("b1", "b32")}
    for _ in range(args.rounds):
        for name, clf in engines.items():
            t = time.perf_counter()
            for text in texts[: args.n]:
                clf.predict([text])
            times[f"{name} b1"].append((time.perf_counter() - t) / args.n * 1000)
            t = time.perf_counter()
            clf.predict(texts[:32])
            times[f"{name} b32"].append((time.perf_counter() - t) / 32 * 1000)
    clf = engines["blend"]
    logits, emb = clf.predict_outputs(texts[:32])
    head = log_softmax(logits / clf.temperature)
    numpy_ms = []
    for _ in range(20):
        t = time.perf_counter()
        for i in range(32):
            clf.exemplars.probabilities(head[i:i + 1], emb[i:i + 1])
        numpy_ms.append((time.perf_counter() - t) / 32 * 1000)
    import dataclasses

    knn_ms = []  # the served full-bank look-up with k = 3 (precomputed rows), whatever k the sidecar chose
    ex = dataclasses.replace(clf.exemplars, k=3)
    for _ in range(20):
        t = time.perf_counter()
        for i in range(32):
            ex.scores(emb[i:i + 1])
        knn_ms.append((time.perf_counter() - t) / 32 * 1000)
    print(f"CPU: {describe_cpu()}; load average {os.getloadavg()}")
    print(f"bank: {len(clf.exemplars.centers)} exemplars x {clf.exemplars.embeddings.shape[1]} dims, k={clf.exemplars.k}")
    print("| variant | ms/text batch 1 (best / median) | ms/text batch 32 (best / median) |")
    print("|---|---:|---:|")
    for name in engines:
        b1, b32 = times[f"{name} b1"], times[f"{name} b32"]
        print(f"| {name} | {min(b1):.2f} / {np.median(b1):.2f} | {min(b32):.2f} / {np.median(b32):.2f} |")
    r1 = np.median(times["blend b1"]) / np.median(times["head b1"])
    r32 = np.median(times["blend b32"]) / np.median(times["head b32"])
    print(f"blend / head (medians): batch 1 {r1:.3f}x, batch 32 {r32:.3f}x; numpy blend alone "
          f"{min(numpy_ms):.3f} ms/text (best of 20); full-bank k=3 look-up {min(knn_ms):.3f} ms/text")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
