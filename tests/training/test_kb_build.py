import csv

import pytest

from serving.settings import Settings
from training.kb_build import (
    CURATED_DIR,
    KBBuild,
    KBBuildError,
    add_abbreviations,
    add_curated_interactions,
    assemble,
    canonicalise_tables,
    content_version,
    grade_ddinter_pairs,
    link_atc_codes,
    read_curated,
)


def _copy_with_bad_row(tmp_path, name, mutate):
    src = CURATED_DIR / name
    rows = list(csv.DictReader(src.open(newline="")))
    mutate(rows[0])
    dst = tmp_path / name
    with dst.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst


def test_bad_row_names_file_and_row(tmp_path):
    _copy_with_bad_row(tmp_path, "renal_dosing.csv", lambda r: r.update(severity="deadly"))
    with pytest.raises(KBBuildError, match=r"renal_dosing.csv row 2: severity 'deadly'"):
        read_curated("renal_dosing.csv", tmp_path)
    _copy_with_bad_row(tmp_path, "renal_dosing.csv", lambda r: r.update(egfr_min="thirty"))
    with pytest.raises(KBBuildError, match=r"row 2: column 'egfr_min' must be a number"):
        read_curated("renal_dosing.csv", tmp_path)
    _copy_with_bad_row(tmp_path, "renal_dosing.csv", lambda r: r.update(source_url=""))
    with pytest.raises(KBBuildError, match="must cite its source"):
        read_curated("renal_dosing.csv", tmp_path)


def test_bad_hepatic_row_is_a_clear_build_error(tmp_path, capsys):
    from training.kb_build import main

    _copy_with_bad_row(tmp_path, "hepatic_dosing.csv", lambda r: r.update(min_grade="child-pugh d"))
    with pytest.raises(KBBuildError, match=r"hepatic_dosing.csv row 2: column 'min_grade' value 'child-pugh d' "
                                           r"not in \('mild', 'moderate', 'severe'\)"):
        read_curated("hepatic_dosing.csv", tmp_path)
    out = tmp_path / "kb.json"
    assert main(["--output", str(out), "--curated-dir", str(tmp_path)]) == 1
    assert "hepatic_dosing.csv row 2: column 'min_grade'" in capsys.readouterr().err and not out.exists()
    _copy_with_bad_row(tmp_path, "hepatic_dosing.csv", lambda r: r.update(action="contraindicated", severity="major"))
    with pytest.raises(KBBuildError, match=r"row 2: action 'contraindicated' needs severity 'contraindicated'"):
        read_curated("hepatic_dosing.csv", tmp_path)
    _copy_with_bad_row(tmp_path, "hepatic_dosing.csv", lambda r: r.update(max_daily_mg="eight"))
    with pytest.raises(KBBuildError, match=r"row 2: column 'max_daily_mg' must be a number"):
        read_curated("hepatic_dosing.csv", tmp_path)


def test_missing_table_is_skipped(tmp_path):
    assert read_curated("dose_limits.csv", tmp_path) is None


def test_content_version_is_a_content_hash():
    a = {"format": 1, "names": {"x": ["y"]}, "built_at": "t1"}
    b = {"format": 1, "names": {"x": ["y"]}, "built_at": "t2"}
    c = {"format": 1, "names": {"x": ["z"]}}
    assert content_version(a) == content_version(b) != content_version(c)


def test_built_kb(rx_checker):
    kb = rx_checker.kb
    assert kb.version.startswith("kb-") and kb.version == rx_checker.kb_version
    assert kb.version == content_version(kb.raw)
    assert len(kb.ddinter) > 100_000  # all 8 DDInter files
    assert len(kb.raw["sources"]) >= 12 and "project/hepatic_dosing.csv" in kb.raw["sources"]
    assert kb.interaction("warfarin", "aspirin")[1]["severity"] == "major"
    assert kb.duplicate_class("omeprazole") == kb.duplicate_class("pantoprazole") == "ppi"
    for name in ("dose_limits", "renal_dosing", "hepatic_dosing"):
        assert kb.tables.get(name), f"{name} missing from the KB"
        assert all(r["source"] for r in kb.tables[name])


def test_log_mlflow(rx_checker, tmp_path):
    import mlflow

    from training.kb_build import log_to_mlflow

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    run_id = log_to_mlflow(rx_checker.kb.path, rx_checker.kb.raw, settings)
    run = mlflow.get_run(run_id)
    assert run.data.tags["kb_version"] == rx_checker.kb_version
    exp = mlflow.get_experiment(run.info.experiment_id)
    assert exp.name == "knowledge-base"
    arts = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "kb")]
    assert arts == [f"kb/{rx_checker.kb.path.name}"]


def test_cli_rejects_a_bad_table(tmp_path, capsys):
    from training.kb_build import main

    _copy_with_bad_row(tmp_path, "cross_sensitivity.csv", lambda r: r.update(severity="severe"))
    out = tmp_path / "kb.json"
    assert main(["--output", str(out), "--curated-dir", str(tmp_path)]) == 1
    assert "cross_sensitivity.csv row 2: severity 'severe'" in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_or_stale_artefact_is_a_clear_error(tmp_path):
    from prescription_check.kb import KBError, KnowledgeBase

    bad = tmp_path / "kb.json"
    bad.write_text('{"format": 0}')
    with pytest.raises(KBError, match="format 0"):
        KnowledgeBase.load(bad)
    bad.write_text("{trunc")
    with pytest.raises(KBError, match="unreadable"):
        KnowledgeBase.load(bad)
    with pytest.raises(KBError, match="does not exist"):
        KnowledgeBase.load(tmp_path / "missing.json")


def test_stale_reason_names_the_changed_table(rx_checker, tmp_path):
    import shutil

    from prescription_check.kb import stale_reason

    sources = rx_checker.kb.raw["sources"]
    assert stale_reason(sources, CURATED_DIR) is None  # the session KB was built from these tables
    copy = tmp_path / "drugs"
    shutil.copytree(CURATED_DIR, copy)
    with (copy / "renal_dosing.csv").open("a") as fh:
        fh.write("\n")
    assert stale_reason(sources, copy) == "renal_dosing.csv changed since the KB was built"
    (copy / "renal_dosing.csv").unlink()
    assert stale_reason(sources, copy) == "renal_dosing.csv was removed since the KB was built"
    older = {k: v for k, v in sources.items() if k != "project/hepatic_dosing.csv"}
    assert stale_reason(older, CURATED_DIR) == "hepatic_dosing.csv is not in the KB (added since it was built)"


@pytest.mark.slow  # builds a knowledge base
def test_stale_artefact_is_refused_by_the_checker_and_rebuilt_by_bootstrap(rx_checker, tmp_path):
    """A deployment that updated the curated tables must not keep checking against the old artefact: the service
    refuses it (naming the table), ``python -m training bootstrap`` rebuilds it."""
    import json

    from prescription_check import Checker
    from prescription_check.kb import KBStaleError
    from serving.components import load_checker
    from serving.settings import Settings
    from training.kb_build import ensure_kb

    raw = dict(rx_checker.kb.raw)
    raw["sources"] = {k: v for k, v in raw["sources"].items() if k != "project/hepatic_dosing.csv"}
    raw["tables"] = {k: v for k, v in raw["tables"].items() if k != "hepatic_dosing"}
    raw["version"] = "kb-older"
    path = tmp_path / "kb.json"
    path.write_text(json.dumps(raw))
    settings = Settings(work_dir=tmp_path / "var", api_keys={}, kb_path=path)
    assert Checker.load(path, warm=False).kb_version == "kb-older"  # without curated_dir: loaded as it is
    with pytest.raises(KBStaleError, match="hepatic_dosing.csv is not in the KB"):
        load_checker(settings, warm=False)
    assert "hepatic_dosing.csv is not in the KB" in ensure_kb(settings)
    checker = load_checker(settings, warm=False)
    assert checker.kb_version == rx_checker.kb_version != "kb-older"
    assert checker.kb.tables.get("hepatic_dosing")
    assert json.loads(path.read_text())["version"] == rx_checker.kb_version  # rewritten in place
    assert ensure_kb(settings).endswith("is current")


@pytest.mark.slow  # builds a knowledge base
def test_missing_artefact_is_a_clear_error_and_bootstrap_builds_it(rx_checker, tmp_path):
    from prescription_check.kb import KBError
    from serving.components import load_checker
    from serving.settings import Settings
    from training.kb_build import ensure_kb

    settings = Settings(work_dir=tmp_path / "var", api_keys={}, kb_path=tmp_path / "kb" / "kb.json")
    with pytest.raises(KBError, match="python -m training kb"):
        load_checker(settings, warm=False)
    assert ensure_kb(settings).endswith("(missing)")
    assert load_checker(settings, warm=False).kb_version == rx_checker.kb_version


# ---------------------------------------------------------------------------------- build steps, one at a time
def test_abbreviations_step_overrides_the_index_and_checks_strengths(settings, tmp_path):
    (tmp_path / "abbreviations.csv").write_text(
        "alias,ingredients,strengths_mg,mg_per_ml,note\n"
        "APAP,acetaminophen,,,\n"
        "Percocet 5,oxycodone hydrochloride|acetaminophen,5|325,,\n"
        "apap syrup,acetaminophen,,32,\n")
    b = KBBuild(settings, tmp_path)
    b.names["apap"] = ["something else"]
    add_abbreviations(b)
    assert b.names["apap"] == ["acetaminophen"]  # project rows override
    assert b.names["percocet 5"] == ["oxycodone", "acetaminophen"]  # salts stripped
    assert b.strengths == {"percocet 5": {"mg": {"oxycodone": 5.0, "acetaminophen": 325.0}},
                           "apap syrup": {"mg_per_ml": 32.0}}
    assert "project/abbreviations.csv" in b.files
    (tmp_path / "abbreviations.csv").write_text("alias,ingredients,strengths_mg,mg_per_ml,note\nx,a|b,5,,\n")
    with pytest.raises(KBBuildError, match="abbreviations.csv row 2: 1 strengths for 2 ingredients"):
        add_abbreviations(KBBuild(settings, tmp_path))
    (tmp_path / "abbreviations.csv").unlink()
    b = KBBuild(settings, tmp_path)
    add_abbreviations(b)  # no table: nothing added, nothing hashed
    assert b.names == {} and b.files == {}


def test_link_atc_codes_through_a_synonym_and_a_combinations_first_component(settings):
    b = KBBuild(settings, CURATED_DIR)
    b.l5 = [("N02BE01", "paracetamol"), ("J01DH51", "imipenem and cilastatin"), ("J01DH02", "meropenem")]
    b.names = {"paracetamol": ["acetaminophen"], "imipenem": ["imipenem"], "meropenem": ["meropenem"]}
    b.atc = {"meropenem": ["J01DH02"]}
    link_atc_codes(b)
    assert b.atc == {"meropenem": ["J01DH02"], "acetaminophen": ["N02BE01"], "imipenem": ["J01DH51"]}


def test_ddinter_grading_keeps_the_most_severe_level_and_skips_topical_forms(settings):
    b = KBBuild(settings, CURATED_DIR)
    b.names = {"coumadin": ["warfarin"]}
    b.dd_rows = [("Warfarin", "Aspirin", "Moderate"), ("Aspirin", "Coumadin", "Major"),
                 ("Warfarin", "Aspirin", "Minor"), ("Warfarin", "Warfarin sodium", "Major"),
                 ("Betamethasone (topical)", "Aspirin", "Major"), ("Warfarin", "Ibuprofen", "Unknown")]
    grade_ddinter_pairs(b)
    assert b.ddinter == {"aspirin|warfarin": "Major", "ibuprofen|warfarin": "Unknown"}


def test_curated_interactions_override_seed_rows_and_unknown_names_are_noted(settings):
    b = KBBuild(settings, CURATED_DIR)
    b.names = {"warfarin": ["warfarin"], "aspirin": ["aspirin"]}
    b.interactions = {"aspirin|warfarin": {"severity": "moderate", "origin": "seed"}}
    row = {"drug_a": "Aspirin", "drug_b": "warfarin", "severity": "major", "message": "m", "management": "",
           "source": "s", "_row": "interactions_curated.csv#2"}
    odd = {**row, "drug_a": "Zorblax", "_row": "interactions_curated.csv#3"}
    b.curated = {"interactions_curated.csv": [row, odd]}
    add_curated_interactions(b)
    assert b.interactions["aspirin|warfarin"] == {"severity": "major", "message": "m", "management": "",
                                                  "source": "s", "origin": "curated",
                                                  "row": "interactions_curated.csv#2"}
    assert b.interactions["warfarin|zorblax"]["row"] == "interactions_curated.csv#3"  # kept as written
    assert b.unresolved == ["interactions_curated.csv#3: 'Zorblax'"]


def test_curated_tables_are_canonicalised(settings):
    b = KBBuild(settings, CURATED_DIR)
    b.names = {"amoxicillin": ["amoxicillin"], "tylenol": ["acetaminophen"]}
    b.curated = {
        "allergy_classes.csv": [{"class_id": "penicillin", "ingredients": "Amoxicillin|", "atc_prefixes": "j01ca|",
                                 "aliases": "Penicillins|pcn", "_row": "allergy_classes.csv#2"}],
        "condition_contraindications.csv": [{"ingredient": "Tylenol", "atc_prefix": "",
                                             "condition_terms": "Liver Failure", "icd10_prefixes": "k72.|K70",
                                             "_row": "c.csv#2"}],
        "renal_dosing.csv": None,
        "interactions_curated.csv": [],
    }
    canonicalise_tables(b)
    assert set(b.tables) == {"allergy_classes", "condition_contraindications"}  # missing and interactions left out
    assert b.tables["allergy_classes"][0] | {"_row": None} == {
        "class_id": "penicillin", "ingredients": ["amoxicillin"], "atc_prefixes": ["J01CA"],
        "aliases": ["penicillins", "pcn"], "_row": None}
    cond = b.tables["condition_contraindications"][0]
    assert (cond["ingredient"], cond["condition_terms"], cond["icd10_prefixes"]) == (
        "acetaminophen", ["liver failure"], ["K72", "K70"])


def test_assemble_versions_the_content_only(settings):
    b = KBBuild(settings, CURATED_DIR)
    b.names = {"warfarin": ["warfarin"]}
    b.curated = {"renal_dosing.csv": None}
    kb = assemble(b, started=0.0)
    assert kb["version"] == content_version(kb) and kb["missing_tables"] == ["renal_dosing.csv"]
    assert kb["fuzzy_vocabulary"] == []  # warfarin is in no ATC/DDInter/brand list here
    b.atc = {"warfarin": ["B01AA03"]}
    again = assemble(b, started=0.0)
    assert again["fuzzy_vocabulary"] == ["warfarin"] and again["version"] != kb["version"]


def test_dose_limit_age_band_columns(tmp_path):
    """The paediatric band columns (issue 17) are optional, so a dose table written before them still reads
    (every child, as before), and a band is validated: paediatric rows only, min below max, not negative."""
    src = list(csv.DictReader((CURATED_DIR / "dose_limits.csv").open(newline="")))
    old_cols = [c for c in src[0] if c not in ("age_min_days", "age_max_days", "weight_max_kg")]
    with (tmp_path / "dose_limits.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=old_cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(src)
    rows = read_curated("dose_limits.csv", tmp_path)
    assert len(rows) == len(src) and all(r["age_min_days"] is None and r["weight_max_kg"] is None for r in rows)
    ped = next(i for i, r in enumerate(src) if r["population"] == "pediatric")
    adult = next(i for i, r in enumerate(src) if r["population"] == "adult")
    for idx, change, message in (
            (adult, {"age_min_days": "28"}, "pediatric rows only"),
            (ped, {"age_min_days": "730", "age_max_days": "28"}, "must be below"),
            (ped, {"weight_max_kg": "-5"}, "must not be negative"),
            (ped, {"age_max_days": "two years"}, "must be a number")):
        rows = [dict(r) for r in src]
        rows[idx].update(change)
        with (tmp_path / "dose_limits.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(src[0]))
            w.writeheader()
            w.writerows(rows)
        with pytest.raises(KBBuildError, match=f"dose_limits.csv row {idx + 2}: .*{message}"):
            read_curated("dose_limits.csv", tmp_path)
