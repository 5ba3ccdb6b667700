"""Routing with and without the center-statement rows (issue 12), measured cheaply and deterministically with the
project's reference TF-IDF + logistic regression (``evaluation.triage_eval.tfidf_baseline``).

    RXT_DATA_DIR=... python benchmarks/center_statements_tfidf.py [--out result.json]

Both models train on the seed-13 training split (``training.triage_data``); "after" adds
``training.center_statements.center_rows`` (train split only, nothing near a validation/test text).  Top-1, top-3 and
per-center recall on the in-source external test rows and on the blind routing sets.  The blind sets are
evaluation-only: this script reads them to score, never to choose anything; say which run of a blind set a figure
is (their first runs are recorded in docs/triage-model.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import triage_eval as ev
from serving.settings import PROJECT_ROOT
from training import center_statements as cs
from training.triage_data import load_examples, make_splits
from triage.taxonomy import load_taxonomy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args(argv)
    labels = load_taxonomy().model_labels()
    idx = {c: i for i, c in enumerate(labels)}
    df = make_splits(load_examples(), args.seed)
    train = df[df["split"] == "train"]
    test = df[(df["split"] == "test") & (df["origin"] == "external")]
    extra = cs.center_rows(list(df.loc[df["split"] != "train", "text"]), seed=args.seed)
    sets = {"in_source_test": (list(test["text"]), list(test["center"]))}
    for path in sorted((PROJECT_ROOT / "datasets" / "triage" / "blind").glob("routing_blind_v*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        sets[path.stem] = (list(frame["text"]), list(frame["center"]))
    result: dict = {"n_center_rows": int(len(extra))}
    for name, tr in (("before", train), ("after", pd.concat([train, extra]))):
        result[name] = {}
        for sname, (x, y) in sets.items():
            yy = np.array([idx[c] for c in y])
            probs = ev.tfidf_baseline(list(tr["text"]), tr["center"].map(idx).to_numpy(), x, len(labels))
            pred, top3 = probs.argmax(1), np.argsort(-probs, 1)[:, :3]
            result[name][sname] = {
                "n": int(len(yy)), "top1": float((pred == yy).mean()),
                "top3": float(np.mean([yy[i] in top3[i] for i in range(len(yy))])),
                "recall": {labels[c]: float((pred[yy == c] == c).mean()) for c in sorted(set(yy))}}
    for sname in sets:
        b, a = result["before"][sname], result["after"][sname]
        print(f"{sname}: n={b['n']} top-1 {b['top1']:.1%} -> {a['top1']:.1%}, top-3 {b['top3']:.1%} -> {a['top3']:.1%}")
        for c in b["recall"]:
            if abs(a["recall"][c] - b["recall"][c]) > 1e-9:
                print(f"    {c:<20} recall {b['recall'][c]:.0%} -> {a['recall'][c]:.0%}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
