"""The evaluation command lines over the blind sets (routing, urgency) on the small fixture model."""

from __future__ import annotations

from evaluation.routing_eval import read_rows, routing_report
from training import offline_eval
from triage.classifier import TriageClassifier


def test_routing_report_counts_top_k_hand_offs_and_styles(triage_model_dir):
    clf = TriageClassifier.from_folder(triage_model_dir, intra_op_threads=1)
    rows = read_rows(offline_eval.ROUTING_BLIND)[:30]
    report = routing_report(clf, rows)
    o = report["overall"]
    assert o["n"] == 30 and 0 <= o["top1"] <= o["top3"] <= 1 and 0 <= o["handed_off"] <= 1
    assert sum(b["n"] for b in report["by_center"].values()) == 30
    assert set(report["by_style"]) == {r["style"] for r in rows}
    wrong = sum(v for v in report["confusions"].values())
    assert wrong == round(30 * (1 - o["top1"]))


def test_routing_cli_prints_the_table(triage_model_dir, capsys):
    assert offline_eval.routing_main(["--model", str(triage_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "| all | 264 |" in out and "per center" in out and "per style" in out
