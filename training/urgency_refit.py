"""``python -m training urgency-head``: refit the urgency head of an existing triage artefact (a copy), and with
``--register`` make the refit a version of its own, evaluated and gated like a new training.

Steps (``refit``; each a function of ``training.urgency_train`` or ``training.lifecycle``):

1. copy the artefact (``--model``: a folder, ``models:/triage-classifier/N`` or ``@alias``) to ``--output`` and
   drop its urgency head;
2. fit the head anew on the current guidance data (``urgency_train.train_head``: frozen embeddings of the served
   int8 model; the linear head, or the nearest-exemplar blend when the validation rule keeps it);
3. an MLflow run of its own (experiment ``triage``), named in the copy's ``meta.json`` as ``urgency_run_id``
   (``eval-urgency --log-mlflow`` logs there), tagged with the artefact it refits;

with ``--register`` also, as ``python -m training triage`` does for a new training:

4. the full urgency decision (red flags + head + rules, and red flags + rules alone) on validation, the blind sets
   v1 and v2 and AcuityBench, logged to the run (``urgency_<set>_*``, ``rules_only_urgency_<set>_*``,
   ``urgency_eval/report.json``) and written into the copy's ``meta.json`` metrics (the encoder run's urgency
   figures belonged to the old head);
5. ``model/`` logged and registered as a new version of ``triage-classifier``, tagged ``urgency_refit_of`` (the
   version, or the folder, it refits);
6. the lifecycle evaluation of that version (``training.lifecycle.evaluate_version``: the held-out test rows and
   the blind figures the gate reads), logged as ``registered_eval_*``;
7. unless ``--no-promote``: ``training.lifecycle.promote`` moves ``champion`` only if the gate
   (``training/gates/triage.json`` or ``--gates``) passes; it is never forced. Otherwise the version stays a plain
   version (the lead may make it the shadow challenger with ``python -m training promote triage N --alias
   challenger``, gated the same way).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evaluation.urgency_eval import evaluate_urgency, pipeline
from serving.settings import Settings, get_settings
from training import lifecycle, registry, urgency_train
from training.triage_train import EXPERIMENT, git_commit
from triage.classifier import URGENCY_HEAD_FILE, TriageClassifier, UrgencyHead
from triage.redflags import RedFlagMatcher

EVAL_SETS = ("validation", "blind", "blind2", "acuitybench")


@dataclass
class RefitResult:
    output: Path
    run_id: str
    head_version: str
    blend: dict | None
    thresholds: dict
    version: str | None = None  # registry version (with register)
    refit_of: str | None = None
    metrics: dict | None = None  # urgency_<set>_* of the refit (with register)
    registered_evaluation: dict | None = None
    promotion: dict | None = None


def external_sets(validation_rows: list[dict]) -> dict[str, list[dict]]:
    """The sets a registered refit is measured on: the head's own validation rows, the blind sets, AcuityBench."""
    return {"validation": validation_rows, "blind": urgency_train.blind_rows(),
            "blind2": urgency_train.blind_rows_v2(), "acuitybench": urgency_train.acuity_rows()}


def refit(settings: Settings, model: str, output: Path, *, per_statement: int = 6, limit: int | None = None,
          neighbours: bool = True, register: bool = False, promote: bool = True,
          gates: Path | None = None, actor: str | None = None) -> RefitResult:
    """Steps 1-3, and 4-7 with ``register`` (module docstring)."""
    import mlflow

    folder, source_version = registry.resolve_model_dir(model, settings)
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists")
    shutil.copytree(folder, output)
    (output / URGENCY_HEAD_FILE).unlink(missing_ok=True)
    clf = TriageClassifier.from_folder(output, variant="int8")
    head, details = urgency_train.train_head(clf, per_statement=per_statement, limit=limit, neighbours=neighbours)
    (output / URGENCY_HEAD_FILE).write_text(json.dumps(head))
    details["frame"].to_csv(output / "urgency_training_examples.csv", index=False)
    meta_path = output / "meta.json"
    meta = json.loads(meta_path.read_text())
    refit_of = source_version or str(Path(model).resolve() if not model.startswith("models:/") else model)
    chosen = head["neighbour_selection"]["chosen"]
    registry.configure(settings)
    with mlflow.start_run(experiment_id=registry.experiment_id(EXPERIMENT, settings),
                          run_name="urgency-head-refit") as run:
        run_id = run.info.run_id
        mlflow.set_tags({"parent_model_run_id": str(meta.get("run_id")), "urgency_head": head["version"],
                         "urgency_refit_of": refit_of, "git_commit": git_commit()})
        mlflow.log_params({"mode": head["mode"], "per_statement": per_statement, "source_model": model,
                           "limit": limit, "neighbour_blend": json.dumps(chosen),
                           **{f"threshold_{k}": v for k, v in head["thresholds"].items()}})
        mlflow.log_dict(head["neighbour_selection"], "urgency/neighbour_selection.json")
        meta["urgency_run_id"] = run_id
        meta["urgency_refit"] = {"of": refit_of, "source_model": model, "run_id": run_id,
                                 "head": head["version"], "blend": chosen, "git_commit": git_commit(),
                                 "created": datetime.now(UTC).isoformat(timespec="seconds")}
        result = RefitResult(output, run_id, head["version"], chosen, head["thresholds"], refit_of=refit_of)
        if not register:
            meta_path.write_text(json.dumps(meta, indent=2))
            mlflow.log_artifact(str(output / URGENCY_HEAD_FILE), "model")
            return result
        result.metrics = evaluate_refit(output, details["validation_rows"], meta)
        meta_path.write_text(json.dumps(meta, indent=2))
        mlflow.log_artifacts(str(output), "model")
        kind = lifecycle.kind_of("triage")
        tags = {"taxonomy_version": meta.get("taxonomy_version"), "git_commit": git_commit(),
                "urgency_refit_of": refit_of, "urgency_head": head["version"],
                "urgency_blend": "none" if not chosen else f"k={chosen['k']} weight={chosen['weight']}",
                "encoder_run_id": str(meta.get("run_id"))}
        if isinstance(meta.get("metrics", {}).get("test_accuracy"), (int, float)):
            tags["test_accuracy"] = round(float(meta["metrics"]["test_accuracy"]), 4)
        result.version = registry.register_run_artifact(kind.registered_name, run_id, "model", tags=tags)
        evaluation = lifecycle.evaluate_version(kind, result.version, None, settings)
        mlflow.log_metrics({f"registered_eval_{k}": float(v) for k, v in evaluation.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        mlflow.log_dict(evaluation, "report/registered_evaluation.json")
        result.registered_evaluation = {k: v for k, v in evaluation.items() if k != "per_class"}
        if promote:
            result.promotion = lifecycle.gated_promotion(
                "triage", result.version, settings=settings, gates_path=gates, actor=actor,
                reason=f"urgency head refit of {refit_of}: gated")
            mlflow.log_dict(result.promotion, "report/promotion.json")
            mlflow.set_tag("promotion", "champion" if result.promotion["promoted"] else "not promoted")
    return result


def evaluate_refit(output: Path, validation_rows: list[dict], meta: dict) -> dict[str, float]:
    """Step 4: the decision with the refitted head as the service reads it, on every set, logged to the active run;
    the copy's ``meta`` metrics get the refit's urgency figures in place of the old head's."""
    import mlflow

    clf = TriageClassifier.from_folder(output, variant="int8")
    clf.urgency_head = UrgencyHead.from_json(output / URGENCY_HEAD_FILE)
    sets = external_sets(validation_rows)
    matcher = RedFlagMatcher()
    with_model = urgency_train.evaluate(clf, sets, matcher)
    rules_only = {name: evaluate_urgency(rows, pipeline(matcher, None)) for name, rows in sets.items()}
    flat = urgency_train.flat_metrics(with_model)
    mlflow.log_metrics(flat)
    mlflow.log_metrics({f"rules_only_{k}": v for k, v in urgency_train.flat_metrics(rules_only).items()})
    mlflow.log_dict({n: {"model": with_model[n], "rules_only": rules_only[n]} for n in sets},
                    "urgency_eval/report.json")
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if not k.startswith("urgency_")}
    meta["metrics"] = {**metrics, **flat}
    return flat


def main(argv: list[str] | None = None) -> int:
    """``python -m training urgency-head --model URI_OR_FOLDER --output DIR [--register]``: copy a triage artifact
    and fit its urgency head anew (frozen mode) on the current guidance data; with --register a new version."""
    parser = argparse.ArgumentParser(prog="python -m training urgency-head", description=main.__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="triage model URI or folder (with an embedding output)")
    parser.add_argument("--output", required=True, type=Path, help="new artifact folder (must not exist)")
    parser.add_argument("--per-statement", type=int, default=6)
    parser.add_argument("--limit", type=int, default=None, help="guidance statements per level (fast runs)")
    parser.add_argument("--no-neighbours", action="store_true",
                        help="no nearest-exemplar blend (the linear head alone, as before issue 11's blend)")
    parser.add_argument("--register", action="store_true",
                        help="evaluate the refit on validation, blind v1/v2 and AcuityBench, register it as a new "
                             "version of triage-classifier (tag urgency_refit_of) and hand it to the gated promotion")
    parser.add_argument("--no-promote", dest="promote", action="store_false",
                        help="with --register: register only, no promotion attempt")
    parser.add_argument("--gates", type=Path, default=None, help="gate file (default training/gates/triage.json)")
    parser.add_argument("--actor", default=None)
    args = parser.parse_args(argv)
    if args.output.exists():
        parser.error(f"{args.output} exists")
    if args.gates is not None and not args.gates.is_file():
        parser.error(f"gate file {args.gates} not found")
    try:
        r = refit(get_settings(), args.model, args.output, per_statement=args.per_statement, limit=args.limit,
                  neighbours=not args.no_neighbours, register=args.register, promote=args.promote,
                  gates=args.gates, actor=args.actor)
    except registry.ModelNotFoundError as exc:
        parser.error(str(exc))
    print(f"urgency head {r.head_version} written to {r.output / URGENCY_HEAD_FILE}; thresholds {r.thresholds}; "
          f"nearest-exemplar blend {r.blend}; MLflow run {r.run_id}")
    if r.version is not None:
        m = r.metrics or {}
        print(f"registered triage-classifier version {r.version} (urgency refit of {r.refit_of}); "
              + "; ".join(f"{s}: emergency recall {m.get(f'urgency_{s}_emergency_recall', float('nan')):.1%}, "
                          f"under-triage {m.get(f'urgency_{s}_under_triage_rate', float('nan')):.1%}"
                          for s in EVAL_SETS))
    if r.promotion is not None:
        p = r.promotion
        print("promotion: " + ("champion" if p["promoted"] else "not promoted (stays a plain version): " + "; ".join(
            f["detail"] for f in p["failures"]) + (p.get("error") or "")))
    return 0
