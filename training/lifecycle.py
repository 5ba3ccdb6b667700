"""Model lifecycle for ML engineers: evaluate, compare, promote (gated), roll back, history.

Both registered models go through the same verbs::

    python -m training evaluate triage --version 3 [--dataset test]
    python -m training compare  triage 3 4
    python -m training compare  triage --live [--since TIME] [CHALLENGER_VERSION]
    python -m training promote  triage 4 [--gates FILE] [--force --reason "..."] [--actor NAME]
    python -m training rollback triage [--to 3] --reason "..." [--actor NAME]
    python -m training history  triage [--at 2026-11-23T20:00:00Z]
    python -m training card     triage 4

Promotion moves the ``champion`` alias only when the candidate passes the declared gates
(``training/gates/<kind>.json``) and is not worse than the current champion on the same held-out
data beyond a tolerance.  ``--force`` skips failing gates but needs ``--reason``.  Every alias
change is written to the hash-chained audit log (who, when, from which version to which, why, the
gate results), which is how "which version was serving at time T" is answered.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path

from serving.audit import history
from serving.db.session import session_scope
from serving.settings import Settings, get_settings
from training import registry
from training.lifecycle_eval import redflag_recall
from training.live import compare_live, live_gate_checks
from training.model_card import model_card

GATES_DIR = Path(__file__).resolve().parent / "gates"


@dataclass(frozen=True)
class ModelKind:
    key: str
    registered_name: str
    evaluator: str  # "module:function"(model_dir, dataset, settings) -> metrics dict
    datasets: tuple[str, ...]


KINDS: dict[str, ModelKind] = {
    "triage": ModelKind("triage", "triage-classifier", "training.lifecycle_eval:evaluate_triage",
                        ("test", "test-external")),
    "ddi": ModelKind("ddi", "ddi-severity", "training.lifecycle_eval:evaluate_ddi",
                     ("random", "one_unseen", "both_unseen")),
}


class LifecycleError(RuntimeError):
    """A lifecycle request that cannot be carried out; the message says why."""


def kind_of(key: str) -> ModelKind:
    if key not in KINDS:
        raise LifecycleError(f"unknown model kind {key!r}; known: {', '.join(KINDS)}")
    return KINDS[key]


# --- evaluation -----------------------------------------------------------------------------


def evaluate_version(kind: ModelKind, version: str, dataset: str | None, settings: Settings) -> dict:
    dataset = dataset or kind.datasets[0]
    if dataset not in kind.datasets:
        raise LifecycleError(f"{kind.key} has no data set {dataset!r}; choose one of {', '.join(kind.datasets)}")
    model_dir, _ = registry.resolve_model_dir(f"models:/{kind.registered_name}/{version}", settings)
    module, func = kind.evaluator.split(":")
    metrics = getattr(import_module(module), func)(model_dir, dataset, settings)
    metrics["version"] = str(version)
    metrics["dataset"] = dataset
    return metrics


def compare(first: dict, second: dict) -> dict:
    """Side-by-side deltas (second - first) of every shared scalar and per-class metric."""
    out = {"overall": {}, "per_class": {}}
    for key, value in first.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key in second:
            out["overall"][key] = {"a": value, "b": second[key], "delta": second[key] - value}
    pa, pb = first.get("per_class", {}), second.get("per_class", {})
    for label in sorted(set(pa) | set(pb)):
        ra = pa.get(label, {}).get("recall")
        rb = pb.get(label, {}).get("recall")
        out["per_class"][label] = {
            "recall_a": ra, "recall_b": rb,
            "delta": None if ra is None or rb is None else rb - ra,
        }
    return out


# --- gates ----------------------------------------------------------------------------------


@dataclass
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class GateReport:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def load_gates(kind: ModelKind, path: str | Path | None = None) -> dict:
    path = Path(path) if path else GATES_DIR / f"{kind.key}.json"
    if not path.exists():
        raise LifecycleError(f"gate file not found: {path}")
    gates = json.loads(path.read_text())
    for key in ("dataset", "minimums"):
        if key not in gates:
            raise LifecycleError(f"gate file {path} lacks {key!r}")
    return gates


def apply_gates(gates: dict, candidate: dict, champion: dict | None, extra: dict | None = None) -> GateReport:
    """Check ``candidate`` metrics against declared thresholds and the champion's metrics."""
    checks: list[GateCheck] = []
    for metric, minimum in gates.get("minimums", {}).items():
        value = candidate.get(metric)
        ok = value is not None and value >= minimum
        checks.append(GateCheck(f"min {metric}", ok, f"{metric}={_fmt(value)} (minimum {minimum})"))
    for metric, maximum in gates.get("maximums", {}).items():
        value = candidate.get(metric)
        ok = value is not None and value <= maximum
        checks.append(GateCheck(f"max {metric}", ok, f"{metric}={_fmt(value)} (maximum {maximum})"))
    floor = gates.get("per_class_min_recall")
    if floor is not None:
        per_class = candidate.get("per_class", {})
        overrides = gates.get("per_class_min_recall_overrides", {})
        low = []
        for label, stats in sorted(per_class.items()):
            if stats.get("support", 1) == 0:
                continue
            need = overrides.get(label, floor)
            if stats.get("recall") is None or stats["recall"] < need:
                low.append(f"{label}={_fmt(stats.get('recall'))}<{need}")
        checks.append(GateCheck("per-class recall", not low,
                                "all classes meet their minimum" if not low else "below minimum: " + ", ".join(low)))
    for name, value in (extra or {}).items():
        rule = gates.get("extra", {}).get(name)
        if rule is None:
            continue
        ok = value is not None and (value >= rule["min"] if "min" in rule else value <= rule["max"])
        bound = f"minimum {rule['min']}" if "min" in rule else f"maximum {rule['max']}"
        checks.append(GateCheck(name, ok, f"{name}={_fmt(value)} ({bound})"))
    if champion is not None:
        if champion.get("heldout_id") and candidate.get("heldout_id") != champion.get("heldout_id"):
            checks.append(GateCheck(
                "same held-out data", False,
                f"candidate was scored on held-out split {candidate.get('heldout_id')}, champion on "
                f"{champion.get('heldout_id')} (different seed, fractions or source files): not comparable",
            ))
        # "non_inferiority_if_present": figures only some artefacts carry (e.g. the training run's cross-source
        # tests): compared when the champion has them; a candidate without them is then refused, a champion
        # without them cannot be compared (passes)
        rules = [(m, t, False) for m, t in gates.get("non_inferiority", {}).items()]
        rules += [(m, t, True) for m, t in gates.get("non_inferiority_if_present", {}).items()]
        for metric, tolerance, optional in rules:
            a, b = champion.get(metric), candidate.get(metric)
            name = f"not worse: {metric}"
            if optional and a is None:
                checks.append(GateCheck(name, True, f"champion has no {metric} (not measured when it was trained): "
                                                    "not compared"))
                continue
            if optional and b is None:
                checks.append(GateCheck(name, False,
                                        f"candidate has no {metric} but the champion has {_fmt(a)}: train it with them"))
                continue
            if a is None or b is None:
                checks.append(GateCheck(name, False, f"{metric} missing"))
                continue
            worse_by = (b - a) if metric in gates.get("lower_is_better", []) else (a - b)
            checks.append(GateCheck(name, worse_by <= tolerance,
                                    f"candidate {_fmt(b)} vs champion {_fmt(a)} (tolerance {tolerance})"))
    return GateReport(all(c.passed for c in checks), checks)


def _fmt(value) -> str:
    return "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


# --- alias changes, audited ---------------------------------------------------------------


def promote(kind_key: str, version: str, *, settings: Settings | None = None, gates_path=None,
            force: bool = False, reason: str | None = None, actor: str | None = None,
            alias: str = registry.CHAMPION) -> dict:
    settings = settings or get_settings()
    registry.configure(settings)
    kind = kind_of(kind_key)
    if force and not (reason and reason.strip()):
        raise LifecycleError("--force needs --reason: say why the gates are being overridden")
    version = _existing_version(kind, version)
    current = registry.get_alias_version(kind.registered_name, alias)
    if current == version:
        raise LifecycleError(f"version {version} is already {alias} of {kind.registered_name}")
    gates = load_gates(kind, gates_path)
    candidate = evaluate_version(kind, version, gates["dataset"], settings)
    champion = evaluate_version(kind, current, gates["dataset"], settings) if current else None
    extra = _extra_gate_values(kind, version, settings, gates)
    report = apply_gates(gates, candidate, champion, extra)
    if kind.key == "triage":  # the shadow challenger's live sample (gate "live"; off unless min_samples > 0)
        for name, passed, detail in live_gate_checks(gates, version, settings):
            report.checks.append(GateCheck(name, passed, detail))
        report.passed = all(c.passed for c in report.checks)
    if not report.passed and not force:
        return {"promoted": False, "model": kind.registered_name, "version": version, "champion": current,
                "gate": report, "candidate": candidate, "champion_metrics": champion}
    entry = registry.set_alias(
        kind.registered_name, alias, version, actor=actor, reason=reason, action="model.promote", settings=settings,
        details={"forced": force and not report.passed,
                 "gate": {"passed": report.passed, "checks": [asdict(c) for c in report.checks]}},
    )
    return {"promoted": True, "model": kind.registered_name, "version": version, "previous": current,
            "gate": report, "audit_id": entry, "candidate": candidate, "champion_metrics": champion}


def gated_promotion(kind_key: str, version: str, *, settings: Settings | None = None, gates_path=None,
                    actor: str | None = None, reason: str) -> dict:
    """``promote`` without force, for commands that register a version and hand it to the gate: never raises for a
    refused or impossible promotion; returns promoted, error, the previous champion and the failed checks."""
    try:
        out = promote(kind_key, version, settings=settings, gates_path=gates_path, actor=actor, reason=reason)
    except LifecycleError as exc:
        out = {"promoted": False, "error": str(exc)}
    gate = out.get("gate")
    return {"promoted": bool(out.get("promoted")), "error": out.get("error"),
            "previous_champion": out.get("previous") or out.get("champion"),
            "failures": [asdict(c) for c in gate.failures()] if gate is not None else []}


def rollback(kind_key: str, *, to: str | None = None, reason: str | None = None, actor: str | None = None,
             settings: Settings | None = None, alias: str = registry.CHAMPION) -> dict:
    settings = settings or get_settings()
    registry.configure(settings)
    kind = kind_of(kind_key)
    if not (reason and reason.strip()):
        raise LifecycleError("rollback needs --reason")
    current = registry.get_alias_version(kind.registered_name, alias)
    if current is None:
        raise LifecycleError(f"{kind.registered_name} has no {alias} to roll back")
    if to is None:
        previous = [e for e in alias_history(kind_key, settings=settings, alias=alias)
                    if e["version"] != current]
        if not previous:
            raise LifecycleError(f"no earlier {alias} of {kind.registered_name} in the audit log; name one with --to")
        to = previous[-1]["version"]
    to = _existing_version(kind, to)
    entry = registry.set_alias(kind.registered_name, alias, to, actor=actor, reason=reason,
                               action="model.rollback", settings=settings)
    return {"rolled_back": True, "model": kind.registered_name, "from": current, "to": to, "audit_id": entry}


def alias_history(kind_key: str, *, settings: Settings | None = None, alias: str = registry.CHAMPION,
                  until: datetime | None = None) -> list[dict]:
    """Alias changes in time order (from the audit log), optionally only those up to ``until``."""

    settings = settings or get_settings()
    kind = kind_of(kind_key)
    with session_scope(settings) as session:
        entries = history(session, subject_prefix=f"model:{kind.registered_name}@{alias}", until=until)
        return [
            {"at": e.created_at.isoformat() if hasattr(e.created_at, "isoformat") else str(e.created_at),
             "actor": e.actor, "action": e.action,
             "from": (e.before or {}).get("version"), "version": (e.after or {}).get("version"),
             "reason": (e.after or {}).get("reason"), "forced": (e.after or {}).get("forced", False)}
            for e in entries
        ]


def serving_at(kind_key: str, when: datetime, *, settings: Settings | None = None) -> str | None:
    """Which version was champion at time ``when`` (None if none had been promoted yet)."""
    changes = alias_history(kind_key, settings=settings, until=when)
    return changes[-1]["version"] if changes else None


def _existing_version(kind: ModelKind, version: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_model_version(kind.registered_name, str(version))
    except MlflowException as exc:
        raise LifecycleError(f"{kind.registered_name} has no version {version}") from exc
    return str(version)


def _extra_gate_values(kind: ModelKind, version: str, settings: Settings, gates: dict) -> dict:
    """Values read from the version's artefact or other evaluations (ONNX parity, red-flag recall)."""
    extra = {}
    wanted = gates.get("extra", {})
    if not wanted:
        return extra
    model_dir, _ = registry.resolve_model_dir(f"models:/{kind.registered_name}/{version}", settings)
    meta_path = Path(model_dir) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "onnx_parity_max_abs_diff" in wanted:
        extra["onnx_parity_max_abs_diff"] = _find_number(meta, ("parity_max_abs_diff", "max_abs_diff", "parity"))
    if "redflag_recall" in wanted:

        extra["redflag_recall"] = redflag_recall()
    return extra


def _find_number(meta: dict, keys: tuple[str, ...]):
    for key in keys:
        value = meta.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict):
            for sub in ("max_abs_diff", "parity_max_abs_prob_diff", "fp32", "value"):
                if isinstance(value.get(sub), (int, float)):
                    return float(value[sub])
    return None


# --- CLI ------------------------------------------------------------------------------------


def _print(obj) -> None:
    def default(o):
        if isinstance(o, (GateReport, GateCheck)):
            return asdict(o)
        if isinstance(o, datetime):
            return o.isoformat()
        return str(o)

    print(json.dumps(obj, indent=2, default=default))


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    ev = sub.add_parser("evaluate", help="evaluate a registered version on a named data set")
    ev.add_argument("kind", choices=list(KINDS))
    ev.add_argument("--version", required=True)
    ev.add_argument("--dataset")
    cp = sub.add_parser("compare", help="two versions side by side with per-class deltas; --live: the shadow "
                        "challenger against the champion on live traffic")
    cp.add_argument("kind", choices=list(KINDS))
    cp.add_argument("a", nargs="?")
    cp.add_argument("b", nargs="?")
    cp.add_argument("--dataset")
    cp.add_argument("--live", action="store_true", help="live figures from shadow scores and outcomes (triage)")
    cp.add_argument("--since", help="--live: shadow scores at or after this ISO time")
    cp.add_argument("--until", help="--live: shadow scores before this ISO time")
    pr = sub.add_parser("promote", help="make a version champion if it passes the gates")
    pr.add_argument("kind", choices=list(KINDS))
    pr.add_argument("version")
    pr.add_argument("--gates")
    pr.add_argument("--force", action="store_true")
    pr.add_argument("--reason")
    pr.add_argument("--actor")
    pr.add_argument("--alias", default=registry.CHAMPION, choices=[registry.CHAMPION, registry.CHALLENGER])
    rb = sub.add_parser("rollback", help="move champion back to the previous (or a named) version")
    rb.add_argument("kind", choices=list(KINDS))
    rb.add_argument("--to")
    rb.add_argument("--reason", required=True)
    rb.add_argument("--actor")
    hi = sub.add_parser("history", help="alias changes, or which version served at a time")
    hi.add_argument("kind", choices=list(KINDS))
    hi.add_argument("--at", help="ISO time: print the version that was champion then")
    cd = sub.add_parser("card", help="print (and log) the model card of a version")
    cd.add_argument("kind", choices=list(KINDS))
    cd.add_argument("version")
    cd.add_argument("--no-log", action="store_true")
    return p


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or get_settings()
    registry.configure(settings)
    try:
        if args.verb == "evaluate":
            _print(evaluate_version(kind_of(args.kind), _existing_version(kind_of(args.kind), args.version),
                                    args.dataset, settings))
        elif args.verb == "compare" and args.live:
            if args.kind != "triage":
                raise LifecycleError("--live compares the triage shadow challenger; the DDI model has no shadow mode")
            _print(compare_live(settings, _time(args.since), _time(args.until), challenger=args.b or args.a))
        elif args.verb == "compare":
            if not (args.a and args.b):
                raise LifecycleError("compare needs two versions (or --live)")
            kind = kind_of(args.kind)
            a = evaluate_version(kind, _existing_version(kind, args.a), args.dataset, settings)
            b = evaluate_version(kind, _existing_version(kind, args.b), args.dataset, settings)
            _print(compare(a, b))
        elif args.verb == "promote":
            result = promote(args.kind, args.version, settings=settings, gates_path=args.gates, force=args.force,
                             reason=args.reason, actor=args.actor, alias=args.alias)
            _print({k: v for k, v in result.items() if k not in ("candidate", "champion_metrics")})
            return 0 if result["promoted"] else 3
        elif args.verb == "rollback":
            _print(rollback(args.kind, to=args.to, reason=args.reason, actor=args.actor, settings=settings))
        elif args.verb == "history":
            if args.at:
                when = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
                if when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)
                _print({"at": when, "version": serving_at(args.kind, when, settings=settings)})
            else:
                _print(alias_history(args.kind, settings=settings))
        elif args.verb == "card":

            print(model_card(kind_of(args.kind).registered_name, args.version, settings=settings,
                             log=not args.no_log))
    except (LifecycleError, registry.ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    return 0
