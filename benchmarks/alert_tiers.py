"""Benchmark (not a test): what the alert-tier step costs per prescription check, in-process, rules only.

    .venv/bin/python benchmarks/alert_tiers.py [--kb PATH] [--n 3000] [--rounds 3]

Side by side in one run, interleaved rounds, same KB and prescriptions: the verdict as before the tiers
(``Policy.verdict``), the tiers under the ``default`` preset (management table lookups) and under ``strict``.
Prints CPU model, flags and load average; the ratio to "before" is the figure (issue 17's goal: no worse than
half of today's checks per second).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.rx_check import RISKY, STRUCTURED  # noqa: E402

HEART_FAILURE = {"patient": {"age_years": 68, "egfr": 65},
                 "items": [{"drug": "ramipril", "dose": 2.5, "unit": "mg", "frequency": "bid"},
                           {"drug": "bisoprolol", "dose": 2.5, "unit": "mg", "frequency": "qd"},
                           {"drug": "spironolactone", "dose": 25, "unit": "mg", "frequency": "qd"},
                           {"drug": "dapagliflozin", "dose": 10, "unit": "mg", "frequency": "qd"},
                           {"drug": "furosemide", "dose": 40, "unit": "mg", "frequency": "qd"}]}


def main(argv=None) -> int:
    from evaluation.cpu_info import describe_cpu
    from prescription_check import Checker, Prescription
    from prescription_check.policy import Policy
    from prescription_check.tiers import PRESETS
    from serving.components import policy_from_settings
    from serving.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--kb", default=None)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    settings = Settings(kb_path=args.kb) if args.kb else Settings()
    base = Checker.load(settings.resolved_kb_path())

    @dataclass(frozen=True)
    class BeforeTiers(Policy):
        def classify(self, findings, atc_of=None, daily_mg=None):
            return self.verdict(findings), []

    before = policy_from_settings(settings)
    variants = {
        "before tiers (Policy.verdict)": Checker(base.kb, BeforeTiers(before.block, before.review,
                                                                      before.ddi_review_threshold)),
        "tiers, default": Checker(base.kb, policy_from_settings(settings, PRESETS["default"])),
        "tiers, strict": Checker(base.kb, policy_from_settings(settings, PRESETS["strict"])),
    }
    print(describe_cpu())
    print(f"load average at start: {os.getloadavg()}")
    cases = {"5 structured items": STRUCTURED, "heart failure, 5 items (5 counselled pairs)": HEART_FAILURE,
             "risky + 4 current meds": RISKY}
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for cname, payload in cases.items():
            rx = Prescription.model_validate(payload)
            for vname, checker in variants.items():
                for _ in range(30):
                    checker.check(rx)
                t0 = time.perf_counter()
                for _ in range(args.n):
                    res = checker.check(rx)
                rate = args.n / (time.perf_counter() - t0)
                best[(cname, vname)] = max(best.get((cname, vname), 0.0), rate)
                best[(cname, "findings")] = len(res.findings)
    print(f"load average at end: {os.getloadavg()}\n")
    print("| prescription | findings | " + " | ".join(variants) + " | default / before |")
    print("|---|---:|" + "---:|" * len(variants) + "---:|")
    for cname in cases:
        rates = [best[(cname, v)] for v in variants]
        print(f"| {cname} | {int(best[(cname, 'findings')])} | " + " | ".join(f"{r:,.0f}/s" for r in rates)
              + f" | {rates[1] / rates[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
