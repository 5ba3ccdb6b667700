"""The gold set and the sig-line set, scored for real.  These assert the issue's targets and can fail."""

from collections import Counter

import pytest

from evaluation.rx_eval import (
    GOLD,
    SIGS,
    evaluate_gold,
    evaluate_sigs,
    load_gold,
    load_sigs,
    summarise,
)


@pytest.fixture(scope="module")
def gold_cases():
    return load_gold(GOLD)


def test_gold_set_shape(gold_cases):
    assert len(gold_cases) >= 300
    prov = Counter(c["provenance"].split(":")[0] for c in gold_cases)
    assert {"table", "rxsafebench", "hand-checked", "ddinter"} <= set(prov)
    assert sum(c["unsafe"] for c in gold_cases) >= 100 and sum(not c["unsafe"] for c in gold_cases) >= 50
    for c in gold_cases:
        assert c["provenance"] and "prescription" in c and isinstance(c["expected"], list)


def _current_cases(rx_checker, gold_cases):
    """The committed gold set, with its table-derived part re-derived from the tables as they are now (the
    tables are edited by another area; a stale committed copy must not hide or fake a regression)."""
    from training import rx_gold as b

    b._KB = rx_checker.kb
    fresh = b.from_tables(rx_checker.kb, b.CURATED_DIR)
    for case in fresh:
        case["prescription"]["items"] = [{k: v for k, v in it.items() if v is not None}
                                         for it in case["prescription"]["items"]]
    committed = [c for c in gold_cases if not c["provenance"].startswith("table:")]
    stale = {c["id"] for c in gold_cases if c["provenance"].startswith("table:")} ^ {c["id"] for c in fresh}
    if stale:
        print(f"note: committed gold set is stale for {len(stale)} table cases; "
              "run python -m training gold")
    return fresh + committed


def test_gold_targets(rx_checker, gold_cases):
    res = evaluate_gold(rx_checker, _current_cases(rx_checker, gold_cases))
    s = summarise(res)
    # the targets of issue 4 on the KB-derived and hand-checked cases
    assert s["core_finding_recall"] >= 0.95, res["misses"][:10]
    assert s["precision"] >= 0.90, res["false_positives"][:10]
    assert s["safe_false_alarm"] <= 0.05
    # hepatic rows (table-derived, with safe controls at grade none / below the row's grade / within the maximum)
    hep = res["per_category"]["hepatic"]
    assert hep["expected"] >= 15 and hep["found"] == hep["expected"] and hep.get("fp", 0) == 0, res["misses"][:10]
    # RxSafeBench measures KB coverage against an external source: reported, with a floor
    rxs = res["per_provenance"]["rxsafebench"]
    assert rxs["found"] / rxs["expected"] >= 0.5


def test_sig_parser_accuracy():
    rows = load_sigs(SIGS)
    assert len(rows) >= 150
    res = evaluate_sigs(rows)
    for field, acc in res["accuracy"].items():
        assert acc >= 0.95, (field, acc, [e for e in res["errors"] if e[1] == field][:5])
