"""``python -m training exemplars``: add the nearest-exemplar sidecar to an existing triage artefact and measure it.

    python -m training exemplars --model models:/triage-classifier@champion|FOLDER [--out DIR]
        [--cross-source-json FILE] [--cross-source-epochs N] [--no-log-mlflow] [--json]

Steps (the same functions ``train_triage`` uses for a new artefact):

1. the artefact's split is rebuilt from its ``meta.json`` seed (``make_splits``), as ``training.distill`` does;
2. cross-source validation: a fresh model of the artefact's recipe (layers, max length, few-shot method) per
   direction (``triage_train._cross_source``), each scoring the (k, tau, weight) grid on the held-out source; or a
   saved grid (``--cross-source-json``, the ``cross_source.json`` of an earlier run);
3. ``exemplar_blend.decide`` picks the parameters and the default on/off; ``build_sidecar`` embeds the bank with
   the served int8 model and refits the blend temperature and the abstention threshold on validation;
4. one report, head vs blend: cross-source (parameters chosen on the other direction), in-source test, the blind
   routing sets v1 and v2 (overall, per center, per style), each with top-1, top-3, hand-offs and accuracy when
   answering; logged to MLflow (experiment ``triage``, run ``exemplar-blend-*``) in this checkout's store.

The new artefact (a copy of the model folder plus ``center_exemplars.json``/``.npy``) is written to ``--out``;
nothing is registered and no alias moves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation import triage_eval as ev
from evaluation.routing_eval import read_rows, routing_report
from serving.settings import get_settings
from training import exemplar_blend, registry, urgency_train
from training.triage_data import load_examples, make_splits
from training.triage_train import TrainOptions, _cross_source
from triage.classifier import TriageClassifier
from triage.taxonomy import load_taxonomy

BLIND_DIR = urgency_train.BLIND_SET.parent
BLIND_SETS = {"blind_v1": BLIND_DIR / "routing_blind_v1.csv", "blind_v2": BLIND_DIR / "routing_blind_v2.csv"}


def _block(y, probs, labels, threshold) -> dict:
    m = ev.classification_metrics(y, probs, labels)
    sel = ev.selective(y, probs, threshold)
    return {"n": int(len(y)), "top1": m["accuracy"], "macro_f1": m["macro_f1"], "top3": m["top3_accuracy"],
            "handed_off": 1.0 - sel["coverage"], "selective_accuracy": sel["selective_accuracy"],
            "per_center_recall": {c: v["recall"] for c, v in m["per_center"].items()}}


def evaluate(folder: Path, split_df, labels: list[str], threads: int = 2) -> dict:
    index = {c: i for i, c in enumerate(labels)}
    test = split_df[(split_df["split"] == "test") & (split_df["origin"] == "external")]
    out: dict = {}
    for use in (False, True):
        clf = TriageClassifier.from_folder(folder, variant="int8", intra_op_threads=threads, blend=use)
        name = "blend" if use else "head"
        probs = clf.predict_proba(list(test["text"]))
        out.setdefault("in_source_test", {})[name] = _block(test["center"].map(index).to_numpy(), probs, labels,
                                                            clf.threshold)
        for set_name, path in BLIND_SETS.items():
            out.setdefault(set_name, {})[name] = routing_report(clf, read_rows(path))
        out.setdefault("thresholds", {})[name] = clf.threshold
    return out


def markdown(res: dict) -> str:
    lines = [f"## Nearest-exemplar blend vs head, model {res['model']}", "",
             f"Parameters: k={res['decision']['k']}, tau={res['decision']['tau']}, weight={res['decision']['weight']}"
             f"; enabled by default: **{res['decision']['enabled']}** ({res['decision']['reason']}).", "",
             "| set | variant | n | top-1 | top-3 | handed off | accuracy when answering |",
             "|---|---|---:|---:|---:|---:|---:|"]

    def pct(x):
        return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.1%}"

    for name, v in res["decision"].get("leave_one_direction_out", {}).items():
        for var in ("head", "blend"):
            b = v[var]
            lines.append(f"| cross-source {name} (params from the other direction) | {var} | "
                         f"{res['cross_source_n'].get(name, '')} | {pct(b['accuracy'])} | {pct(b['top3_accuracy'])} "
                         f"| - | - |")
    ev_ = res["evaluation"]
    for var in ("head", "blend"):
        b = ev_["in_source_test"][var]
        lines.append(f"| in-source test | {var} | {b['n']} | {pct(b['top1'])} | {pct(b['top3'])} | "
                     f"{pct(b['handed_off'])} | {pct(b['selective_accuracy'])} |")
    for set_name in BLIND_SETS:
        for var in ("head", "blend"):
            o = ev_[set_name][var]["overall"]
            lines.append(f"| {set_name} | {var} | {o['n']} | {pct(o['top1'])} | {pct(o['top3'])} | "
                         f"{pct(o['handed_off'])} | {pct(o['selective_accuracy'])} |")
    lines += ["", f"Thresholds (validation, target {ev.SELECTIVE_TARGET:.0%}): head {ev_['thresholds']['head']:.3f}, "
              f"blend {ev_['thresholds']['blend']:.3f}.", "", "### Top-1 per center (head -> blend)", "",
              "| center | in-source test | blind v1 | blind v2 |", "|---|---|---|---|"]
    centers = sorted(ev_["blind_v1"]["head"]["by_center"])
    for c in centers:
        cells = []
        ins = ev_["in_source_test"]
        h, b = ins["head"]["per_center_recall"].get(c), ins["blend"]["per_center_recall"].get(c)
        cells.append("-" if h is None else f"{h:.0%} -> {b:.0%}")
        for set_name in BLIND_SETS:
            bc = ev_[set_name]
            hh, bb = bc["head"]["by_center"].get(c), bc["blend"]["by_center"].get(c)
            cells.append("-" if not hh else f"{hh['top1']:.0%} -> {bb['top1']:.0%} (n={hh['n']})")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "### Top-1 per style (head -> blend)", "", "| style | blind v1 | blind v2 |", "|---|---|---|"]
    styles = sorted(set(ev_["blind_v1"]["head"]["by_style"]) | set(ev_["blind_v2"]["head"]["by_style"]))
    for st in styles:
        cells = []
        for set_name in BLIND_SETS:
            hh = ev_[set_name]["head"]["by_style"].get(st)
            bb = ev_[set_name]["blend"]["by_style"].get(st)
            cells.append("-" if not hh else f"{hh['top1']:.0%} -> {bb['top1']:.0%} (n={hh['n']})")
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training exemplars", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="triage model URI or folder (default: RXT_TRIAGE_MODEL_URI)")
    p.add_argument("--out", type=Path, default=None, help="default: var/runs/exemplars/<UTC stamp>")
    p.add_argument("--cross-source-json", type=Path, default=None, help="reuse the grids of an earlier run")
    p.add_argument("--cross-source-epochs", type=int, default=None, help="default: 2 (the full recipe)")
    p.add_argument("--limit-per-center", type=int, default=None, help="cap the cross-source rows (fast runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-mlflow", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    settings = get_settings()
    uri = args.model or settings.triage_model_uri
    src = Path(uri) if Path(uri).is_dir() else Path(registry.resolve_model_dir(uri, settings)[0])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(args.out or settings.work_dir / "runs" / "exemplars" / stamp)
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(src, model_dir, ignore=shutil.ignore_patterns("center_exemplars.*"))
    meta = json.loads((model_dir / "meta.json").read_text())
    taxonomy = load_taxonomy()
    labels = json.loads((model_dir / "labels.json").read_text())
    full = load_examples(settings)
    df = make_splits(full, int(meta.get("seed", 13)))
    opts = TrainOptions(layers=int(meta.get("layers", 6)), max_length=int(meta["max_length"]),
                        seed=int(meta.get("seed", 13)), few_shot=meta.get("few_shot", "prototypes"),
                        epochs=args.cross_source_epochs or 2, threads=args.threads, register=False,
                        limit_per_center=args.limit_per_center, progress=False)
    if args.cross_source_json:
        xsrc = json.loads(args.cross_source_json.read_text())
    else:
        import torch

        torch.set_num_threads(args.threads)
        xsrc = _cross_source(full, opts, taxonomy)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_source.json").write_text(json.dumps(xsrc, default=float))
    grids = {n: c["blend_grid"] for n, c in xsrc.items()}
    decision = exemplar_blend.decide(grids)
    clf = TriageClassifier.from_folder(model_dir, variant="int8", intra_op_threads=args.threads, blend=False)
    index = {c: i for i, c in enumerate(labels)}
    val = df[df["split"] == "val"]
    texts, ys, prov = exemplar_blend.bank_rows(df, taxonomy, labels, opts.few_shot in ("prototypes", "both"))
    sidecar = exemplar_blend.build_sidecar(
        clf, texts, ys, prov, list(val["text"]), val["center"].map(index).to_numpy(), decision,
        {"decision": decision, "model": str(uri), "model_run_id": meta.get("run_id"),
         "bank": "training split (external and project rows) + taxonomy descriptions, embedded by the served "
                 "int8 model", "created": stamp})
    sidecar.save(model_dir)
    res = {"model": f"{uri} (run {meta.get('run_id')})", "decision": decision, "sidecar": sidecar.summary(),
           "validation": sidecar.info["validation"],
           "cross_source_n": {n: c["n_test"] for n, c in xsrc.items()},
           "cross_source_head": {n: c["model"] for n, c in xsrc.items()},
           "evaluation": evaluate(model_dir, df, labels, args.threads), "artefact": str(model_dir)}
    md = markdown(res)
    (out / "report.md").write_text(md)
    (out / "report.json").write_text(json.dumps(res, indent=2, default=float))
    if args.log_mlflow:
        import mlflow

        registry.configure(settings)
        exp = registry.experiment_id("triage", settings)
        with mlflow.start_run(experiment_id=exp, run_name=f"exemplar-blend-{stamp}") as run:
            mlflow.set_tags({"model": str(uri), "model_run_id": str(meta.get("run_id")), "issue": "12"})
            mlflow.log_params({k: decision[k] for k in ("k", "tau", "weight", "enabled")})
            flat = {}
            for name, v in decision.get("leave_one_direction_out", {}).items():
                key = name.replace("->", "_to_")
                flat[f"xsrc_{key}_head_accuracy"] = v["head"]["accuracy"]
                flat[f"xsrc_{key}_blend_accuracy"] = v["blend"]["accuracy"]
            e = res["evaluation"]
            for var in ("head", "blend"):
                b = e["in_source_test"][var]
                flat.update({f"test_top1_{var}": b["top1"], f"test_top3_{var}": b["top3"],
                             f"test_handed_off_{var}": b["handed_off"],
                             f"test_selective_accuracy_{var}": b["selective_accuracy"]})
                for set_name in BLIND_SETS:
                    o = e[set_name][var]["overall"]
                    flat.update({f"routing_{set_name}_top1_{var}": o["top1"], f"routing_{set_name}_top3_{var}": o["top3"],
                                 f"routing_{set_name}_handed_off_{var}": o["handed_off"],
                                 f"routing_{set_name}_selective_accuracy_{var}": o["selective_accuracy"] or 0.0})
            mlflow.log_metrics({k: float(v) for k, v in flat.items() if v is not None and np.isfinite(v)})
            mlflow.log_artifact(str(out / "report.md"), "exemplar_eval")
            mlflow.log_artifact(str(out / "report.json"), "exemplar_eval")
            mlflow.log_artifact(str(out / "cross_source.json"), "exemplar_eval")
            print(f"logged to MLflow run {run.info.run_id}", file=sys.stderr)
    print(json.dumps(res, indent=2, default=float) if args.json else md)
    print(f"artefact with sidecar: {model_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
