"""Routing measured on labelled complaints: top-1 / top-3, hand-offs and accuracy when answering (selective
accuracy), overall, per center and per style (the blind routing set, ``datasets/triage/blind/ROUTING_README.md``).

``read_rows(path)`` reads such a CSV (``text``, ``center``, ``style``); ``routing_report(classifier, rows)`` scores it
with any object whose ``predict(texts)`` returns predictions with ranked ``centers`` and ``abstained``."""

from __future__ import annotations

import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def routing_report(classifier, rows: list[dict]) -> dict:
    """Top-1 / top-3, hand-off (abstention) rate and accuracy when answering, overall, per center and per style."""
    preds = classifier.predict([r["text"] for r in rows])

    def block(items) -> dict:
        n = len(items)
        if not n:
            return {"n": 0}
        top1 = sum(p.centers[0][0] == r["center"] for r, p in items)
        top3 = sum(r["center"] in [c for c, _ in p.centers[:3]] for r, p in items)
        answered = [(r, p) for r, p in items if not p.abstained]
        right = sum(p.centers[0][0] == r["center"] for r, p in answered)
        return {"n": n, "top1": top1 / n, "top3": top3 / n, "handed_off": 1 - len(answered) / n,
                "selective_accuracy": right / len(answered) if answered else None}

    pairs = list(zip(rows, preds))
    out = {"overall": block(pairs), "by_center": {}, "by_style": {}, "confusions": {}}
    for key, field in (("by_center", "center"), ("by_style", "style")):
        for value in sorted({r[field] for r in rows}):
            out[key][value] = block([(r, p) for r, p in pairs if r[field] == value])
    for r, p in pairs:
        if p.centers[0][0] != r["center"]:
            k = f"{r['center']} -> {p.centers[0][0]}"
            out["confusions"][k] = out["confusions"].get(k, 0) + 1
    return out
