"""Cost of issue 11's negation / history scopes in the urgency decision, side by side in one run.

    flock /work/bench.lock .venv/bin/python benchmarks/negation_scopes_cost.py --model <artifact folder> [--rounds 3]

The service's per-text decision (encoder pass, red flags, ``respect_mentions``, ``decide_urgency``) on the
validation trap set and blind v1 + v2 (texts only; labels are not read), interleaved rounds of (a) the re-score
without the red-flag matcher's blocked mentions only (as before), (b) with the NegEx-style scopes. Prints the CPU,
uptime before and after, how many texts were re-scored (a second encoder pass) in each variant, ms per text (best of
rounds) and the ratio; and the cost of ``context_scopes`` alone per text.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from evaluation.cpu_info import describe_cpu
from evaluation.urgency_eval import pipeline
from training import urgency_train
from triage.classifier import TriageClassifier
from triage.mentions import context_scopes
from triage.redflags import RedFlagMatcher


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    rows = [{"text": r["text"]} for r in urgency_train.validation_trap_rows() + urgency_train.blind_rows()
            + urgency_train.blind_rows_v2()]
    print(describe_cpu())
    print("uptime before:", os.getloadavg())
    clf = TriageClassifier.from_folder(args.model, intra_op_threads=1)
    matcher = RedFlagMatcher()
    variants = {"blocked mentions only (before)": False, "with negation scopes": True}
    best = {name: float("inf") for name in variants}
    rescored = {}
    clf.predict([r["text"] for r in rows[:5]])
    for _ in range(args.rounds):
        for name, scopes in variants.items():
            decide = pipeline(matcher, clf, scopes=scopes)
            t0 = time.perf_counter()
            for row in rows:
                decide(row)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(rows) * 1000)
            rescored[name] = decide.rescored
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for row in rows:
            context_scopes(row["text"])
    scope_ms = (time.perf_counter() - t0) / (len(rows) * args.rounds) * 1000
    base = best["blocked mentions only (before)"]
    for name in variants:
        print(f"{name}: {best[name]:.2f} ms/text ({best[name] / base:.3f}x), re-scored {rescored[name]} of {len(rows)}")
    print(f"context_scopes alone: {scope_ms:.3f} ms/text")
    print("uptime after:", os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
