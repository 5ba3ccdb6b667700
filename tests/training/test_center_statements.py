"""Center text from public condition pages (issue 12): the table's schema and provenance, the generated
complaints (provenance kept, training split only, nothing near a held-out text), the wiring into the triage
training data, and the table's bad-input errors."""

from __future__ import annotations

import random
import re
from urllib.parse import urlparse

import pandas as pd
import pytest

from serving.settings import PROJECT_ROOT, get_settings
from training import center_statements as cs
from training import triage_train
from triage.taxonomy import EMERGENCY_CENTER, load_taxonomy

BLIND_DIR = PROJECT_ROOT / "datasets" / "triage" / "blind"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return cs.load_center_statements()


def test_every_row_has_a_url_and_a_routable_center(table):
    routable = set(load_taxonomy().model_labels())
    assert len(table) >= 300 and table["statement_id"].is_unique
    for url in table["source_url"]:
        parsed = urlparse(url)
        assert parsed.scheme in ("http", "https") and parsed.netloc, url
    assert set(table["center"]) <= routable and EMERGENCY_CENTER not in set(table["center"])
    assert set(table["wording"]) == {"page", "derived"} and set(table["population"]) <= set(cs.POPULATIONS)
    assert (table["statement"].str.len() > 0).all() and (table["condition"].str.len() > 0).all()
    # a derived row says what the collector did in its section (context joined or sentence rephrased)
    derived = table[table["wording"] == "derived"]
    assert derived["source_section"].str.contains(r"\[context: |\[rephrased", regex=True).mean() > 0.9


def test_the_thin_and_named_centers_have_several_conditions(table):
    """Breadth: many conditions per center (the issue names neurology, skin/nail and infectious exposure)."""
    per_center = table.groupby("center")["condition"].nunique()
    for center in ("oral_care", "foot_ankle", "psychiatry", "hepatology", "ophthalmology", "ent", "obgyn",
                   "pediatrics", "endocrinology", "urology", "neurology", "dermatology", "infectious_disease"):
        assert per_center.get(center, 0) >= 5, center


def test_children_go_to_pediatrics(table):
    assert (table.loc[table["population"].isin(["child", "infant"]), "center"] == "pediatrics").all()


def test_generated_complaints_keep_their_provenance(table):
    ex = cs.make_examples(table, per_statement=2, combos_per_condition=2, seed=1)
    assert {"statement", "combo"} == set(ex["kind"])
    assert ex["text"].is_unique and (ex["author"] == cs.AUTHOR).all()
    by_id = table.set_index("statement_id")
    assert ex["statement_id"].isin(by_id.index).all()
    assert (ex["source_url"] == by_id.loc[ex["statement_id"], "source_url"].to_numpy()).all()
    assert (ex["center"] == by_id.loc[ex["statement_id"], "center"].to_numpy()).all()
    combos = ex[ex["kind"] == "combo"]
    assert combos["other_statement_id"].isin(by_id.index).all()
    # the two statements of a combo belong to the same condition
    assert (by_id.loc[combos["statement_id"], "condition"].to_numpy()
            == by_id.loc[combos["other_statement_id"], "condition"].to_numpy()).all()
    assert not ex["text"].str.contains(r"\.\.\.|\[|\]", regex=True).any()


def test_rewriting_writes_first_person_and_for_a_parent():
    rng = random.Random(3)
    s, pop = cs._shape("feeling very thirsty and drinking more than usual", "any", rng)
    assert s.split()[0] in ("I", "I've") and "thirsty" in s and pop == "any"
    s, pop = cs._shape("wake in the night with an itchy bottom", "child", rng)
    assert s.split()[0] in ("my", "our") and pop == "any"
    s, _ = cs._shape("Colours may look faded or less clear", "any", rng)
    assert s.lower().startswith(("i've noticed", "i find", "it seems"))
    assert cs._tidy("other people have annoyed I by criticising") == "other people have annoyed me by criticising"


def test_rows_only_train_and_never_near_a_heldout_text(table):
    ex = cs.make_examples(table.head(40), per_statement=2, seed=2)
    heldout = [ex["text"].iloc[0], ex["text"].iloc[5] + " please", "an unrelated held-out sentence about knees"]
    rows = cs.center_rows(heldout, seed=2, per_statement=2)
    assert set(rows["split"]) == {"train"} and set(rows["origin"]) == {"project"}
    assert set(rows["source"]) == {cs.SOURCE} and rows["source_url"].str.startswith("http").all()
    kept = set(rows["text"])
    assert heldout[0] not in kept and ex["text"].iloc[5] not in kept


def test_no_blind_set_text_is_in_the_table_or_the_generated_rows(table):
    """A guard, not a reading: the blind routing sets stay evaluation-only (never copied into training text)."""
    blind = []
    for path in sorted(BLIND_DIR.glob("routing_blind*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        blind += list(frame["text"])
    assert blind
    rows = cs.center_rows(seed=13)
    assert len(cs.drop_near(rows, blind)) == len(rows)
    assert not set(cs._norm(t) for t in table["statement"]) & set(cs._norm(t) for t in blind)


def test_training_prepare_adds_them_to_train_only():
    examples = pd.DataFrame({
        "text": [f"my knee hurts when i climb stairs number {i}" for i in range(6)]
        + [f"itchy rash on my arm that spreads {i}" for i in range(6)],
        "center": ["orthopedics"] * 6 + ["dermatology"] * 6,
        "source": "medical_speech_intent", "group": [f"g{i}" for i in range(12)], "origin": "external",
        "source_label": "x", "split": ["train", "train", "train", "train", "val", "test"] * 2})
    opts = triage_train.TrainOptions(center_statements=True, center_statements_per_statement=1)
    _, _, df, _ = triage_train._prepare(get_settings(), opts, examples)
    added = df[df["source"] == cs.SOURCE]
    assert len(added) > 300 and set(added["split"]) == {"train"}
    assert list(df.loc[df["split"] == "test", "text"]) == list(examples.loc[examples["split"] == "test", "text"])
    assert list(df.loc[df["split"] == "val", "text"]) == list(examples.loc[examples["split"] == "val", "text"])
    _, _, plain, _ = triage_train._prepare(get_settings(), triage_train.TrainOptions(), examples)
    assert cs.SOURCE not in set(plain["source"])


@pytest.mark.parametrize("change, message", [
    (lambda d: d.assign(source_url=["not a url"] + list(d["source_url"][1:])), "not an http(s) URL"),
    (lambda d: d.assign(source_url=[""] + list(d["source_url"][1:])), "not an http(s) URL"),
    (lambda d: d.assign(center=["emergency"] + list(d["center"][1:])), "not a routable taxonomy center"),
    (lambda d: d.assign(center=["cardio"] + list(d["center"][1:])), "not a routable taxonomy center"),
    (lambda d: d.assign(population=["elderly"] + list(d["population"][1:])), "population"),
    (lambda d: d.assign(wording=["copied"] + list(d["wording"][1:])), "wording"),
    (lambda d: d.assign(statement=[" "] + list(d["statement"][1:])), "empty statement"),
    (lambda d: d.drop(columns=["source_section"]), "lacks columns"),
    (lambda d: pd.concat([d, d.head(1)]), "duplicate statement_id"),
])
def test_a_malformed_table_is_refused_with_the_problem_named(tmp_path, table, change, message):
    bad = change(table.drop(columns=["group"]))
    path = tmp_path / "center_statements.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(cs.CenterStatementsError, match=re.escape(message)):
        cs.load_center_statements(path)


def test_a_missing_table_is_refused(tmp_path):
    with pytest.raises(cs.CenterStatementsError, match="does not exist"):
        cs.load_center_statements(tmp_path / "nope.csv")
