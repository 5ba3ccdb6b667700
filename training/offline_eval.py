"""Command lines that evaluate on data files (the metric and report functions are in ``evaluation``).

    python -m training eval-rx [--kb PATH] [--gold FILE] [--sigs FILE] [--show-errors N] [--ddi-model]
    python -m training eval-acuity [--vignettes PATH] [--field vignette_text|opening_utterance] [--json]
    python -m training eval-redflags [--phrases PATH] [--table PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.acuity_eval import evaluate_acuity
from evaluation.acuity_eval import render_markdown as acuity_markdown
from evaluation.redflag_eval import DEFAULT_PHRASES_PATH, evaluate_redflags
from evaluation.redflag_eval import render_markdown as redflag_markdown
from evaluation.rx_eval import (
    GOLD,
    SIGS,
    evaluate_gold,
    evaluate_sigs,
    load_gold,
    load_sigs,
    markdown,
)
from serving.checker_service import CheckerService
from serving.components import load_checker
from serving.settings import get_settings
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
    args = parser.parse_args(argv)

    settings = get_settings()
    if args.kb is not None:
        settings = settings.model_copy(update={"kb_path": args.kb})
    print(ensure_kb(settings), file=sys.stderr)
    checker = load_checker(settings, model_status="rules-only: DDI model not requested")
    if args.ddi_model:

        service = CheckerService(settings)
        service.load()
        checker = service.require()
    gold = evaluate_gold(checker, load_gold(args.gold))
    sigs = evaluate_sigs(load_sigs(args.sigs)) if args.sigs.exists() else None
    print(f"KB {checker.kb_version}; model: {checker.model_version or '-'} ({checker.model_status})\n")
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
