"""Synthetic prescriptions for load tests and benchmarks, drawn from the prescription gold set.

    python -m training synth-prescriptions --n 200000 --out var/synth/rx-200k.parquet [--seed 0]
        [--invalid-share 0.0]

SYNTHETIC DATA: no row is a real patient's prescription.  Every row is marked (``synthetic = true``, prescription
id ``SYNTH-<seed>-<n>``, prescriber ``synthetic``) and a data card is written beside the output
(``<out>.DATA_CARD.md``).  What is drawn, all from ``datasets/drugs/gold_prescriptions.jsonl`` (built by
``python -m training gold`` from the cited curated tables, DDInter pairs, RxSafeBench scenarios and hand-checked
cases; see docs/prescription-check.md):

- the patient: one gold case's patient object as it is (age, weight, renal/hepatic values, pregnancy,
  allergies, conditions, current medications);
- the items: 1-4 items (probabilities 0.55 / 0.25 / 0.13 / 0.07), each an item of a gold case as it is (drug
  or sig line, dose, unit, route, frequency), so doses are the gold set's doses, not invented ones;
- ``synth_from``: the gold case ids each row was drawn from.

The mix is therefore the gold set's (rich in unsafe cases: it exists to test the checker), not a pharmacy's
case mix; the figures it gives are throughput figures, not prevalence.  ``--invalid-share`` replaces that share
of rows with deliberately invalid ones (an item without drug or sig, a negative dose, a field the schema does
not know, a line that is not JSON) to exercise the rejects path; their ``synth_from`` says ``invalid:<kind>``.
Output: ``.parquet`` (the re-screen input columns) or ``.jsonl`` (one object per line), by suffix.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from serving.settings import CURATED_DRUG_TABLES_DIR

GOLD = CURATED_DRUG_TABLES_DIR / "gold_prescriptions.jsonl"
ITEM_COUNTS = (1, 2, 3, 4)
ITEM_WEIGHTS = (0.55, 0.25, 0.13, 0.07)
INVALID_KINDS = ("no_drug_or_sig", "negative_dose", "unknown_field", "not_json")
BATCH = 10_000

DATA_CARD = """# Synthetic prescriptions (data card)

**SYNTHETIC DATA. No row is a real patient's prescription.** Every row carries `synthetic = true`, a
prescription id `SYNTH-{seed}-<n>` and prescriber id `synthetic`.

- File: `{name}` ({n} rows, seed {seed}, invalid share {invalid_share}), written by
  `python -m training synth-prescriptions` (training/rx_synth.py) on {date}.
- Drawn from: `datasets/drugs/gold_prescriptions.jsonl` ({gold_cases} cases; sha256 `{gold_sha}`): each row takes
  one gold case's patient as it is and 1-4 gold items as they are (drug or sig line, dose, unit, route,
  frequency). No dose, drug or patient value is invented; combinations are random.
- `synth_from` lists the gold case ids a row was drawn from (`invalid:<kind>` for the deliberately invalid rows).
- Case mix: the gold set's, which is rich in unsafe cases (it exists to test the checker). Use the data for
  throughput and correctness-at-scale tests, not for prevalence or clinical statistics.
- Licence: as the gold set's sources (see docs/licences.md: DDInter-derived cases are non-commercial).
"""


def load_gold(path: Path = GOLD) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _invalid(kind: str, rng: random.Random, gold: list[dict]) -> dict | str:
    case = rng.choice(gold)
    rx = json.loads(json.dumps(case["prescription"]))
    if kind == "no_drug_or_sig":
        rx["items"] = [{"dose": 5, "unit": "mg"}]
    elif kind == "negative_dose":
        rx["items"] = [{**rx["items"][0], "dose": -5}]
    elif kind == "unknown_field":
        rx["items"] = [{**rx["items"][0], "dosage": "5 mg"}]
    else:
        return "{not json"
    return rx


def generate(n: int, seed: int = 0, invalid_share: float = 0.0, gold: list[dict] | None = None):
    """Yield ``(prescription_id, prescription dict or invalid text, synth_from)`` for ``n`` rows."""
    gold = gold or load_gold()
    rng = random.Random(seed)
    items = [(case["id"], item) for case in gold for item in case["prescription"]["items"]]
    for i in range(n):
        pid = f"SYNTH-{seed}-{i:07d}"
        if invalid_share and rng.random() < invalid_share:
            kind = rng.choice(INVALID_KINDS)
            yield pid, _invalid(kind, rng, gold), [f"invalid:{kind}"]
            continue
        patient_case = rng.choice(gold)
        picked = rng.sample(items, rng.choices(ITEM_COUNTS, ITEM_WEIGHTS)[0])
        rx = {"id": pid, "prescriber_id": "synthetic", "patient": patient_case["prescription"].get("patient") or {},
              "items": [item for _, item in picked]}
        yield pid, rx, [patient_case["id"], *[cid for cid, _ in picked]]


def write(out: Path, n: int, seed: int = 0, invalid_share: float = 0.0) -> Path:
    import hashlib
    import time

    gold = load_gold()
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = generate(n, seed, invalid_share, gold)
    if out.suffix == ".jsonl":
        with open(out, "w", encoding="utf-8") as fh:
            for pid, rx, origin in rows:
                if isinstance(rx, str):
                    fh.write(rx + "\n")
                else:
                    fh.write(json.dumps({"prescription_id": pid, "prescription": rx, "synthetic": True,
                                         "synth_from": origin}, separators=(",", ":")) + "\n")
    elif out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("prescription_id", pa.string()), ("prescription_json", pa.string()),
                            ("previous_json", pa.string()), ("synthetic", pa.bool_()),
                            ("synth_from", pa.list_(pa.string()))])
        with pq.ParquetWriter(out, schema) as writer:
            batch: list[dict] = []
            for pid, rx, origin in rows:
                text = rx if isinstance(rx, str) else json.dumps(rx, separators=(",", ":"))
                batch.append({"prescription_id": pid, "prescription_json": text, "previous_json": None,
                              "synthetic": True, "synth_from": origin})
                if len(batch) >= BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    else:
        raise ValueError(f"--out {out}: use a .parquet or .jsonl file name")
    card = out.with_name(out.name + ".DATA_CARD.md")
    card.write_text(DATA_CARD.format(seed=seed, name=out.name, n=n, invalid_share=invalid_share,
                                     date=time.strftime("%Y-%m-%d"), gold_cases=len(gold),
                                     gold_sha=hashlib.sha256(GOLD.read_bytes()).hexdigest()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training synth-prescriptions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True, help="how many prescriptions")
    parser.add_argument("--out", type=Path, required=True, help=".parquet or .jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--invalid-share", type=float, default=0.0,
                        help="share of deliberately invalid rows (exercises the rejects path)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if not 0 <= args.invalid_share <= 1:
        parser.error("--invalid-share must be between 0 and 1")
    if args.out.suffix not in {".parquet", ".jsonl"}:
        parser.error(f"--out {args.out}: use a .parquet or .jsonl file name")
    write(args.out, args.n, args.seed, args.invalid_share)
    print(f"{args.n} SYNTHETIC prescriptions written to {args.out} (data card: {args.out}.DATA_CARD.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
