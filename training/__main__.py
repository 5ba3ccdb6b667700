"""``python -m training <command> ...``: one CLI for ML engineers.

Commands are dispatched to their modules so that each imports only what it needs
(``kb`` never imports torch).  ``python -m training --help`` lists them.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    # name: (module, function, help)
    "bootstrap": ("training.bootstrap", "main", "build the KB and train + register missing models (scripts/run)"),
    "train": (None, None, "train <triage|ddi> [options]: train, evaluate, export and register a new version"),
    "triage": ("training.triage_train", "main", "same as 'train triage'"),
    "ddi": ("training.ddi_train", "main", "same as 'train ddi'"),
    "kb": ("training.kb_build", "main", "build the prescription knowledge-base artefact"),
    "urgency-head": ("training.urgency_refit", "main", "refit the urgency head of a copy; --register: own version, gated"),
    "distill": ("training.distill", "main", "distil a registered triage model into a smaller student (own version)"),
    "register": ("training.register_folder", "main",
                 "register a triage artefact folder built elsewhere (own version, evaluated, gated)"),
    "gold": ("training.rx_gold", "main", "rebuild the prescription gold set datasets/drugs/gold_prescriptions.jsonl"),
    "eval-rx": ("training.offline_eval", "rx_main", "the checker on the gold set, the sig parser on its line set"),
    "eval-regimens": ("training.offline_eval", "regimens_main", "everyday guideline regimens: share sent to review"),
    "eval-acuity": ("training.offline_eval", "acuity_main", "urgency rules on AcuityBench seed100"),
    "eval-redflags": ("training.offline_eval", "redflags_main", "red-flag matcher on its phrase set"),
    "eval-urgency": ("training.offline_eval", "urgency_main", "urgency decision on the blind set and AcuityBench"),
    "eval-routing": ("training.offline_eval", "routing_main", "routing on the blind routing set"),
    "exemplars": ("training.exemplar_eval", "main", "nearest-exemplar sidecar for an artefact, head vs blend report"),
    "eval-ddi-coverage": ("training.offline_eval", "ddi_coverage_main", "interaction coverage on the blind label-pair set"),
    "evaluate": ("training.lifecycle", "main", "evaluate a registered version on a named data set"),
    "compare": ("training.lifecycle", "main", "two versions side by side, per-class deltas"),
    "promote": ("training.lifecycle", "main", "move the champion alias to a version that passes the gates"),
    "rollback": ("training.lifecycle", "main", "move the champion alias back, with a reason (audited)"),
    "history": ("training.lifecycle", "main", "alias changes; --at TIME says which version was serving then"),
    "card": ("training.lifecycle", "main", "the model card of a registered version"),
    "snapshot": ("training.feedback_data", "main", "snapshot feedback|decisions: versioned Parquet of outcomes"),
    "monitor": ("training.monitor", "main", "drift and quality report of live triage traffic per time window"),
    "rescreen": ("training.rescreen", "main", "re-screen stored prescriptions on a KB/model version (local or Spark)"),
    "export-prescriptions": ("training.rx_export", "main", "the review database's prescriptions as rescreen input"),
    "synth-prescriptions": ("training.rx_synth", "main", "synthetic prescriptions from the gold set, for load"),
}
TRAINERS = {"triage": "training.triage_train", "ddi": "training.ddi_train"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: python -m training <command> [options]\n\ncommands:")
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:<14} {text}")
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"\nerror: unknown command {argv[0]!r}")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    command = argv[0]
    if command == "train":
        if len(argv) < 2 or argv[1] not in TRAINERS:
            print(f"usage: python -m training train <{'|'.join(TRAINERS)}> [options]")
            return 2
        return int(importlib.import_module(TRAINERS[argv[1]]).main(argv[2:]) or 0)
    module_name, function, _ = COMMANDS[command]
    entry = getattr(importlib.import_module(module_name), function)
    if module_name == "training.lifecycle":
        return int(entry(argv) or 0)
    return int(entry(argv[1:]) or 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["rescreen"]:
        # the process is the re-screen job's: spaCy (the checker's sig parser) need not import torch, ~4 s and
        # ~180 MB (training.rescreen_core.keep_torch_out; the Spark workers do the same)
        sys.modules.setdefault("torch", None)
    raise SystemExit(main())
