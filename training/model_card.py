"""Model cards: one markdown page per registered version, generated from its MLflow run.

The card is logged to the version's run as ``model_card.md`` (and the version is tagged
``model_card``), so it travels with the model in the registry.
"""

from __future__ import annotations

import json

from serving.registry import configure
from serving.settings import Settings, get_settings
from training.sources import manifest

INTENDED_USE = {
    "triage-classifier": (
        "Routes a patient's free-text complaint (English, lay wording) from an internet-hospital consultation chat to "
        "a specialty center, with calibrated probabilities, and abstains to a human below its threshold. Decision "
        "support for routing only: not a diagnosis. Emergencies are decided by the cited red-flag rules, which "
        "override the model."
    ),
    "ddi-severity": (
        "Estimates the severity class of a drug-drug interaction for pairs of known drugs that the knowledge base has "
        "no entry for. Its output is shown to pharmacists as *predicted*, never as a documented interaction."
    ),
}

LIMITS = {
    "triage-classifier": [
        "Trained on English only; Chinese complaints are out of scope for this version.",
        "Training complaints are short crowd-written or templated texts (Medical Speech Intent, Symptom2Disease) and "
        "physician-written vignettes (Avey); real chat messages are longer and messier.",
        "Centers with little public data are covered by project-written seed complaints, which are never used as "
        "external evaluation; their measured accuracy is therefore less certain.",
        "Not for pediatric or obstetric emergencies on its own: red-flag rules handle those.",
    ],
    "ddi-severity": [
        "DDInter severities agree with other compendia (e.g. Micromedex) for only ~60-70% of pairs; that bounds any "
        "model trained on them.",
        "'No known interaction' is not modelled: absence from DDInter is not evidence of safety.",
        "Drugs without ATC code or structure get weaker predictions; unseen-drug performance is reported separately.",
    ],
}


def model_card(model_name: str, version: str, settings: Settings | None = None, log: bool = True) -> str:
    from mlflow import MlflowClient

    settings = settings or get_settings()
    configure(settings)
    client = MlflowClient()
    mv = client.get_model_version(model_name, str(version))
    run = client.get_run(mv.run_id) if mv.run_id else None
    params = run.data.params if run else {}
    metrics = run.data.metrics if run else {}
    tags = run.data.tags if run else {}

    lines = [f"# Model card: {model_name} version {version}", ""]
    lines += [f"- registered: {mv.creation_timestamp and _ts(mv.creation_timestamp)}",
              f"- run: `{mv.run_id}`", f"- source: `{mv.source}`"]
    for key in ("git_commit", "taxonomy_version", "kb_version"):
        if key in tags:
            lines.append(f"- {key.replace('_', ' ')}: `{tags[key]}`")
    lines += ["", "## Intended use", "", INTENDED_USE.get(model_name, "See the project documentation."), ""]

    lines += ["## Training data and licences", ""]
    used = _sources_used(params, tags)
    srcs = manifest()
    if used:
        lines += ["| source | licence | commercial use |", "|---|---|---|"]
        for sid in sorted(used):
            entry = srcs.get(sid, {})
            lines.append(f"| {sid} | {entry.get('licence', 'project-written')} | {entry.get('commercial_use', 'yes')} |")
    else:
        lines.append("The run did not record its data files.")
    lines += ["", "## Parameters", ""]
    lines += [f"- `{k}` = `{v}`" for k, v in sorted(params.items())[:60]]
    lines += ["", "## Metrics (from the training run)", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    lines += ["", "## Limits", ""]
    lines += [f"- {item}" for item in LIMITS.get(model_name, [])]
    text = "\n".join(lines) + "\n"
    if log and run is not None:
        client.log_text(run.info.run_id, text, f"model_card_v{version}.md")
        client.set_model_version_tag(model_name, str(version), "model_card", f"model_card_v{version}.md")
    return text


def _sources_used(params: dict, tags: dict) -> set[str]:
    found = set()
    for key, value in list(params.items()) + list(tags.items()):
        blob = f"{key} {value}"
        for sid in manifest():
            if sid in blob:
                found.add(sid)
        if "project_seed" in blob or "seed_complaints" in blob:
            found.add("project_seed")
    return found


def _ts(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def card_json(model_name: str, version: str, settings: Settings | None = None) -> str:
    return json.dumps({"model": model_name, "version": version,
                       "card": model_card(model_name, version, settings, log=False)})
