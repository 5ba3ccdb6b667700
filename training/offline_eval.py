"""Command lines that evaluate on data files (the metric and report functions are in ``evaluation``).

    python -m training eval-rx [--kb PATH] [--gold FILE] [--sigs FILE] [--show-errors N] [--ddi-model]
    python -m training eval-acuity [--vignettes PATH] [--field vignette_text|opening_utterance] [--json]
    python -m training eval-redflags [--phrases PATH] [--table PATH] [--json]
    python -m training eval-urgency [--model URI_OR_FOLDER] [--sets blind,acuitybench] [--log-mlflow] [--json]
    (sets: blind = urgency_blind_v1.csv, blind2 = urgency_blind_v2.csv, acuitybench, validation)
    python -m training eval-ddi-coverage [--kb PATH] [--pairs CSV] [--ddi-model] [--show-misses N] [--json]
    python -m training eval-routing [--model URI_OR_FOLDER] [--set CSV] [--log-mlflow] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.ddi_coverage import evaluate_coverage, load_pairs, regimen_report
from evaluation.ddi_coverage import load_regimens as load_ddi_regimens
from evaluation.ddi_coverage import markdown as coverage_markdown
from evaluation.ddi_coverage import regimen_markdown as ddi_regimen_markdown
from evaluation.acuity_eval import evaluate_acuity
from evaluation.acuity_eval import render_markdown as acuity_markdown
from evaluation.redflag_eval import DEFAULT_PHRASES_PATH, evaluate_redflags
from evaluation.redflag_eval import render_markdown as redflag_markdown
from evaluation.regimen_eval import REGIMENS, evaluate_regimens, load_regimens
from evaluation.regimen_eval import markdown as regimen_markdown
from evaluation.rx_eval import (
    GOLD,
    SIGS,
    evaluate_gold,
    evaluate_sigs,
    load_gold,
    load_sigs,
    markdown,
)
from evaluation.routing_eval import read_rows, routing_report
from evaluation.urgency_eval import evaluate_urgency, headline, pipeline
from serving.checker_service import CheckerService
from prescription_check import Checker
from prescription_check.tiers import PRESETS
from serving.components import load_checker, load_triage_classifier, policy_from_settings
from serving.registry import configure
from serving.settings import get_settings
from training import urgency_train
from training.kb_build import ensure_kb
from training.sources import source_file
from triage.redflags import RedFlagMatcher


def default_vignettes_path() -> Path:
    return source_file("acuitybench_seed100", "vignettes.csv")


def rx_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training eval-rx",
                                     description="Evaluate the prescription checker on the gold set and the sig "
                                                 "parser on the sig-line set (markdown).")
    parser.add_argument("--kb", type=Path, default=None)
    parser.add_argument("--gold", type=Path, default=GOLD)
    parser.add_argument("--sigs", type=Path, default=SIGS)
    parser.add_argument("--show-errors", type=int, default=0)
    parser.add_argument("--ddi-model", action="store_true",
                        help="also load the registered DDI model (settings.ddi_model_uri): predicted interactions "
                             "then count towards verdicts, so false alarms on safe cases can be measured")
    parser.add_argument("--policy", default="default", choices=sorted(PRESETS),
                        help="queue settings (alert tiers) to evaluate under: the shipped presets")
    args = parser.parse_args(argv)

    checker = evaluation_checker(args.kb, args.ddi_model, args.policy)
    gold = evaluate_gold(checker, load_gold(args.gold))
    sigs = evaluate_sigs(load_sigs(args.sigs)) if args.sigs.exists() else None
    print(f"KB {checker.kb_version}; model: {checker.model_version or '-'} ({checker.model_status}); "
          f"policy {args.policy}\n")
    print(markdown(gold, sigs))
    if args.show_errors:
        for title, rows in (("misses", gold["misses"]), ("false positives", gold["false_positives"]),
                            ("sig errors", sigs["errors"] if sigs else [])):
            print(f"\n### {title}")
            for m in rows[:args.show_errors]:
                print("-", m)
    return 0


def acuity_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training eval-acuity",
                                     description="Urgency measured on AcuityBench seed100 (evaluation only).")
    parser.add_argument("--vignettes", default=None, help="path to vignettes.csv (default: verified source file)")
    parser.add_argument("--field", default="vignette_text", choices=["vignette_text", "opening_utterance"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = evaluate_acuity(args.vignettes or default_vignettes_path(), field=args.field)
    print(json.dumps(report, indent=2) if args.json else acuity_markdown(report))
    return 0


def redflags_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training eval-redflags",
                                     description="Recall and false-positive rate of the red-flag matcher on the "
                                                 "hand-written test phrases; exit 1 on a missed emergency.")
    parser.add_argument("--phrases", default=str(DEFAULT_PHRASES_PATH))
    parser.add_argument("--table", default=None)
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    report = evaluate_redflags(args.phrases, RedFlagMatcher(args.table))
    print(json.dumps(report, indent=2) if args.json else redflag_markdown(report))
    if report["missed_emergencies"]:
        print(f"\nFAIL: {len(report['missed_emergencies'])} missed emergencies", file=sys.stderr)
        return 1
    return 0


def _urgency_markdown(reports: dict[str, dict], title: str) -> str:
    keys = ("n", "exact_accuracy", "dichotomised_accuracy", "three_level_accuracy", "emergency_recall",
            "under_triage_rate", "over_triage_rate", "trap_emergency_rate")
    lines = [f"### {title}", "", "| set | decision | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
    for name, (with_model, rules_only) in reports.items():
        for label, report in (("red flags + urgency head + rules", with_model), ("red flags + rules only", rules_only)):
            if report is None:
                continue
            h = headline(report)
            cells = [f"{int(h[k])}" if k == "n" else (f"{h[k]:.1%}" if k in h else "-") for k in keys]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    for name, (with_model, _) in reports.items():
        lines += ["", f"{name}: emergencies missed {with_model['overall']['emergency_under_triaged']} of "
                      f"{with_model['overall']['n_emergency']}; decided by {with_model['decided_by']}"]
        traps, rescored = with_model["traps"], with_model.get("rescored")
        if traps["n"]:
            lines.append(f"{name}: traps raised to emergency {traps['raised_to_emergency']} of {traps['n']}, by path "
                         f"{traps['paths']} (red_flag: a rule fired; model_not_rescored: the head, nothing denied or "
                         f"past found to remove; model_rescored: still an emergency without the denied / past words)")
        if rescored:
            lines.append(f"{name}: re-scored (second encoder pass) {rescored['rescored']} of {rescored['texts']} texts")
        if with_model["by_group"] and name in ("blind", "blind2", "blind3", "blind4", "blind5", "valtraps"):
            lines += ["", "| style | n | exact | dichotomised | three-level | emergency recall | under-triage |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for group, m in with_model["by_group"].items():
                lines.append(f"| {group} | {m['n']} | {m['exact_accuracy']:.0%} | {m['dichotomised_accuracy']:.0%} | "
                             f"{m['three_level_accuracy']:.0%} | {m['emergency_recall']:.0%} | "
                             f"{m['under_triage_rate']:.0%} |")
    return "\n".join(lines)


def urgency_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training eval-urgency",
        description="The service's urgency decision (red flags + urgency head + rules) on the blind urgency set "
                    "and AcuityBench, beside red flags + rules alone.")
    parser.add_argument("--model", default=None, help="triage model URI or folder (default: RXT_TRIAGE_MODEL_URI)")
    parser.add_argument("--sets", default="blind,acuitybench")
    parser.add_argument("--log-mlflow", action="store_true",
                        help="log the figures to the run that trained the urgency head (meta.json urgency_run_id, "
                             "else run_id) as urgency_<set>_*")
    parser.add_argument("--no-respect-negation", action="store_true",
                        help="leave out the re-scoring of texts whose urgent mentions are denied or past "
                             "(triage.urgency.respect_mentions), to measure what it changes")
    parser.add_argument("--negation-scopes", action=argparse.BooleanOptionalAction, default=False,
                        help="also remove the NegEx-style scopes of triage.mentions before the re-score, not only the "
                             "red-flag matcher's blocked mentions (off by default, as in the service: "
                             "RXT_NEGATION_SCOPES), to measure them")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    uri = args.model or settings.triage_model_uri
    classifier = load_triage_classifier(uri, settings)
    loaders = {"blind": urgency_train.blind_rows, "blind2": urgency_train.blind_rows_v2,
               "blind3": urgency_train.blind_rows_v3, "blind4": urgency_train.blind_rows_v4,
               "blind5": urgency_train.blind_rows_v5, "valtraps": urgency_train.validation_trap_rows,
               "acuitybench": urgency_train.acuity_rows,
               "validation": urgency_train.validation_rows}
    unknown = [s for s in args.sets.split(",") if s not in loaders]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; choose from {sorted(loaders)}")
    sets = {name: loaders[name]() for name in args.sets.split(",")}
    matcher = RedFlagMatcher()
    with_model = urgency_train.evaluate(classifier, sets, matcher, respect_negation=not args.no_respect_negation,
                                        scopes=args.negation_scopes)
    rules_only = {name: evaluate_urgency(rows, pipeline(matcher, None)) for name, rows in sets.items()}
    reports = {name: (with_model[name], rules_only[name]) for name in sets}
    if args.json:
        print(json.dumps({n: {"model": m, "rules_only": r} for n, (m, r) in reports.items()}, indent=2, default=float))
    else:
        head = classifier.urgency_head
        print(_urgency_markdown(reports, f"model {uri} (version {classifier.version or 'local'}; urgency head "
                                         f"{head.info.get('version') if head else 'none'})"))
    if args.log_mlflow:
        import mlflow

        run_id = classifier.meta.get("urgency_run_id") or classifier.meta.get("run_id")
        if not run_id:
            print("error: the model's meta.json names no training run", file=sys.stderr)
            return 1
        configure(settings)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(urgency_train.flat_metrics(with_model))
            mlflow.log_metrics({f"rules_only_{k}": v for k, v in urgency_train.flat_metrics(rules_only).items()})
            mlflow.log_dict({n: {"model": m, "rules_only": r} for n, (m, r) in reports.items()},
                            "urgency_eval/report.json")
        print(f"logged to MLflow run {run_id}", file=sys.stderr)
    return 0


ROUTING_BLIND = urgency_train.BLIND_SET.parent / "routing_blind_v1.csv"


def routing_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training eval-routing",
                                     description="Routing on the blind routing set: top-1, top-3, hand-offs and "
                                                 "accuracy when answering, per center and per style.")
    parser.add_argument("--model", default=None, help="triage model URI or folder (default: RXT_TRIAGE_MODEL_URI)")
    parser.add_argument("--set", type=Path, default=ROUTING_BLIND)
    parser.add_argument("--log-mlflow", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    classifier = load_triage_classifier(args.model or settings.triage_model_uri, settings)
    report = routing_report(classifier, read_rows(args.set))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        def line(name, b):
            sel = "-" if b.get("selective_accuracy") is None else f"{b['selective_accuracy']:.1%}"
            return f"| {name} | {b['n']} | {b['top1']:.1%} | {b['top3']:.1%} | {b['handed_off']:.1%} | {sel} |"

        head = ["| | n | top-1 | top-3 | handed off | accuracy when answering |", "|---|---:|---:|---:|---:|---:|"]
        print("\n".join([f"### routing blind set, model {classifier.version or 'local'}", ""] + head
                        + [line("all", report["overall"])] + ["", "per center", ""] + head
                        + [line(c, b) for c, b in report["by_center"].items()] + ["", "per style", ""] + head
                        + [line(s, b) for s, b in report["by_style"].items()]
                        + ["", "most frequent confusions: " + ", ".join(
                            f"{k} ({v})" for k, v in sorted(report["confusions"].items(), key=lambda kv: -kv[1])[:12])]))
    if args.log_mlflow:
        import mlflow

        run_id = classifier.meta.get("run_id")
        configure(settings)
        with mlflow.start_run(run_id=run_id):
            o = report["overall"]
            # the default set keeps its historical keys (routing_blind_*); another set is named by its file
            key = "routing_blind" if Path(args.set).resolve() == ROUTING_BLIND.resolve() else Path(args.set).stem
            mlflow.log_metrics({f"{key}_top1": o["top1"], f"{key}_top3": o["top3"],
                                f"{key}_handed_off": o["handed_off"],
                                f"{key}_selective_accuracy": o["selective_accuracy"] or 0.0})
            mlflow.log_dict(report, "routing_eval/report.json" if key == "routing_blind" else f"routing_eval/{key}.json")
    return 0


def regimens_main(argv: list[str] | None = None) -> int:
    """``python -m training eval-regimens``: share of everyday, guideline-cited regimens sent to review."""
    parser = argparse.ArgumentParser(prog="python -m training eval-regimens",
                                     description="Everyday guideline regimens: share sent to review, findings and "
                                                 "counselling notes per regimen, rules that fire (markdown).")
    parser.add_argument("--kb", type=Path, default=None)
    parser.add_argument("--regimens", type=Path, default=REGIMENS)
    parser.add_argument("--ddi-model", action="store_true", help="also load the registered DDI model")
    parser.add_argument("--policy", default="default", choices=sorted(PRESETS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    checker = evaluation_checker(args.kb, args.ddi_model, args.policy)
    report = evaluate_regimens(checker, load_regimens(args.regimens))
    print(json.dumps(report, indent=2) if args.json else
          f"KB {checker.kb_version}; model: {checker.model_version or '-'} ({checker.model_status}); "
          f"policy {args.policy}\n\n" + regimen_markdown(report, f"Everyday regimens, policy {args.policy}"))
    return 0



def evaluation_checker(kb: Path | None, ddi_model: bool, policy: str | None = None) -> Checker:
    """The checker an evaluation command measures: the configured (or given) KB, built when missing or stale,
    rules only unless ``ddi_model`` (then the registered DDI model, as the service loads it), under a shipped
    queue-settings preset when ``policy`` names one."""
    settings = get_settings()
    if kb is not None:
        settings = settings.model_copy(update={"kb_path": kb})
    print(ensure_kb(settings), file=sys.stderr)
    checker = load_checker(settings, model_status="rules-only: DDI model not requested")
    if ddi_model:
        service = CheckerService(settings)
        service.load()
        checker = service.require()
    return checker if policy is None else with_preset(checker, settings, policy)

def with_preset(checker: Checker, settings, name: str) -> Checker:
    """The same checker (KB, model) under one of the shipped queue-settings presets."""
    return Checker(checker.kb, policy_from_settings(settings, PRESETS[name]), checker.ddi, checker.model_status)


def ddi_coverage_main(argv: list[str] | None = None) -> int:
    """Interaction coverage on an outside set of documented pairs (default: the blind label set)."""
    parser = argparse.ArgumentParser(prog="python -m training eval-ddi-coverage",
                                     description="Share of documented interacting pairs the checker flags.")
    parser.add_argument("--kb", type=Path, default=None)
    parser.add_argument("--pairs", type=Path, default=LABEL_PAIRS)
    parser.add_argument("--ddi-model", action="store_true", help="also load the registered DDI model")
    parser.add_argument("--show-misses", type=int, default=0)
    parser.add_argument("--regimens", type=Path, default=None,
                        help="also check these guideline regimens (CSV with a '|'-separated 'drugs' column) and count "
                             "predicted findings per regimen, e.g. datasets/drugs/eval/regimens_ddi_check.csv")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    checker = evaluation_checker(args.kb, args.ddi_model)
    report = evaluate_coverage(checker, load_pairs(args.pairs))
    regimens = regimen_report(checker, load_ddi_regimens(args.regimens)) if args.regimens else None
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "misses"} | {"kb_version": checker.kb_version}
                         | ({"regimens": regimens} if regimens else {})))
        return 0
    print(f"KB {checker.kb_version}; model: {checker.model_version or '-'} ({checker.model_status})\n")
    print(coverage_markdown(report, title=args.pairs.name))
    for m in report["misses"][:args.show_misses]:
        print("-", m)
    if regimens:
        print(ddi_regimen_markdown(regimens))
        for r in regimens["rows"]:
            if r["predicted_list"] or r["documented"]:
                print(f"- {r['regimen_id']}: documented {r['documented']}; predicted {r['predicted_list']}")
    return 0


LABEL_PAIRS = Path(__file__).resolve().parents[1] / "datasets" / "drugs" / "eval" / "label_ddi_pairs.csv"
