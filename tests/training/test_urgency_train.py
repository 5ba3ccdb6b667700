"""The urgency head: guidance-derived training text, the cost-sensitive head and its thresholds, the artifact file,
the classifier reading it, the decision policy and the API fields; on the small fixture model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from training import urgency_data, urgency_train
from triage.classifier import URGENCY_HEAD_FILE, TriageClassifier
from triage.urgency import UrgencyModel, decide_urgency, model_level


def test_guidance_becomes_first_person_complaints_with_provenance():
    statements = urgency_data.load_statements()
    assert set(statements["source_kind"]) == {"public_body"}  # third-party pages only on request
    assert len(urgency_data.load_statements(include_other_sources=True)) > len(statements)
    df = urgency_data.make_examples(statements.groupby("urgency").head(10), per_statement=3, contrast=20)
    assert set(df["urgency"]) == {"emergency", "urgent", "routine", "self_care"}
    assert df["source_url"].str.startswith("http").all() and (df["author"] == urgency_data.AUTHOR).all()
    assert {"negated", "history"} <= set(df["kind"])
    contrast = df[df["kind"] != "statement"]
    assert (contrast["urgency"] != "emergency").all() and (contrast["other_statement_id"] != "").all()
    df["split"] = urgency_data.split_groups(df)
    assert df.groupby("group")["split"].nunique().max() == 1  # no statement on both sides


def test_rewriting_changes_person_and_writes_for_a_child():
    import random

    rng = random.Random(0)
    body, person = urgency_data._body("You have a stiff neck", "adult", rng)
    assert body.startswith("I have") and person == "self"
    body, person = urgency_data._body("Is breathing very fast", "infant", rng)
    assert person == "parent" and " is breathing very fast" in body
    assert urgency_data._body("DVT symptoms", "adult", rng)[0].endswith("DVT symptoms")


def test_thresholds_count_what_the_red_flags_already_catch():
    p = np.array([[0.9, 0.1, 0, 0], [0.2, 0.1, 0.7, 0], [0.05, 0.05, 0.9, 0], [0.1, 0.1, 0.1, 0.7]])
    y = np.array([0, 0, 0, 3])
    alone = urgency_train.choose_thresholds(p, y)
    assert alone["emergency"] < 0.05  # the model alone must reach the third emergency
    flagged = np.array([False, False, True, False])  # a red flag catches it
    both = urgency_train.choose_thresholds(p, y, flagged, flagged)
    assert 0.1 < both["emergency"] <= 0.2


def test_thresholds_keep_emergency_recall_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    p = rng.dirichlet(np.ones(4), 400)
    p[np.arange(400), y] += 0.5
    p /= p.sum(1, keepdims=True)
    t = urgency_train.choose_thresholds(p, y)
    e = urgency_train.LABELS.index("emergency")
    assert (p[y == e, e] >= t["emergency"]).mean() >= urgency_train.EMERGENCY_RECALL
    assert 0 < t["self_care"] < 1


def test_model_level_and_the_more_urgent_wins():
    calm = UrgencyModel({"emergency": 0.01, "urgent": 0.04, "routine": 0.25, "self_care": 0.7},
                        {"emergency": 0.3, "urgent": 0.4, "self_care": 0.5}, "v")
    assert model_level(calm)[0] == "self_care"
    d = decide_urgency("mild cold", [], [], model=calm)
    assert d.level == "self_care" and d.source == "model" and d.probabilities["self_care"] == 0.7
    # a safety-net rule raises above the model, and says so; the model's view is kept in the reasons
    d = decide_urgency("severe tummy pain", [], [], model=calm)
    assert d.level == "urgent" and d.source == "rule:severity_words"
    assert any("urgency model v" in r for r in d.reasons)
    alarm = UrgencyModel({"emergency": 0.6, "urgent": 0.3, "routine": 0.05, "self_care": 0.05},
                         {"emergency": 0.3, "urgent": 0.4, "self_care": 0.5})
    d = decide_urgency("I feel odd", [], [], model=alarm)
    assert d.level == "emergency" and d.source == "model" and "p(emergency)=0.60" in d.reasons[0]


@pytest.fixture(scope="module")
def head_model_dir(triage_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("with-urgency") / "model"
    shutil.copytree(triage_model_dir, folder)
    clf = TriageClassifier.from_folder(folder, intra_op_threads=1)
    head, details = urgency_train.train_head(clf, per_statement=2, limit=10)
    (folder / URGENCY_HEAD_FILE).write_text(json.dumps(head))
    return folder, head, details


def test_head_is_written_and_read_by_the_classifier(head_model_dir):
    folder, head, details = head_model_dir
    assert head["labels"] == ["emergency", "urgent", "routine", "self_care"]
    assert set(head["thresholds"]) == {"emergency", "urgent", "self_care"} and head["guidance_sha256"]
    clf = TriageClassifier.from_folder(folder, intra_op_threads=1)
    [pred] = clf.predict(["my 6 week old is floppy and will not feed"])
    assert set(pred.urgency) == set(head["labels"]) and abs(sum(pred.urgency.values()) - 1) < 1e-4
    assert clf.info()["urgency_head"] == head["version"]


def test_head_without_embedding_output_is_refused(head_model_dir, tmp_path):
    from triage.classifier import ModelArtifactError

    folder, _, _ = head_model_dir
    (tmp_path / "m").mkdir()
    for name in ("labels.json", "meta.json", URGENCY_HEAD_FILE):
        shutil.copy(folder / name, tmp_path / "m" / name)
    shutil.copytree(folder / "tokenizer", tmp_path / "m" / "tokenizer")
    import onnx

    graph = onnx.load(str(folder / "model.int8.onnx"))
    keep = [o for o in graph.graph.output if o.name == "logits"]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    onnx.save(graph, str(tmp_path / "m" / "model.int8.onnx"))
    with pytest.raises(ModelArtifactError, match="embedding"):
        TriageClassifier.from_folder(tmp_path / "m")


def test_evaluation_on_the_blind_set_reports_the_issue_figures(head_model_dir):
    folder, _, _ = head_model_dir
    clf = TriageClassifier.from_folder(folder, intra_op_threads=1)
    rows = urgency_train.blind_rows()[:40]
    reports = urgency_train.evaluate(clf, {"blind": rows})
    flat = urgency_train.flat_metrics(reports)
    for key in ("exact_accuracy", "dichotomised_accuracy", "emergency_recall", "under_triage_rate",
                "over_triage_rate"):
        assert 0.0 <= flat[f"urgency_blind_{key}"] <= 1.0
    assert reports["blind"]["overall"]["n"] == 40 and "model" in reports["blind"]["decided_by"]


def test_api_answers_with_the_heads_probabilities(head_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.serving.triage_support import CHAT, make_settings

    folder, _, _ = head_model_dir
    settings = make_settings(tmp_path / "var", triage_model_uri=str(folder))
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/triage", json={"text": "a bit of a runny nose since yesterday"}, headers=CHAT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body["urgency_probabilities"]) == {"emergency", "urgent", "routine", "self_care"}
        assert body["urgency_source"] in {"model", "rule:severity_words", "rule:temperature"} or \
            body["urgency_source"].startswith(("red_flag", "rule:"))
        assert any("urgency model" in reason for reason in body["urgency_reasons"])


def test_model_decisions_cite_the_closest_guidance_presentation(head_model_dir):
    folder, head, _ = head_model_dir
    assert head["exemplars"]["source"] and all(u in {"emergency", "urgent"} for u in head["exemplars"]["urgency"])
    clf = TriageClassifier.from_folder(folder, intra_op_threads=1)
    [pred] = clf.predict(["my baby is floppy and blue and will not wake up"])
    assert set(pred.urgency_evidence) == {"emergency", "urgent"}
    e = pred.urgency_evidence["emergency"]
    assert e["text"] in head["exemplars"]["text"] and e["source"].startswith("http") and -1 <= e["similarity"] <= 1
    alarm = UrgencyModel({"emergency": 0.9, "urgent": 0.05, "routine": 0.03, "self_care": 0.02},
                         {"emergency": 0.5, "urgent": 0.5, "self_care": 0.5}, "v", pred.urgency_evidence)
    level, why = model_level(alarm)
    assert level == "emergency" and "closest cited presentation" in why and e["source"] in why


def test_denied_mentions_are_rescored_in_evaluation_and_in_the_api(head_model_dir, tmp_path):
    """Wiring of triage.urgency.respect_mentions with the real classifier: a head whose emergency threshold is 0
    always outranks the red flags, so a text that mentions a stroke only in the past is scored again without it."""
    from fastapi.testclient import TestClient

    from evaluation.urgency_eval import pipeline
    from serving.app import create_app
    from tests.serving.triage_support import CHAT, make_settings
    from triage.redflags import RedFlagMatcher

    folder, head, _ = head_model_dir
    eager = tmp_path / "eager"
    shutil.copytree(folder, eager)
    doc = json.loads((eager / URGENCY_HEAD_FILE).read_text())
    doc["thresholds"] = {**doc["thresholds"], "emergency": 0.0}
    (eager / URGENCY_HEAD_FILE).write_text(json.dumps(doc))
    text = "my dad had a stroke 5 years ago, today I feel a bit dizzy"
    clf = TriageClassifier.from_folder(eager, intra_op_threads=1)
    on = pipeline(RedFlagMatcher(), clf)({"text": text})
    off = pipeline(RedFlagMatcher(), clf, respect_negation=False)({"text": text})
    assert on.source == off.source == "model"
    assert "without the denied / past mention(s) of stroke_fast" in on.reasons[0]
    assert "without the denied" not in off.reasons[0]
    settings = make_settings(tmp_path / "var", triage_model_uri=str(eager))
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/triage", json={"text": text}, headers=CHAT)
        assert r.status_code == 200, r.text
        assert "without the denied / past mention(s) of stroke_fast" in r.json()["urgency_reasons"][0]


def test_validation_rows_are_the_held_out_groups_with_traps():
    rows = urgency_train.validation_rows()
    groups = {r["group"] for r in rows}
    assert {"negation_trap", "history_trap", "statement"} <= groups
    held = urgency_train.training_frame()
    assert len(rows) == int((held["split"] != "train").sum())


def test_eval_urgency_cli_prints_both_decisions(head_model_dir, capsys):
    from training import offline_eval

    folder, _, _ = head_model_dir
    assert offline_eval.urgency_main(["--model", str(folder), "--sets", "blind"]) == 0
    out = capsys.readouterr().out
    assert "| blind | red flags + urgency head + rules | 177 |" in out and "red flags + rules only" in out
    assert offline_eval.urgency_main(["--model", str(folder), "--sets", "blind", "--no-respect-negation"]) == 0
    with pytest.raises(SystemExit):
        offline_eval.urgency_main(["--model", str(folder), "--sets", "nope"])


# ------------------------------------------------------------------ nearest-exemplar blend (issue 11)
def _clusters(rng, centres, n, noise=0.05):
    x = np.concatenate([c + noise * rng.standard_normal((n, len(c))) for c in centres])
    return x.astype(np.float32)


def test_neighbour_blend_is_kept_only_when_it_beats_the_head_on_validation():
    rng = np.random.default_rng(0)
    dim = 8
    eye = np.eye(dim, dtype=np.float32)
    # emergencies sit in two opposite clusters (+e0, -e0): no linear score separates both from the calm clusters
    emerg, calm = [eye[0], -eye[0]], [eye[1], -eye[1]]
    x_train = np.concatenate([_clusters(rng, emerg, 20), _clusters(rng, calm, 20)])
    y_train = np.array([0] * 40 + [2] * 40)
    x_val = np.concatenate([_clusters(rng, emerg, 5), _clusters(rng, calm, 15)])
    y_val = np.array([0] * 10 + [2] * 30)
    no_flags = np.zeros(len(y_val), dtype=bool)
    traps = np.zeros(len(y_val), dtype=bool)
    # a head that ranks calm rows above emergencies: no threshold reaches the precision floor, it adds nothing
    p_head = np.array([[0.1, 0.2, 0.5, 0.2]] * 10 + [[0.4, 0.2, 0.2, 0.2]] * 30, dtype=np.float32)
    chosen, thresholds, table = urgency_train.choose_neighbours(x_train, y_train, x_val, y_val, p_head, no_flags,
                                                               no_flags, traps)
    assert chosen is not None and chosen["k"] in (5, 10, 20)
    best = next(r for r in table if r["k"] == chosen["k"] and r["weight"] == chosen["weight"])
    assert best["emergency_recall"] == 1.0 and best["calm_to_emergency"] <= table[0]["calm_to_emergency"]
    assert best["qualifies"] and best["head_recall_at_same_calm_rate"] < 1.0
    assert thresholds == best["thresholds"]

    # neighbours whose labels carry no information: no blend is kept, the head's own thresholds stand
    y_noise = rng.permutation(np.array([0, 2] * 40))
    x_noise = rng.standard_normal((80, dim)).astype(np.float32)
    chosen, thresholds, table = urgency_train.choose_neighbours(x_noise, y_noise, x_val, y_val, p_head, no_flags,
                                                               no_flags, traps)
    if chosen is None:
        assert thresholds == table[0]["thresholds"]
    else:  # only allowed if it beats the head at the same rate of calm rows raised
        best = next(r for r in table if r["k"] == chosen["k"] and r["weight"] == chosen["weight"])
        assert best["emergency_recall"] > best["head_recall_at_same_calm_rate"]


def test_head_recall_is_read_at_a_matched_calm_rate():
    y = np.array([0, 0, 0, 2, 2, 2, 2])
    p = np.zeros((7, 4), dtype=np.float32)
    p[:, 0] = [0.9, 0.6, 0.05, 0.7, 0.1, 0.1, 0.1]  # calm rows outrank two of the three emergencies
    none = np.zeros(7, dtype=bool)
    assert urgency_train.recall_at_calm_rate(p, y, none, 0.0) == pytest.approx(1 / 3)
    assert urgency_train.recall_at_calm_rate(p, y, none, 0.25) == pytest.approx(2 / 3)
    flagged = np.array([False, False, True, False, False, False, False])  # a red flag catches the third
    assert urgency_train.recall_at_calm_rate(p, y, flagged, 0.0) == pytest.approx(2 / 3)


def test_head_with_neighbours_blends_in_the_served_classifier(head_model_dir, tmp_path):
    from triage.classifier import ModelArtifactError, encode_bank, neighbour_shares

    folder, head, _ = head_model_dir
    model = tmp_path / "m"
    shutil.copytree(folder, model)
    plain = TriageClassifier.from_folder(model, intra_op_threads=1)
    texts = ["my 6 week old is floppy and will not feed", "I have a mild sore throat since yesterday"]
    emb = plain.embed(texts)
    p_head = plain.urgency_head.probabilities(emb)
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((30, emb.shape[1])).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 30)
    doc = dict(head)
    doc["neighbours"] = {"k": 5, "weight": 0.4, "labels": labels.tolist(), **encode_bank(bank)}
    (model / URGENCY_HEAD_FILE).write_text(json.dumps(doc))
    clf = TriageClassifier.from_folder(model, intra_op_threads=1)
    stored = clf.urgency_head.neighbour_embeddings
    want = 0.6 * p_head + 0.4 * neighbour_shares(emb, stored, labels, 5, 4)
    got = np.array([[p.urgency[level] for level in head["labels"]] for p in clf.predict(texts)])
    assert np.allclose(got, want, atol=1e-5) and not np.allclose(got, p_head, atol=1e-3)
    assert clf.urgency_head.info["neighbours"] == {"k": 5, "weight": 0.4, "n": 30}

    doc["neighbours"] = {**doc["neighbours"], "labels": labels[:-1].tolist()}  # one label short
    (model / URGENCY_HEAD_FILE).write_text(json.dumps(doc))
    with pytest.raises(ModelArtifactError, match="neighbours"):
        TriageClassifier.from_folder(model, intra_op_threads=1)


def test_page_context_is_carried_into_derived_complaints():
    """A list item that is an emergency only in its page's context ("problems with memory" after a head injury)
    keeps that context in every complaint derived from it; a statement that already says it gets no clause."""
    import random

    row = {"statement_id": "X1", "statement": "problems with memory", "urgency": "emergency", "center": "neurology",
           "population": "any", "group": "g1", "source_url": "https://www.nhs.uk/x", "source_title": "Head injury",
           "source_section": "When to go to A&E: Go to A&E after a head injury if you or your child have"}
    out = urgency_data.statement_complaints(row, 6, random.Random(0))
    assert all("head" in r["text"].lower() for r in out) and all(r["template"].endswith("/context") for r in out)
    said = {**row, "statement": "a head wound with something inside it"}
    assert urgency_data.statement_context(said) == ()
    noted = {**row, "source_section": "Call 111 if [context: child with a fever]"}
    assert urgency_data.statement_context(noted) == ("with a fever", "and a high temperature")
    plain = {**row, "source_section": "Call 999 if"}
    assert urgency_data.statement_context(plain) == ()
    pregnant = {**row, "population": "pregnancy", "statement": "heavy bleeding",
                "source_section": "Call 999 if you are pregnant or could be pregnant and experience"}
    assert urgency_data.statement_context(pregnant) == ()
