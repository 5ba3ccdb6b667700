"""Register a triage artefact folder built elsewhere as its own version, evaluated and gated like a new training.

    python -m training register --folder var/runs/distill/<run>/model [--no-promote] [--tag key=value ...]

A student distilled in another work dir (another worktree or machine, its own MLflow store) is a complete artefact
folder (``model.onnx``, ``model.int8.onnx``, ``tokenizer/``, ``labels.json``, ``meta.json``, optional urgency head and
exemplar sidecar).  This command brings it into *this* registry (``RXT_WORK_DIR``):

1. the folder must load as the service loads it (``TriageClassifier.from_folder``, int8) and carry the taxonomy
   version of the running taxonomy; anything else is refused before the registry is touched;
2. one MLflow run in experiment ``triage`` (``register-<folder>``): tags ``registered_from`` (the folder),
   ``origin_run_id`` (the run that built it, from its meta.json, in the store it was built in), ``git_commit``,
   the sha256 of each ONNX graph; params from meta.json (layers, seed, max length, int8 scheme, distillation recipe);
   the meta.json metrics as the run's metrics (``origin_*``: measured where it was built); the folder as artifact
   ``model/`` and, if the folder has a sibling ``report/`` (a run folder's layout), that too;
3. ``model/`` registered as a new version of ``triage-classifier`` (no alias), tags as a distillation run's;
4. the lifecycle evaluation of that version (``training.lifecycle.evaluate_version``: the held-out test rows of its
   own split and the blind figures), logged as ``registered_eval_*`` and ``report/registered_evaluation.json``;
5. unless ``--no-promote``: ``training.lifecycle.promote`` moves ``champion`` only if the gate in
   ``training/gates/triage.json`` passes (never forced); the outcome in ``report/promotion.json`` and tag
   ``promotion``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from serving.settings import Settings, get_settings
from training import lifecycle, registry
from training.triage_train import EXPERIMENT, TRIAGE_MODEL_NAME, git_commit
from triage.classifier import ModelArtifactError, TriageClassifier
from triage.taxonomy import load_taxonomy

log = logging.getLogger(__name__)


class RegisterError(RuntimeError):
    """The folder cannot be registered; the message says why."""


@dataclass
class RegisterResult:
    run_id: str
    version: str
    evaluation: dict = field(default_factory=dict)
    promotion: dict | None = None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_folder(folder: Path) -> dict:
    """The folder's meta.json, after loading it as the service does; RegisterError if it cannot be served."""
    if not folder.is_dir():
        raise RegisterError(f"artefact folder not found: {folder}")
    try:
        clf = TriageClassifier.from_folder(folder, variant="int8", intra_op_threads=1)
    except (ModelArtifactError, ValueError) as exc:
        raise RegisterError(f"{folder} is not a servable triage artefact: {exc}") from exc
    taxonomy = load_taxonomy()
    if clf.taxonomy_version != taxonomy.version:
        raise RegisterError(f"{folder} was built for taxonomy {clf.taxonomy_version}, the running taxonomy is "
                            f"{taxonomy.version}")
    if clf.labels != taxonomy.model_labels():
        raise RegisterError(f"{folder}/labels.json does not match the taxonomy's model labels")
    return clf.meta


def _params(meta: dict) -> dict:
    out = {k: meta.get(k) for k in ("layers", "seed", "max_length", "few_shot", "default_variant", "encoder")}
    quant = meta.get("quantization") or {"scheme": "dynamic"}
    out["int8_scheme"] = quant.get("scheme")
    out["int8_exclude"] = ",".join(quant.get("exclude") or [])
    for k, v in (meta.get("distillation") or {}).items():
        out[f"distillation_{k}"] = v
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in out.items() if v is not None}


def register_folder(folder: str | Path, settings: Settings | None = None, *, promote: bool = True,
                    tags: dict | None = None, gates: Path | None = None, actor: str | None = None) -> RegisterResult:
    """Steps 1-5 of the module docstring."""
    import mlflow

    settings = settings or get_settings()
    folder = Path(folder).resolve()
    meta = check_folder(folder)
    registry.configure(settings)
    commit = git_commit()
    metrics = {f"origin_{k}": float(v) for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    graphs = {f"sha256_{p.stem.replace('.', '_')}": sha256(p) for p in sorted(folder.glob("*.onnx"))}
    distillation = meta.get("distillation") or {}
    with mlflow.start_run(experiment_id=registry.experiment_id(EXPERIMENT, settings),
                          run_name=f"register-{folder.parent.name}-{folder.name}") as run:
        run_id = run.info.run_id
        mlflow.set_tags({"registered_from": str(folder), "origin_run_id": str(meta.get("run_id")),
                         "origin_git_commit": str(meta.get("git_commit")), "git_commit": commit, **graphs,
                         **{k: str(v) for k, v in (tags or {}).items()}})
        mlflow.log_params(_params(meta))
        if metrics:
            mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(folder), "model")
        report = folder.parent / "report"
        if report.is_dir():
            mlflow.log_artifacts(str(report), "report")
        version_tags = {"taxonomy_version": meta.get("taxonomy_version"), "git_commit": commit,
                        "registered_from": str(folder), "origin_run_id": meta.get("run_id"),
                        "layers": meta.get("layers"),
                        "int8_scheme": (meta.get("quantization") or {}).get("scheme", "dynamic"),
                        **{k: v for k, v in (tags or {}).items()}}
        if isinstance((meta.get("metrics") or {}).get("test_accuracy"), (int, float)):
            version_tags["test_accuracy"] = round(float(meta["metrics"]["test_accuracy"]), 4)
        if distillation:
            version_tags["distilled_from"] = distillation.get("teacher_uri")
            version_tags["teacher_version"] = distillation.get("teacher_version") or "local"
        version = registry.register_run_artifact(
            TRIAGE_MODEL_NAME, run_id, "model", tags={k: v for k, v in version_tags.items() if v is not None})
        kind = lifecycle.kind_of("triage")
        evaluation = lifecycle.evaluate_version(kind, version, None, settings)
        mlflow.log_metrics({f"registered_eval_{k}": float(v) for k, v in evaluation.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        mlflow.log_dict(evaluation, "report/registered_evaluation.json")
        result = RegisterResult(run_id, version, {k: v for k, v in evaluation.items() if k != "per_class"})
        if promote:
            result.promotion = lifecycle.gated_promotion("triage", version, settings=settings, gates_path=gates,
                                                         actor=actor, reason=f"registered from {folder}: gated")
            mlflow.log_dict(result.promotion, "report/promotion.json")
            mlflow.set_tag("promotion", "champion" if result.promotion["promoted"] else "not promoted")
    return result


def main(argv: list[str] | None = None) -> int:
    """Register a triage artefact folder built elsewhere as a new triage-classifier version, evaluated and gated.

    ``python -m training register --folder DIR``: e.g. a distilled student from another worktree; the lifecycle
    evaluation runs and the version is handed to the gated promotion (never forced)."""
    p = argparse.ArgumentParser(prog="python -m training register", description=main.__doc__.splitlines()[0])
    p.add_argument("--folder", required=True, type=Path, help="artefact folder (model.onnx, model.int8.onnx, "
                   "tokenizer/, labels.json, meta.json, ...)")
    p.add_argument("--no-promote", dest="promote", action="store_false",
                   help="register and evaluate only; no promotion attempt")
    p.add_argument("--gates", type=Path, default=None, help="gate file (default training/gates/triage.json)")
    p.add_argument("--tag", action="append", default=[], help="extra tag key=value on the run and the version")
    p.add_argument("--actor", default=None)
    args = p.parse_args(argv)
    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            p.error(f"--tag {item!r}: expected key=value")
        tags[key.strip()] = value
    if args.gates is not None and not args.gates.is_file():
        p.error(f"gate file {args.gates} not found")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        r = register_folder(args.folder, get_settings(), promote=args.promote, tags=tags, gates=args.gates,
                            actor=args.actor)
    except RegisterError as exc:
        print(f"error: {exc}")
        return 2
    e = r.evaluation
    print(f"run {r.run_id} -> {TRIAGE_MODEL_NAME} version {r.version} (from {args.folder})")
    for key in ("accuracy", "macro_f1", "ece", "selective_accuracy", "coverage", "n"):
        if isinstance(e.get(key), (int, float)):
            print(f"  registered_eval_{key:<24} {e[key]:.4f}")
    if r.promotion is not None:
        print("  promotion: " + ("champion" if r.promotion["promoted"] else "not promoted: " + "; ".join(
            f["detail"] for f in r.promotion["failures"]) + (r.promotion.get("error") or "")))
    return 0
