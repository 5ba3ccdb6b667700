"""Distilled student vs its teacher, side by side in one run: speed, accuracy, calibration, hand-offs, blind sets.

    .venv/bin/python benchmarks/student_vs_teacher.py --student models:/triage-classifier/2   # its recorded teacher
    .venv/bin/python benchmarks/student_vs_teacher.py --teacher DIR --student DIR --rounds 5

Both models are loaded the way the service loads them (``serving.components.load_triage_classifier``: int8, one
text per call on single-threaded sessions, one per intra-op thread, no spinning).  Speed is end to end per call
(normalise + tokenise + forward + softmax + urgency head), as texts/s at batch 1 (``--n-single`` calls of one
text) and batch 32 (the ``--n`` test texts in calls of 32), best and median of ``--rounds`` interleaved rounds
(the models alternate, so machine load hits both alike).  "one padded call per batch" is the non-deterministic
mode (``deterministic=False``), shown for reference.

Quality, on the same rows for both:
- in-source: the held-out external test rows of the teacher's split (the seed in meta.json, as
  ``training.lifecycle_eval`` does): accuracy, macro-F1, top-3, ECE, selective accuracy and coverage at each
  model's own threshold, top-1 agreement;
- cross-source: not re-measurable from a served model (it needs models trained on one source only): the figures
  the distillation run measured (a fresh teacher and a student distilled from it per direction) are printed
  from the student's meta.json, labelled as such;
- blind sets (evaluation only, never trained on): ``datasets/triage/blind/routing_blind_v1.csv`` (top-1, top-3,
  handed off, accuracy when answering) and ``urgency_blind_v1.csv`` (the service's urgency decision: red flags +
  the model's urgency head + rules).
Goal (issue 16): student >= 2.5x the teacher's texts/s at <= 1 point accuracy loss in-source and cross-source.
Not a test: it prints figures and ratios (docs/benchmarks.md records them).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def newest_student() -> str:
    runs = sorted((ROOT / "var" / "runs" / "distill").glob("*/model/meta.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit("no distilled student under var/runs/distill; run `python -m training distill` or pass "
                         "--student")
    return str(runs[-1].parent)


def recorded_teacher(meta: dict) -> str:
    """The teacher a distilled artefact names: its registry version (an alias may have moved since), else its URI."""
    d = meta.get("distillation") or {}
    if d.get("teacher_version") and str(d.get("teacher_uri", "")).startswith("models:/"):
        name = str(d["teacher_uri"])[len("models:/"):].split("@")[0].rsplit("/", 1)[0]
        return f"models:/{name}/{d['teacher_version']}"
    if d.get("teacher_uri"):
        return str(d["teacher_uri"])
    raise SystemExit("the student's meta.json names no teacher; pass --teacher")


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def timed(fn, texts: list[str], batch: int) -> float:
    """texts/s of fn over texts in calls of ``batch``."""
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        fn(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - start)


def quality(clf, texts: list[str], y: np.ndarray) -> dict:
    from evaluation.triage_eval import classification_metrics, expected_calibration_error, selective

    probs = clf.predict_proba(texts)
    m = classification_metrics(y, probs, clf.labels)
    sel = selective(y, probs, clf.threshold)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "top3": m["top3_accuracy"],
            "ece": float(expected_calibration_error(y, probs)), "selective_accuracy": sel["selective_accuracy"],
            "coverage": sel["coverage"], "pred": probs.argmax(1)}


def paired_bootstrap(y: np.ndarray, teacher_pred: np.ndarray, student_pred: np.ndarray, n: int = 10000,
                     seed: int = 0) -> dict:
    """Student minus teacher accuracy (points) with a 95% percentile interval: rows resampled with replacement,
    both models' answers on a row kept together (paired)."""
    t_ok = (teacher_pred == y).astype(float)
    s_ok = (student_pred == y).astype(float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n, len(y)))
    diffs = 100 * (s_ok[idx].mean(1) - t_ok[idx].mean(1))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff_points": float(100 * (s_ok.mean() - t_ok.mean())), "ci95": [float(lo), float(hi)],
            "student_only_right": int(((s_ok == 1) & (t_ok == 0)).sum()),
            "teacher_only_right": int(((s_ok == 0) & (t_ok == 1)).sum()), "n": int(len(y)), "resamples": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default=None,
                   help="registry URI or folder (default: the teacher the student's meta.json names, by version)")
    p.add_argument("--student", default=None, help="registry URI or folder (default: newest var/runs/distill run)")
    p.add_argument("--n", type=int, default=320, help="test texts timed in calls of 32")
    p.add_argument("--n-single", type=int, default=96, help="test texts timed one per call")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-padded", dest="padded", action="store_false", help="skip the one-padded-call mode")
    p.add_argument("--speed-only", action="store_true",
                   help="texts/s only (e.g. for a student whose weights are not trained yet: speed depends on shape)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)

    from evaluation.cpu_info import describe_cpu
    from evaluation.urgency_eval import evaluate_urgency, headline, pipeline
    from serving.components import SERVING_INTRA_OP_THREADS, load_triage_classifier
    from serving.settings import get_settings
    from training import urgency_train
    from training.offline_eval import ROUTING_BLIND, routing_report
    from training.triage_data import load_examples, make_splits
    from triage.redflags import RedFlagMatcher

    settings = get_settings()
    student_uri = args.student or newest_student()
    student = load_triage_classifier(student_uri, settings)
    uris = {"teacher": args.teacher or recorded_teacher(student.meta), "student": student_uri}
    models = {"teacher": load_triage_classifier(uris["teacher"], settings), "student": student}
    seeds = {name: int(m.meta.get("seed", 13)) for name, m in models.items()}
    if models["teacher"].labels != models["student"].labels:
        raise SystemExit("teacher and student have different label sets")
    df = make_splits(load_examples(settings), seed=seeds["student"])
    test = df[(df["split"] == "test") & (df["origin"] == "external")]
    labels = models["student"].labels
    test = test[test["center"].isin(labels)]
    texts = list(test["text"])
    y = test["center"].map({c: i for i, c in enumerate(labels)}).to_numpy()

    print(f"CPU: {describe_cpu()}")
    print(f"load average before: {loadavg()}")
    for name, m in models.items():
        print(f"{name}: {uris[name]} (version {m.version or 'local'}, {m.meta.get('layers')} layers, "
              f"{(m.folder / 'model.int8.onnx').stat().st_size / 2**20:.1f} MB int8), "
              f"{SERVING_INTRA_OP_THREADS} single-threaded sessions, one text per call")
    if seeds["teacher"] != seeds["student"]:
        print(f"WARNING: teacher split seed {seeds['teacher']} != student's {seeds['student']}: in-source rows "
              "differ from the teacher's own test split")

    # ------------------------------------------------------------------ speed (interleaved rounds)
    engines = {}
    for name, m in models.items():
        engines[f"{name} int8"] = m.predict
        # the encoder and centre head only (no urgency head, exemplar blend or Prediction objects): what distillation
        # shrinks; the difference to the row above is each model's fixed cost per call
        engines[f"{name} int8, centre logits only"] = m.predict_logits
        if args.padded:
            padded = load_triage_classifier(uris[name], settings, deterministic=False)
            engines[f"{name} int8, one padded call per batch"] = padded.predict
    single, batch32 = texts[: args.n_single], texts[: args.n]
    for fn in engines.values():  # warm-up
        fn(single[:8])
    speed = {name: {"b1": [], "b32": []} for name in engines}
    for _ in range(args.rounds):
        for name, fn in engines.items():
            speed[name]["b1"].append(timed(fn, single, 1))
            speed[name]["b32"].append(timed(fn, batch32, 32))
    print(f"load average after timing: {loadavg()}\n")
    print(f"### speed (texts/s; best / median of {args.rounds} interleaved rounds; b1 = {len(single)} calls of one "
          f"text, b32 = {len(batch32)} texts in calls of 32)\n")
    print("(\"centre logits only\" rows: vs the teacher's centre-logits-only row)\n")
    print("| engine | b1 best | b1 median | b32 best | b32 median | b1 vs teacher | b32 vs teacher |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = speed["teacher int8"]
    logits_base = speed["teacher int8, centre logits only"]
    out = {"cpu": describe_cpu(), "speed": {}, "quality": {}}
    for name, s in speed.items():
        b1, b32 = max(s["b1"]), max(s["b32"])
        ref = logits_base if "logits only" in name else base
        r1, r32 = b1 / max(ref["b1"]), b32 / max(ref["b32"])
        out["speed"][name] = {"b1_best": b1, "b1_median": statistics.median(s["b1"]), "b32_best": b32,
                              "b32_median": statistics.median(s["b32"]), "b1_ratio": r1, "b32_ratio": r32}
        print(f"| {name} | {b1:.0f} | {statistics.median(s['b1']):.0f} | {b32:.0f} | "
              f"{statistics.median(s['b32']):.0f} | {r1:.2f}x | {r32:.2f}x |")

    if args.speed_only:
        if args.json:
            args.json.write_text(json.dumps(out, indent=2, default=float))
        print(f"\nload average at the end: {loadavg()}")
        return 0

    # ------------------------------------------------------------------ quality on the same rows
    q = {name: quality(m, texts, y) for name, m in models.items()}
    agreement = float((q["teacher"]["pred"] == q["student"]["pred"]).mean())
    print(f"\n### in-source test (external held-out rows of the teacher's split, n={len(texts)}); top-1 agreement "
          f"{agreement:.1%}\n")
    print("| model | accuracy | macro-F1 | top-3 | ECE | selective acc. | coverage (1 - hand-off) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in q.items():
        print(f"| {name} | {r['accuracy']:.1%} | {r['macro_f1']:.1%} | {r['top3']:.1%} | {r['ece']:.3f} | "
              f"{r['selective_accuracy']:.1%} | {r['coverage']:.1%} |")
        out["quality"][name] = {k: v for k, v in r.items() if k != "pred"}
    out["quality"]["top1_agreement"] = agreement
    boot = paired_bootstrap(y, q["teacher"]["pred"], q["student"]["pred"])
    out["quality"]["accuracy_difference"] = boot
    print(f"\nstudent - teacher accuracy: {boot['diff_points']:+.1f} points, paired bootstrap 95% interval "
          f"[{boot['ci95'][0]:+.1f}, {boot['ci95'][1]:+.1f}] ({boot['resamples']} resamples of the {boot['n']} rows); "
          f"rows only the student gets right: {boot['student_only_right']}, only the teacher: "
          f"{boot['teacher_only_right']}")

    metrics = models["student"].meta.get("metrics", {})
    xs = sorted({k[len("xsrc_"):-len("_accuracy")] for k in metrics if k.startswith("xsrc_") and
                 k.endswith("_accuracy")})
    print("\n### cross-source (from the distillation run, not re-measured here: a fresh teacher trained on one "
          "source and a student distilled from it, both tested on the other source)\n")
    if xs:
        print("| direction | teacher acc. | student acc. | loss (points) | teacher macro-F1 | student macro-F1 |")
        print("|---|---:|---:|---:|---:|---:|")
        for d in xs:
            t, s = metrics.get(f"teacher_xsrc_{d}_accuracy"), metrics.get(f"xsrc_{d}_accuracy")
            tf, sf = metrics.get(f"teacher_xsrc_{d}_macro_f1"), metrics.get(f"xsrc_{d}_macro_f1")
            print(f"| {d.replace('_to_', ' -> ')} | {t:.1%} | {s:.1%} | {100 * (t - s):+.1f} | {tf:.1%} | {sf:.1%} |")
            out["quality"][f"xsrc_{d}"] = {"teacher": t, "student": s}
    else:
        print("(the student's run measured no cross-source figures: --no-cross-source)")

    # ------------------------------------------------------------------ blind sets
    with ROUTING_BLIND.open(newline="", encoding="utf-8") as fh:
        routing_rows = list(csv.DictReader(fh))
    blind_urgency = urgency_train.blind_rows()
    matcher = RedFlagMatcher()
    print(f"\n### blind sets (evaluation only): routing n={len(routing_rows)}, urgency n={len(blind_urgency)}\n")
    print("| model | routing top-1 | top-3 | handed off | accuracy when answering | urgency exact | emergency recall "
          "| under-triage |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in models.items():
        r = routing_report(m, routing_rows)["overall"]
        u = headline(evaluate_urgency(blind_urgency, pipeline(matcher, m)))
        print(f"| {name} | {r['top1']:.1%} | {r['top3']:.1%} | {r['handed_off']:.1%} | "
              f"{(r['selective_accuracy'] or 0):.1%} | {u['exact_accuracy']:.1%} | {u['emergency_recall']:.1%} | "
              f"{u['under_triage_rate']:.1%} |")
        out["quality"][f"{name}_routing_blind"] = r
        out["quality"][f"{name}_urgency_blind"] = u
    print(f"\nload average at the end: {loadavg()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
