"""The interaction detector's data rules, calibration and threshold choice (training.ddi_detect)."""

import numpy as np
import pandas as pd
import pytest

from training import ddi_data
from training.ddi_detect import (
    binary_metrics,
    calibrate,
    choose_threshold,
    detector_pairs,
    isotonic,
    kb_listed_pairs,
)


def _table(atc):
    names = sorted(atc)
    return ddi_data.DrugTable(names, [atc[n] for n in names], [None] * len(names), np.ones(len(names), bool),
                              {n: i for i, n in enumerate(names)})


def test_detector_pairs_negatives_are_observable_unlisted_pairs_of_well_documented_drugs():
    # a, b, c, d well documented (degree >= 2); f has one pair only; c and d have ATC codes only in letters whose
    # DDInter files the shared copy lacks (C, N), so c + d cannot be a negative (DDInter may list it there)
    atc = {"a": ["A10BA02"], "b": ["B01AA03"], "c": ["C07AB02"], "d": ["N06AB06"], "f": ["A02BC01"]}
    listed = pd.DataFrame({"drug_a": ["a", "a", "b", "d", "a"], "drug_b": ["b", "c", "c", "f", "d"],
                           "level": ["major", "unknown", "moderate", "minor", "minor"]})
    d = detector_pairs(listed, _table(atc), min_degree=2, limit=None, seed=0)
    got = {(a, b): y for a, b, y in zip(d.pairs.drug_a, d.pairs.drug_b, d.y)}
    assert set(d.drugs) == {"a", "b", "c", "d"}
    assert got == {("a", "b"): 1, ("a", "c"): 1, ("a", "d"): 1, ("b", "c"): 1, ("b", "d"): 0}
    assert d.stats["listed_pairs"] == 4 and d.stats["positive_share"] == pytest.approx(0.8)
    # a pair another source (the KB) lists is not taken as a negative
    rows = kb_listed_pairs({"b|d": {}, "x|y": {}}, _table(atc).aliases)
    d2 = detector_pairs(listed, _table(atc), min_degree=2, limit=None, seed=0, exclude_rows=rows)
    assert ("b", "d") not in set(zip(d2.pairs.drug_a, d2.pairs.drug_b)) and d2.stats["excluded_other_sources"] == 1


def test_threshold_is_the_lowest_probability_meeting_the_precision_target():
    p = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 1, 1, 0, 1, 0, 0])
    assert choose_threshold(p, y, 0.8, min_flagged=1) == 0.6   # 5 of 6 flagged at >= 0.6 are positive
    assert choose_threshold(p, y, 0.9, min_flagged=1) == 0.8
    assert choose_threshold(p, y, 0.8, min_flagged=10) == 1.01  # never: too few pairs to trust
    m = binary_metrics(y, p, 0.6)
    assert (m["flagged"], m["precision"], m["recall"]) == (6, pytest.approx(5 / 6), 1.0)
    assert m["negatives_flagged_share"] == pytest.approx(1 / 3)


def test_isotonic_calibration_is_monotone_and_matches_observed_rates():
    rng = np.random.default_rng(0)
    raw = rng.random(4000)
    y = (rng.random(4000) < raw ** 2).astype(int)  # true probability raw**2: the raw score is over-confident
    xs, ys = isotonic(raw, y)
    cal = calibrate(np.array([0.1, 0.5, 0.9]), xs, ys)
    assert np.all(np.diff(cal) >= 0)
    assert cal == pytest.approx([0.01, 0.25, 0.81], abs=0.08)
