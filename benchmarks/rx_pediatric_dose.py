"""Benchmark (not a test): in-process checks/s before and after weight-based paediatric dosing (issue 17).

    .venv/bin/python benchmarks/rx_pediatric_dose.py --base-src DIR --base-kb FILE [--kb FILE] [--n 3000] [--rounds 3]

``--base-src`` is a checkout of the code before the change (``git archive <commit> | tar -x -C DIR``) and
``--base-kb`` a KB artefact built from that checkout's tables; the current tree uses ``--kb`` (default
``var/kb/kb.json``).  Each variant runs in its own child process (the two cannot share one interpreter: same
package names), the variants alternate for ``--rounds`` rounds, and the median checks/s of each payload is
printed side by side with the ratio new/base, with the CPU model, flags and load average (the machine is
shared).  Payloads: the adult structured prescription of ``benchmarks/rx_check.py``, a child (4 years,
16 kg) with five weight-based paediatric items above their limits (the new code reports them: findings cost
time), and the same child with every item within its limits (the rule's own cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADULT = {"patient": {"age_years": 58, "weight_kg": 80},
         "items": [{"drug": "amlodipine", "dose": 5, "unit": "mg", "frequency": "daily"},
                   {"drug": "metformin", "dose": 500, "unit": "mg", "frequency": "bid"},
                   {"drug": "atorvastatin", "dose": 20, "unit": "mg", "frequency": "qhs"},
                   {"drug": "aspirin", "dose": 81, "unit": "mg", "frequency": "daily"},
                   {"drug": "omeprazole", "dose": 20, "unit": "mg", "frequency": "daily"}]}
CHILD = {"patient": {"age_years": 4, "weight_kg": 16},
         "items": [{"sig": "paracetamol 1000 mg po q6h"}, {"sig": "amoxicillin 400 mg po bid"},
                   {"sig": "ibuprofen 150 mg po q8h"}, {"sig": "cetirizine 10 mg po daily"},
                   {"drug": "albuterol", "dose": 2, "unit": "mg", "frequency": "tid"}]}
CHILD_OK = {"patient": {"age_years": 4, "weight_kg": 16},  # the same child, every item within its limits
            "items": [{"sig": "paracetamol 240 mg po q6h"}, {"sig": "amoxicillin 400 mg po bid"},
                      {"sig": "ibuprofen 150 mg po q8h"}, {"sig": "loratadine 5 mg po daily"},
                      {"drug": "albuterol", "dose": 2, "unit": "mg", "frequency": "tid"}]}

CHILD_CODE = r"""
import json, sys, time
from prescription_check import Checker, Prescription
kb, n, payloads = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
checker = Checker.load(kb, warm=True)
out = {}
for name, payload in payloads.items():
    rx = Prescription.model_validate(payload)
    for _ in range(100):
        res = checker.check(rx)
    t0 = time.perf_counter()
    for _ in range(n):
        res = checker.check(rx)
    out[name] = {"per_s": n / (time.perf_counter() - t0),
                 "dose_findings": sorted(f.rule_id for f in res.findings if f.category == "dose")}
print(json.dumps(out))
"""


def run(src: Path, kb: Path, n: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD_CODE, str(kb), str(n), json.dumps({"adult": ADULT,
                          "child": CHILD, "child within limits": CHILD_OK})], cwd=src, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    simd = [f for f in ("sse4_2", "avx", "avx2", "avx512f", "fma") if f in flags]
    return f"{model}; {os.cpu_count()} CPUs; flags {' '.join(simd)}; load average {os.getloadavg()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-src", type=Path, required=True)
    ap.add_argument("--base-kb", type=Path, required=True)
    ap.add_argument("--kb", type=Path, default=ROOT / "var" / "kb" / "kb.json")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(cpu())
    results: dict[str, list[dict]] = {"base": [], "new": []}
    for _ in range(args.rounds):
        results["base"].append(run(args.base_src, args.base_kb, args.n))
        results["new"].append(run(ROOT, args.kb, args.n))
    print(f"load average after: {os.getloadavg()}")
    print("| payload | base checks/s | new checks/s | new / base | base dose findings | new dose findings |")
    print("|---|---|---|---|---|---|")
    for name in ("adult", "child", "child within limits"):
        b = statistics.median(r[name]["per_s"] for r in results["base"])
        v = statistics.median(r[name]["per_s"] for r in results["new"])
        print(f"| {name} | {b:,.0f} | {v:,.0f} | {v / b:.2f} | {', '.join(results['base'][0][name]['dose_findings']) or '-'}"
              f" | {', '.join(results['new'][0][name]['dose_findings']) or '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
