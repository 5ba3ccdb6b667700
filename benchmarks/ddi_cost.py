"""Benchmark (not a test): what the ddi-severity model costs per 5-item prescription, against rules only.

    .venv/bin/python benchmarks/ddi_cost.py [--model models:/ddi-severity@champion | PATH] [--n 2000]

In one run, same process, same KB, same prescriptions: ``Checker`` with ``ddi_predictor=False``
(rules only) vs ``Checker`` with the loaded ``DDIPredictor``.  A 5-item prescription has 10 drug pairs;
only the pairs the KB has no entry for reach the model, so the script also prints how many pairs the
model actually scored per check, and times ``predict_pairs`` alone on 10 pairs (one onnxruntime call),
and the model's load time.  Prints a side-by-side table with the ratio; no assertion.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRESCRIPTIONS = {
    # common cardiovascular set: most pairs are documented in the KB (DDInter / curated)
    "cardio (mostly documented pairs)": ["amlodipine", "metformin", "atorvastatin", "aspirin", "omeprazole"],
    # none of the 10 pairs is listed in DDInter (checked with training.ddi_data.load_pairs): all reach the model
    "no documented pair": ["amoxicillin", "escitalopram", "docusate", "melatonin", "cyanocobalamin"],
}
TEN_PAIRS = [("warfarin", "fluconazole"), ("simvastatin", "clarithromycin"), ("amoxicillin", "acetaminophen"),
             ("loratadine", "famotidine"), ("metformin", "omeprazole"), ("sertraline", "tramadol"),
             ("lisinopril", "spironolactone"), ("digoxin", "amiodarone"), ("cetirizine", "ibuprofen"),
             ("levothyroxine", "calcium carbonate")]


class CountingPredictor:
    """Wraps the predictor to count how many pairs the checker sends to it."""

    def __init__(self, inner):
        self.inner = inner
        self.version = inner.version
        self.pairs = 0
        self.calls = 0

    def knows(self, ingredient):
        return self.inner.knows(ingredient)

    def predict_pairs(self, pairs):
        self.calls += 1
        self.pairs += len(pairs)
        return self.inner.predict_pairs(pairs)


def timed(fn, n: int) -> float:
    for _ in range(min(50, n)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="registry URI or folder (default: settings.ddi_model_uri)")
    ap.add_argument("--kb", type=Path, default=None)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args(argv)

    from serving.components import load_ddi_predictor
    from serving.settings import get_settings

    settings = get_settings()
    uri = args.model or settings.ddi_model_uri
    t0 = time.perf_counter()
    predictor = load_ddi_predictor(uri, settings)
    load_s = time.perf_counter() - t0
    print(f"load average (shared 2-core machine): {os.getloadavg()[0]:.2f}")
    print(f"model {uri} version {predictor.version}: loaded in {load_s * 1000:.0f} ms "
          f"({len(predictor.names)} drug rows, {predictor.context.n_features} features)\n")

    direct = timed(lambda: predictor.predict_pairs(TEN_PAIRS), args.n)
    single = timed(lambda: predictor.predict_pairs(TEN_PAIRS[:1]), args.n)
    print("## predict_pairs alone\n")
    print("| call | us/call |\n|---|---|")
    print(f"| 10 pairs, one onnxruntime call | {direct * 1e6:.0f} |")
    print(f"| 1 pair | {single * 1e6:.0f} |\n")

    try:
        from prescription_check import Checker, Prescription
        from prescription_check.kb import KnowledgeBase
    except ImportError as exc:
        print(f"Checker not available ({exc}): only predict_pairs measured")
        return 0
    path = args.kb or settings.resolved_kb_path()
    if not path.exists():
        from training.kb_build import ensure_kb

        ensure_kb(settings.model_copy(update={"kb_path": path}))
    kb = KnowledgeBase.load(path)
    rules = Checker(kb)
    counting = CountingPredictor(predictor)
    with_model = Checker(kb, ddi_predictor=counting)
    rules.warm()
    print(f"## Checker per 5-item prescription (10 pairs), KB {kb.version}\n")
    print("| prescription | rules only us | rules + model us | extra us | ratio | pairs scored by model / check |")
    print("|---|---|---|---|---|---|")
    for name, drugs in PRESCRIPTIONS.items():
        rx = Prescription.model_validate({"patient": {"age_years": 50},
                                          "items": [{"drug": d, "dose": 1, "unit": "mg"} for d in drugs]})
        r = timed(lambda: rules.check(rx), args.n)
        counting.pairs = counting.calls = 0
        m = timed(lambda: with_model.check(rx), args.n)
        per_check = counting.pairs / max(1, args.n + min(50, args.n))
        print(f"| {name} | {r * 1e6:.0f} | {m * 1e6:.0f} | {(m - r) * 1e6:.0f} | {m / r:.2f}x | {per_check:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
