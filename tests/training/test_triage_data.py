"""Triage data layer on the real public files: mapping coverage, leak-free splits, bad input."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from serving.settings import Settings
from training.sources import DataSourceError, describe, hashes_for, source_file
from training.triage_data import (
    ALL_SOURCES,
    AVEY,
    COLUMNS,
    LABEL_MAP_PATHS,
    PEDIATRIC_AGE_CUTOFF,
    S2D,
    SPEECH,
    TriageDataError,
    coverage,
    cross_source_splits,
    dataset_files,
    dataset_hashes,
    group_key,
    load_examples,
    load_label_map,
    make_splits,
    near_duplicate_groups,
    normalise_text,
    parse_age_years,
    split_fingerprint,
)
from triage.taxonomy import EMERGENCY_CENTER, load_taxonomy


@pytest.fixture(scope="module")
def examples() -> pd.DataFrame:
    return load_examples()


@pytest.fixture(scope="module")
def split(examples) -> pd.DataFrame:
    return make_splits(examples, seed=13)


# ---------------------------------------------------------------------------- loading + mapping
def _raw_labels(source: str) -> set[str]:
    if source == SPEECH:
        return set(pd.read_csv(source_file(SPEECH, "overview-of-recordings.csv")).prompt.dropna().str.strip())
    if source == S2D:
        return set(pd.read_csv(source_file(S2D, "Symptom2Disease.csv")).label.str.strip())
    raw = pd.read_json(source_file(AVEY, "avey_vignettes.original.jsonl"), lines=True)
    return set(raw.correct_diagnosis.str.strip())


@pytest.mark.parametrize("source", [SPEECH, S2D, AVEY])
def test_label_map_covers_every_source_label_exactly(source):
    table = load_label_map(source)
    assert set(table.source_label) == _raw_labels(source), "one row per source label, no stale rows"
    assert set(table.status) <= {"mapped", "dropped"}
    dropped = table[table.status == "dropped"]
    assert (dropped.reason.str.len() > 10).all(), "every dropped label carries a reason"
    assert set(table.center[table.status == "mapped"]) <= set(load_taxonomy().model_labels())


def test_examples_shape_and_values(examples):
    assert list(examples.columns) == COLUMNS
    assert not examples[COLUMNS].isna().any().any()
    assert set(examples.source) == set(ALL_SOURCES)
    assert set(examples.center) <= set(load_taxonomy().model_labels())
    assert EMERGENCY_CENTER not in set(examples.center)
    assert (examples.text.str.strip() == examples.text).all() and (examples.text.str.len() > 0).all()
    counts = examples.source.value_counts()
    assert 650 <= counts[SPEECH] <= 706  # 6,661 recordings -> ~700 distinct phrases
    assert 1000 <= counts[S2D] <= 1153  # 1,200 rows, dedup, 2 labels dropped
    assert 380 <= counts[AVEY] <= 400
    assert counts["project_seed"] >= 250
    assert set(examples.origin[examples.source == "project_seed"]) == {"project"}
    assert set(examples.origin[examples.source != "project_seed"]) == {"external"}


def test_speech_deduplicated_by_normalised_phrase(examples):
    speech = examples[examples.source == SPEECH]
    assert speech.text.map(group_key).is_unique  # one row per normalised phrase
    assert speech.group.nunique() < len(speech)  # ...and near-duplicate phrases share a split group
    # majority prompt wins for phrases recorded under two prompts
    row = speech[speech.text.map(group_key) == "when i carry heavy things i feel like breaking my back"]
    assert row.source_label.tolist() == ["Back pain"] and row.center.tolist() == ["orthopedics"]


def test_dropped_labels_removed_and_mapping_applied(examples):
    s2d = examples[examples.source == S2D]
    assert not {"allergy", "drug reaction"} & set(s2d.source_label)
    assert set(s2d.center[s2d.source_label == "Jaundice"]) == {"hepatology"}
    assert set(examples.center[(examples.source == SPEECH) & (examples.source_label == "Open wound")]) == {"general_surgery"}


def test_avey_children_go_to_pediatrics(examples):
    raw = pd.read_json(source_file(AVEY, "avey_vignettes.original.jsonl"), lines=True)
    child = raw[raw.demographics.map(parse_age_years) < PEDIATRIC_AGE_CUTOFF]
    assert len(child) >= 20
    avey = examples[examples.source == AVEY]
    avey = avey.set_index(avey.text.map(group_key))
    for _, r in child.iterrows():
        key = group_key(r.presentation)
        if key in avey.index:  # may have been dropped by its label
            assert avey.loc[key, "center"] == "pediatrics", r.correct_diagnosis
    unstable = examples[(examples.source == AVEY) & (examples.source_label == "Unstable Angina")]
    assert set(unstable.center) == {"cardiology"}


def test_parse_age():
    assert parse_age_years("61 year old Male") == 61
    assert parse_age_years("6 month old Female") == pytest.approx(0.5)
    assert parse_age_years("adult") is None


def test_every_center_has_examples_and_coverage_report(examples):
    cov = coverage(examples).set_index("center")
    labels = load_taxonomy().model_labels()
    assert list(cov.index[: len(labels)]) == labels
    assert (cov.loc[labels, "n_total"] >= 25).all(), cov[cov.n_total < 25]
    assert (cov.n_total == cov.n_external + cov.n_project).all()
    assert cov.loc["oral_care", "n_external"] == 0 and cov.loc["oral_care", "n_project"] >= 25
    # a center with no data still shows up, with zeros
    cov2 = coverage(examples[examples.center != "oral_care"]).set_index("center")
    assert cov2.loc["oral_care", "n_total"] == 0


# ---------------------------------------------------------------------------- splits
def test_splits_have_no_group_leakage_and_no_project_rows_in_test(split):
    assert set(split.split) == {"train", "val", "test"}
    assert (split.groupby("group").split.nunique() == 1).all()
    assert not ((split.origin == "project") & (split.split == "test")).any()
    assert (split.origin[split.split == "test"] == "external").all()
    # near-identical texts (case/punctuation) share a group, so cannot straddle splits
    keys = split.text.map(group_key)
    assert (split.assign(k=keys).groupby("k").split.nunique() == 1).all()


def test_split_fractions_and_stratification(split):
    frac = split.split.value_counts(normalize=True)
    assert 0.62 <= frac["train"] <= 0.78 and 0.10 <= frac["test"] <= 0.20
    ext = split[split.origin == "external"]
    per_center = ext.groupby("center").split.apply(lambda s: (s == "test").mean())
    big = ext.center.value_counts()
    assert (per_center[big[big >= 20].index] >= 0.08).all()  # every well-supported center is tested


def test_splits_are_deterministic(examples, split):
    again = make_splits(examples, seed=13)
    pd.testing.assert_series_equal(again.split, split.split)
    assert split_fingerprint(again) == split_fingerprint(split)
    other = make_splits(examples, seed=14)
    assert split_fingerprint(other) != split_fingerprint(split)
    # a row order shuffle does not change any group's split
    shuffled = make_splits(examples.sample(frac=1.0, random_state=0), seed=13)
    assert shuffled.sort_index().split.equals(split.split)


def test_groups_with_a_project_row_never_reach_test():
    df = pd.DataFrame(
        {
            "text": [f"external complaint {i}" for i in range(20)] + ["shared text"] * 2,
            "center": ["ent"] * 22,
            "source": ["x"] * 20 + ["x", "project_seed"],
            "group": [f"g{i}" for i in range(20)] + ["shared", "shared"],
            "origin": ["external"] * 21 + ["project"],
            "source_label": ["l"] * 22,
        }
    )
    for seed in range(10):
        out = make_splits(df, seed=seed)
        assert out.split[out.group == "shared"].isin(["train", "val"]).all()


# ---------------------------------------------------------------------------- cross-source
def test_cross_source_splits_share_centers(examples):
    pairs = cross_source_splits(examples)
    assert set(pairs) == {"speech->s2d", "s2d->speech"}
    tr, te = pairs["speech->s2d"]
    assert set(tr.source) == {SPEECH} and set(te.source) == {S2D}
    assert set(tr.center) == set(te.center)
    assert set(tr.center) == {"cardiology", "dermatology", "gastroenterology", "neurology", "orthopedics", "respiratory"}
    assert (tr.center.value_counts() >= 5).all() and (te.center.value_counts() >= 5).all()
    tr2, te2 = pairs["s2d->speech"]
    assert set(tr2.source) == {S2D} and set(te2.source) == {SPEECH}
    assert set(tr2.center) == set(te2.center) == set(tr.center)
    assert not set(tr.group) & set(te.group)


def test_cross_source_needs_both_sources(examples):
    with pytest.raises(TriageDataError, match="symptom2disease"):
        cross_source_splits(examples[examples.source == SPEECH])


# ---------------------------------------------------------------------------- files + hashes
def test_dataset_files_and_hashes():
    files = dataset_files(ALL_SOURCES)
    assert (SPEECH, "overview-of-recordings.csv") in files and len(files) == 3
    assert hashes_for(files)[f"{S2D}/Symptom2Disease.csv"] == describe(S2D, "Symptom2Disease.csv").sha256
    hashes = dataset_hashes()
    assert any(k.endswith("seed_complaints.csv") for k in hashes)
    assert any(k.endswith("taxonomy.json") for k in hashes)
    with pytest.raises(TriageDataError, match="nope"):
        dataset_files(["nope"])


# ---------------------------------------------------------------------------- bad input
def test_normalise_text():
    assert normalise_text("  I have\t a\n\ncough ") == "I have a cough"
    assert normalise_text("ｃｏｕｇｈ，") == "cough,"  # NFKC folds full-width forms
    for bad in ["", "   ", "\u200b\u200b", "\n\t"]:
        with pytest.raises(TriageDataError, match="empty after normalisation"):
            normalise_text(bad)
    with pytest.raises(TriageDataError, match="missing"):
        normalise_text(None)


def test_empty_or_unlabeled_frames_are_rejected(examples):
    with pytest.raises(TriageDataError, match="empty"):
        make_splits(examples.iloc[:0])
    with pytest.raises(TriageDataError, match="empty"):
        coverage(examples.iloc[:0])
    unlabeled = examples.head(5).copy()
    unlabeled.loc[unlabeled.index[0], "center"] = None
    with pytest.raises(TriageDataError, match="no 'center'"):
        make_splits(unlabeled)
    blank = examples.head(5).copy()
    blank.loc[blank.index[1], "text"] = "  "
    with pytest.raises(TriageDataError, match="empty 'text'"):
        make_splits(blank)
    with pytest.raises(TriageDataError, match="lacks column"):
        make_splits(examples[["text", "center"]])
    with pytest.raises(TriageDataError, match="unknown triage source"):
        load_examples(sources=("kaggle_mystery",))


def test_unknown_label_is_named(tmp_path):
    table = pd.read_csv(LABEL_MAP_PATHS[S2D], dtype=str, keep_default_na=False)
    path = tmp_path / "map.csv"
    table[table.source_label != "Migraine"].to_csv(path, index=False)
    with pytest.raises(TriageDataError, match="Migraine"):
        load_examples(sources=(S2D,), label_maps={S2D: path})


def test_bad_label_map_rows(tmp_path):
    table = pd.read_csv(LABEL_MAP_PATHS[S2D], dtype=str, keep_default_na=False)
    bad_center = table.copy()
    bad_center.loc[bad_center.source_label == "Migraine", "center"] = "neurosurgery"
    path = tmp_path / "m1.csv"
    bad_center.to_csv(path, index=False)
    with pytest.raises(TriageDataError, match="neurosurgery"):
        load_label_map(S2D, path)
    emergency = table.copy()
    emergency.loc[emergency.source_label == "Migraine", "center"] = EMERGENCY_CENTER
    emergency.to_csv(path, index=False)
    with pytest.raises(TriageDataError, match="non-routable"):
        load_label_map(S2D, path)
    no_reason = table.copy()
    no_reason.loc[no_reason.source_label == "allergy", "reason"] = ""
    no_reason.to_csv(path, index=False)
    with pytest.raises(TriageDataError, match="needs a reason"):
        load_label_map(S2D, path)


def test_bad_seed_rows_are_named(tmp_path):
    path = tmp_path / "seed.csv"
    path.write_text("text,center,author,note\nmy tooth hurts,oral_care,project,\n   ,ent,project,\n", encoding="utf-8")
    with pytest.raises(TriageDataError, match="line 3.*empty"):
        load_examples(sources=("project_seed",), seed_path=path)
    path.write_text("text,center,author,note\nmy tooth hurts,dentistry,project,\n", encoding="utf-8")
    with pytest.raises(TriageDataError, match="'dentistry'"):
        load_examples(sources=("project_seed",), seed_path=path)
    path.write_text("text,center,author,note\nmy tooth hurts,oral_care,kaggle,\n", encoding="utf-8")
    with pytest.raises(TriageDataError, match="author"):
        load_examples(sources=("project_seed",), seed_path=path)


def test_missing_and_corrupt_data_file_give_data_source_error(tmp_path):
    settings = Settings(data_dir=tmp_path, work_dir=tmp_path / "var")
    with pytest.raises(DataSourceError, match="missing"):
        load_examples(settings, sources=(S2D,))
    real = source_file(S2D, "Symptom2Disease.csv")
    copy = tmp_path / "triage" / "symptom2disease" / "Symptom2Disease.csv"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(real, copy)
    assert len(load_examples(settings, sources=(S2D,))) > 1000  # intact copy loads
    with copy.open("ab") as fh:
        fh.write(b'9999,Migraine,"an injected row"\n')
    with pytest.raises(DataSourceError, match="corrupt"):
        load_examples(settings, sources=(S2D,))


# ---------------------------------------------------------------------------- phrase-level overrides
def test_overrides_fix_clear_label_noise(examples):
    speech = examples[examples.source == SPEECH]
    speech = speech.set_index(speech.text.map(group_key))
    assert speech.loc[group_key("I think I sprained my ankle it really hurts."), "center"] == "foot_ankle"
    heartbreak = group_key("My heart hurts while I'm sad, why?")
    assert speech.loc[heartbreak, "center"] == "psychiatry"
    assert speech.loc[heartbreak, "source_label"] == "Heart hurts"  # the source label is kept as is
    assert group_key("I have for dia") not in speech.index  # dropped
    plain = load_examples(sources=(SPEECH,), use_overrides=False)
    plain = plain.set_index(plain.text.map(group_key))
    assert plain.loc[heartbreak, "center"] == "cardiology"


def test_stale_or_bad_override_is_rejected(tmp_path):
    path = tmp_path / "ovr.csv"
    path.write_text("source,text,center,status,reason\nmedical_speech_intent,a phrase nobody wrote,ent,mapped,x\n")
    with pytest.raises(TriageDataError, match="match no text"):
        load_examples(sources=(SPEECH,), overrides_path=path)
    path.write_text("source,text,center,status,reason\nmedical_speech_intent,i feel sad,sadness,mapped,x\n")
    with pytest.raises(TriageDataError, match="'sadness'"):
        load_examples(sources=(SPEECH,), overrides_path=path)


# ---------------------------------------------------------------------------- near-duplicate groups
def test_near_duplicates_share_a_group():
    texts = ["I have a pain in my stomach", "I have pain in my stomach!", "my knee hurts when I run", "牙疼了三天"]
    keys = [group_key(t) for t in texts]
    groups = near_duplicate_groups(texts, keys)
    assert groups[0] == groups[1] != groups[2]
    assert len(set(groups)) == 3
    assert near_duplicate_groups(texts, keys, None) == keys
    assert near_duplicate_groups(texts[::-1], keys[::-1]) == groups[::-1]  # order-independent


def test_test_split_has_no_paraphrase_of_training_rows(split):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(split.text)
    train = vec.transform(split.text[split.split == "train"])
    test = vec.transform(split.text[split.split == "test"])
    max_sim = (test @ train.T).max(axis=1).toarray().ravel()
    assert (max_sim >= 0.9).mean() == 0.0
    assert (max_sim >= 0.8).mean() < 0.01  # Symptom2Disease alone has ~7% such paraphrases


def test_repeated_loads_are_cached_but_independent(tmp_path):
    seed = tmp_path / "seed.csv"
    seed.write_text("text,center,author,note\nmy tooth hurts,oral_care,project,\n", encoding="utf-8")
    first = load_examples(sources=("project_seed",), seed_path=seed)
    first.loc[first.index[0], "center"] = "ent"  # caller mutates its copy
    again = load_examples(sources=("project_seed",), seed_path=seed)
    assert again.center.tolist() == ["oral_care"]
    seed.write_text("text,center,author,note\nmy tooth hurts a lot,oral_care,project,\nsore ear,ent,project,\n")
    assert len(load_examples(sources=("project_seed",), seed_path=seed)) == 2  # edited file is re-read


def test_cli_prints_coverage_and_writes_split(tmp_path, capsys):
    from training.triage_data import main

    out = tmp_path / "split.csv"
    assert main(["--seed", "13", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| oral_care | 0 |" in printed and "cross-source centers: cardiology" in printed
    saved = pd.read_csv(out)
    assert set(saved.split) == {"train", "val", "test"} and len(saved) > 2000
