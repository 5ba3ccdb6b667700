"""The engine-independent part of the re-screen (``training.rescreen``): job spec, one row, one batch, inputs, outputs.

    python -m training rescreen --kb <kb-version|current|path> [--ddi-model <uri>] --input <files/dirs>...
        [--engine local|spark] --out <dir> [--queue] [--db-url URL]

When a KB row or the risk model changes, this says which stored prescriptions now get another verdict or other
findings than the result stored with them, and (``--queue``) puts the newly flagged ones in the pharmacists'
review queue.  See docs/rescreen.md for the formats.

One code path with the online service: every batch of rows goes through :func:`screen_frame` with a checker built
by ``serving.components.load_checker`` (the KB artefact + the optional DDI predictor from
``serving.components.load_ddi_predictor``), built once per process (:func:`checker_for`).  The local engine calls
it batch by batch in this process; the Spark engine (``training.rescreen_spark``) calls it from ``mapInPandas``
in every executor.  Both write the same files:

- ``<out>/report/*.parquet``: every prescription whose verdict or findings changed against its stored previous
  result (or that had none), with old/new KB and model versions, old/new verdict, added/removed findings;
- ``<out>/rejects/*.parquet``: every input file that is missing or unreadable and every row that cannot be read
  or fails validation, with the reason (nothing is dropped silently);
- ``<out>/queued.parquet`` (with ``--queue``): what happened to each newly flagged prescription;
- ``<out>/summary.json``: counts, versions, engine, time.

Exit status: 0 done; 1 done, but some inputs were missing/unreadable or some queueing failed (named on stderr
and in the files); 2 nothing done (unknown KB version, unknown model, bad arguments).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from prescription_check import Checker, Prescription
from prescription_check.kb import KBError, stale_reason
from prescription_check.schemas import SEVERITIES, SEVERITY_RANK
from serving.components import load_checker, load_ddi_predictor
from serving.registry import ModelNotFoundError, configure, resolve_model_dir
from serving.review_queue import should_queue
from serving.settings import CURATED_DRUG_TABLES_DIR, Settings

log = logging.getLogger("training.rescreen")

KB_EXPERIMENT = "knowledge-base"  # where ``python -m training kb --log-mlflow`` logs KB artefacts
KB_VERSION_RE = re.compile(r"^kb-[0-9a-f]{16}$")
INPUT_COLUMNS = ("source", "line", "prescription_id", "prescription_json", "previous_json", "synthetic")
PARQUET_COLUMNS = ("prescription_id", "prescription_json", "previous_json", "synthetic")  # the input file format
REQUIRED_PARQUET_COLUMN = "prescription_json"
VERDICTS = ("pass", "review", "block")
RAW_MAX_CHARS = 2000
ID_MAX_CHARS = 200
REPORT_DIR, REJECTS_DIR, QUEUED_FILE, SUMMARY_FILE = "report", "rejects", "queued.parquet", "summary.json"

# (name, type) of every row screen_frame returns; types are Arrow/Spark's "string" and "bool"
RESULT_FIELDS: tuple[tuple[str, str], ...] = (
    ("prescription_id", "string"), ("source", "string"), ("synthetic", "bool"), ("status", "string"),
    ("reason", "string"), ("had_previous", "bool"),
    ("old_verdict", "string"), ("new_verdict", "string"),
    ("old_kb_version", "string"), ("new_kb_version", "string"),
    ("old_model_version", "string"), ("new_model_version", "string"),
    ("new_max_severity", "string"),
    ("verdict_changed", "bool"), ("findings_changed", "bool"), ("changed", "bool"), ("newly_flagged", "bool"),
    ("added_findings", "string"), ("removed_findings", "string"),
    ("prescription_json", "string"), ("raw", "string"),
)
RESULT_COLUMNS = tuple(name for name, _ in RESULT_FIELDS)
REPORT_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in {"status", "reason", "raw"})
REJECT_COLUMNS = ("prescription_id", "source", "synthetic", "reason", "raw")


class RescreenError(RuntimeError):
    """The job cannot start (unknown KB version, unknown model, bad output folder): the message names it."""


# --- what the job runs with ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """Everything an executor needs to build the same checker as the driver (picklable, small)."""

    kb_path: str
    kb_sha256: str
    kb_version: str
    model_folder: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    policy: dict = field(default_factory=dict)  # the verdict/queue settings (serving.settings names)
    shipped: bool = False  # Spark: the KB file and model folder were sent with SparkContext.addFile

    @property
    def queue_min_severity(self) -> str:
        return self.policy.get("queue_min_severity", "moderate")


POLICY_SETTINGS = ("verdict_block_severities", "verdict_review_severities", "ddi_review_threshold",
                   "queue_min_severity")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def kb_version_of(path: Path) -> str:
    """The ``version`` recorded in a KB artefact (plain or gzipped JSON); KBError when it has none."""
    try:
        data = Path(path).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        version = json.loads(data).get("version")
    except (OSError, ValueError, AttributeError) as exc:
        raise KBError(f"KB artefact {path} is unreadable: {exc}") from exc
    if not isinstance(version, str):
        raise KBError(f"KB artefact {path} records no version")
    return version


def resolve_kb(spec: str, settings: Settings) -> Path:
    """``--kb``: a file path, ``current`` (the configured artefact), or a version ``kb-<16 hex>``: the configured
    artefact when it is that version, else the artefact logged to MLflow experiment 'knowledge-base' with tag
    ``kb_version`` = spec (``python -m training kb --log-mlflow``), downloaded to ``<work_dir>/kb-cache``."""
    as_path = Path(spec)
    if as_path.is_file():
        return as_path
    configured = settings.resolved_kb_path()
    if spec == "current":
        if not configured.is_file():
            raise RescreenError(f"--kb current: no KB artefact at {configured} (build it: python -m training kb)")
        return configured
    if not KB_VERSION_RE.match(spec):
        raise RescreenError(f"--kb {spec!r} is neither a KB file, 'current', nor a KB version (kb-<16 hex digits>)")
    if configured.is_file():
        try:
            if kb_version_of(configured) == spec:
                return configured
        except KBError:
            pass
    found = _kb_from_mlflow(spec, settings)
    if found is None:
        current = ""
        if configured.is_file():
            try:
                current = f" ({kb_version_of(configured)})"
            except KBError:
                current = " (unreadable)"
        raise RescreenError(
            f"unknown KB version {spec}: the configured artefact {configured}{current} is another version and no "
            f"run of MLflow experiment {KB_EXPERIMENT!r} at {settings.resolved_tracking_uri()} has tag "
            f"kb_version={spec} (log one with: python -m training kb --log-mlflow)")
    return found


def _kb_from_mlflow(version: str, settings: Settings) -> Path | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    configure(settings)
    try:
        experiment = mlflow.get_experiment_by_name(KB_EXPERIMENT)
        if experiment is None:
            return None
        runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id],
                                  filter_string=f"tags.kb_version = '{version}'",
                                  order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
        if not runs:
            return None
        dest = settings.work_dir / "kb-cache" / version
        local = Path(mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="kb",
                                                         dst_path=str(dest)))
    except MlflowException as exc:
        raise RescreenError(f"KB version {version}: the MLflow store cannot be read: {exc.message}") from exc
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name.startswith("kb"))
    for path in files:
        try:
            if kb_version_of(path) == version:
                return path
        except KBError:
            continue
    raise RescreenError(f"KB version {version}: the MLflow run {runs[0].info.run_id} holds no readable artefact "
                        f"of that version (files: {[p.name for p in files]})")


def build_spec(kb: str, ddi_model: str | None, settings: Settings) -> tuple[JobSpec, Checker]:
    """Resolve ``--kb`` and ``--ddi-model`` once, on the driver, and load the checker exactly as the service does
    (with the stale-KB check): a model alias is fixed to the version it points at now, so every partition runs
    that version even if the alias moves while the job runs.  RescreenError names what is unknown.  A process
    that runs several jobs (tests, notebooks) loads the same KB + model + policy once."""
    kb_path = resolve_kb(kb, settings)
    folder = version = None
    if ddi_model:
        try:
            folder_path, version = resolve_model_dir(ddi_model, settings)
        except ModelNotFoundError as exc:
            raise RescreenError(f"--ddi-model {ddi_model}: {exc}") from exc
        folder = str(folder_path)
    spec = JobSpec(kb_path=str(kb_path.resolve()), kb_sha256=_sha256(kb_path), kb_version="",
                   model_folder=folder, model_version=version, model_uri=ddi_model,
                   policy={name: getattr(settings, name) for name in POLICY_SETTINGS})
    checker = _DRIVER_CHECKERS.get(_cache_key(spec))
    if checker is not None:
        stale = stale_reason(checker.kb.raw.get("sources", {}), CURATED_DRUG_TABLES_DIR)
        if stale:
            raise RescreenError(f"--kb {kb}: KB artefact {kb_path} ({checker.kb_version}) is stale: {stale}")
    else:
        predictor = None
        if folder:
            try:
                predictor = load_ddi_predictor(folder, settings, version=version)
            except Exception as exc:
                raise RescreenError(f"--ddi-model {ddi_model}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
        try:
            checker = load_checker(settings.model_copy(update={"kb_path": kb_path}), ddi_predictor=predictor,
                                   model_status=_status(predictor))
        except KBError as exc:
            raise RescreenError(f"--kb {kb}: {exc}") from exc
        _DRIVER_CHECKERS[_cache_key(spec)] = checker
    return replace(spec, kb_version=checker.kb_version, model_version=checker.model_version), checker


def _status(predictor) -> str | None:
    return None if predictor is not None else "rules-only: no --ddi-model given"


_CHECKERS: dict[tuple, Checker] = {}  # one checker per process and job spec (Spark reuses Python workers)
_DRIVER_CHECKERS: dict[tuple, Checker] = {}  # the driver's, loaded with the stale-KB check


def _cache_key(spec: JobSpec) -> tuple:
    return (spec.kb_sha256, spec.model_folder, spec.model_version,
            json.dumps(spec.policy, sort_keys=True))


def checker_for(spec: JobSpec) -> Checker:
    """The checker of ``spec`` in this process, built once (``serving.components``, as the service builds it).

    On a Spark executor the KB file and model folder come through ``SparkFiles``; the file must be the one the
    driver checked (same sha256), so the stale-KB check is not repeated there."""
    key = _cache_key(spec)
    checker = _CHECKERS.get(key)
    if checker is not None:
        return checker
    kb_path, folder = Path(spec.kb_path), spec.model_folder
    if spec.shipped:
        from pyspark import SparkFiles

        kb_path = Path(SparkFiles.get(kb_path.name))
        folder = SparkFiles.get(Path(folder).name) if folder else None
    if _sha256(kb_path) != spec.kb_sha256:
        raise KBError(f"KB artefact {kb_path} is not the one the job was started with (sha256 differs)")
    settings = Settings(kb_path=kb_path, **spec.policy)
    predictor = load_ddi_predictor(folder, settings, version=spec.model_version) if folder else None
    started = time.perf_counter()
    checker = load_checker(settings, ddi_predictor=predictor, model_status=_status(predictor), verify_curated=False)
    log.info("checker %s built in process %d in %.1f s", spec.kb_version, os.getpid(), time.perf_counter() - started)
    _CHECKERS[key] = checker
    return checker


# --- one row, one batch ----------------------------------------------------------------------------------


class RowError(ValueError):
    """A row that cannot be screened; the message is the reject reason."""


def _none(value: Any) -> Any:
    """pandas/Arrow missing values (None, NaN, pd.NA) -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ == "NAType":
        return None
    return value


def _validation_reason(exc: ValidationError, what: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {err.get('msg')}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"{what} fails validation: " + "; ".join(parts) + more


def _previous(value: Any) -> dict | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise RowError(f"previous result is not valid JSON: {exc}") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RowError("previous result must be a JSON object")
    if value.get("verdict") not in VERDICTS:
        raise RowError(f"previous result: verdict must be one of {', '.join(VERDICTS)}, not {value.get('verdict')!r}")
    findings = value.get("findings") or []
    if not isinstance(findings, list):
        raise RowError("previous result: findings must be a list")
    for i, f in enumerate(findings):
        if not isinstance(f, dict) or not isinstance(f.get("rule_id"), str) or f.get("severity") not in SEVERITIES:
            raise RowError(f"previous result: findings[{i}] needs a rule_id and a severity ({', '.join(SEVERITIES)})")
    for name in ("kb_version", "model_version"):
        if value.get(name) is not None and not isinstance(value.get(name), str):
            raise RowError(f"previous result: {name} must be a string")
    return {**value, "findings": findings}


def _clean_id(value: Any, what: str) -> str | None:
    value = _none(value)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RowError(f"{what} must be a string")
    value = str(value).strip()
    if not value:
        return None
    if len(value) > ID_MAX_CHARS or "\x00" in value:
        raise RowError(f"{what} must be 1-{ID_MAX_CHARS} characters without NUL")
    return value


def parse_row(line: str | None, pid: Any, rx_json: str | None, prev_json: str | None,
              synthetic: Any) -> tuple[str, Prescription, dict | None, bool | None]:
    """One input row (a JSONL line, or the Parquet columns) -> (prescription id, validated prescription, previous
    result or None, synthetic flag).  RowError names what is wrong."""
    if line is not None:
        text = line.lstrip("\ufeff").strip()
        if not text:
            raise RowError("blank line")
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise RowError(f"line is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise RowError("line is not a JSON object")
        if "prescription" in obj:
            rx_obj, prev = obj["prescription"], obj.get("previous")
            pid = obj.get("prescription_id", obj.get("id"))
            synthetic = obj.get("synthetic")
        elif "items" in obj:
            rx_obj, prev, pid = obj, None, obj.get("id")
        else:
            raise RowError("line has neither a 'prescription' object nor prescription fields ('items')")
        if not isinstance(rx_obj, dict):
            raise RowError("'prescription' must be a JSON object")
        try:
            rx = Prescription.model_validate(rx_obj)
        except ValidationError as exc:
            raise RowError(_validation_reason(exc, "prescription")) from None
    else:
        rx_json = _none(rx_json)
        if rx_json is None or not str(rx_json).strip():
            raise RowError("prescription_json is empty")
        try:
            rx = Prescription.model_validate_json(rx_json)
        except ValidationError as exc:
            raise RowError(_validation_reason(exc, "prescription_json")) from None
        prev = _none(prev_json)
    previous = _previous(prev)
    synthetic = _none(synthetic)
    if synthetic is not None and not isinstance(synthetic, bool):
        raise RowError("synthetic must be true or false")
    pid = _clean_id(pid, "prescription_id")
    if pid is not None and rx.id is not None and rx.id != pid:
        raise RowError(f"prescription_id {pid!r} differs from the prescription's own id {rx.id!r}")
    pid = pid or rx.id
    if pid is None:  # content-addressed: the same prescription gets the same id in every run
        pid = "sha256:" + hashlib.sha256(rx.model_dump_json().encode()).hexdigest()[:24]
    if rx.id is None:
        rx = rx.model_copy(update={"id": pid})
    return pid, rx, previous, synthetic


def finding_key(f: dict) -> str:
    """What makes two findings the same finding across runs: rule, severity and drugs (not the wording)."""
    return f"{f.get('rule_id')}|{f.get('severity')}|{'+'.join(sorted(str(d) for d in f.get('drugs') or []))}"


def _compact(f: dict) -> dict:
    keep = ("rule_id", "category", "severity", "drugs", "predicted", "message")
    return {k: f[k] for k in keep if k in f}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def screen_row(checker: Checker, queue_min_severity: str, source: str, line: str | None, pid: Any,
               rx_json: str | None, prev_json: str | None, synthetic: Any) -> dict:
    """One input row -> one result row (``RESULT_COLUMNS``): screened with its changes, or rejected with why."""
    row = dict.fromkeys(RESULT_COLUMNS)
    row["source"] = source
    try:
        pid, rx, previous, synthetic = parse_row(line, pid, rx_json, prev_json, synthetic)
        try:
            result = checker.check(rx)
        except Exception as exc:  # noqa: BLE001 - a checker failure is this row's reject, never a lost row
            raise RowError(f"checker failed: {type(exc).__name__}: {exc}") from None
    except RowError as exc:
        raw = line if line is not None else _none(rx_json)
        fallback = _none(pid)
        row.update(prescription_id=None if fallback is None else str(fallback)[:ID_MAX_CHARS],
                   synthetic=_none(synthetic) if isinstance(_none(synthetic), bool) else None,
                   status="rejected", reason=str(exc), raw=None if raw is None else str(raw)[:RAW_MAX_CHARS])
        return row
    new = [f.model_dump(mode="json") for f in result.findings]
    new_by_key = {finding_key(f): f for f in new}
    old = previous["findings"] if previous else []
    old_by_key = {finding_key(f): f for f in old}
    added = [_compact(new_by_key[k]) for k in sorted(new_by_key.keys() - old_by_key.keys())]
    removed = [_compact(old_by_key[k]) for k in sorted(old_by_key.keys() - new_by_key.keys())]
    had_previous = previous is not None
    verdict_changed = not had_previous or previous["verdict"] != result.verdict
    findings_changed = bool(added or removed)
    changed = verdict_changed or findings_changed
    limit = SEVERITY_RANK[queue_min_severity]
    flagged_now = should_queue(result.verdict, new, queue_min_severity)
    flagged_before = had_previous and should_queue(previous["verdict"], old, queue_min_severity)
    newly_flagged = flagged_now and (not flagged_before or any(SEVERITY_RANK[f["severity"]] <= limit for f in added))
    severities = [SEVERITY_RANK[f["severity"]] for f in new]
    row.update(
        prescription_id=pid, synthetic=synthetic, status="screened", had_previous=had_previous,
        old_verdict=previous["verdict"] if previous else None, new_verdict=result.verdict,
        old_kb_version=previous.get("kb_version") if previous else None, new_kb_version=result.kb_version,
        old_model_version=previous.get("model_version") if previous else None,
        new_model_version=result.model_version,
        new_max_severity=SEVERITIES[min(severities)] if severities else None,
        verdict_changed=verdict_changed, findings_changed=findings_changed, changed=changed,
        newly_flagged=newly_flagged, added_findings=_dumps(added), removed_findings=_dumps(removed),
        prescription_json=rx.model_dump_json(exclude_none=True) if changed else None,
    )
    return row


def screen_frame(pdf, checker: Checker, queue_min_severity: str):
    """A pandas DataFrame of input rows (``INPUT_COLUMNS``) -> a DataFrame of result rows (``RESULT_COLUMNS``).
    The one function both engines run."""
    import pandas as pd

    columns = [pdf[c].tolist() if c in pdf.columns else [None] * len(pdf) for c in INPUT_COLUMNS]
    rows = [screen_row(checker, queue_min_severity, _none(source) or "?", _none(line), pid, rx_json, prev_json,
                       synthetic)
            for source, line, pid, rx_json, prev_json, synthetic in zip(*columns)]
    return pd.DataFrame.from_records(rows, columns=list(RESULT_COLUMNS))


def keep_torch_out() -> None:
    """Make ``import torch`` fail in this process unless it is imported already.

    spaCy (the sig parser) imports thinc, which imports torch when it is installed (the dev/CI env has it for
    training): ~4 s and ~180 MB per process, for nothing -- the checker and the DDI model (ONNX) never use it.
    The service does the same (serving/__main__.py).  Done where the re-screen owns the process: the CLI entry
    (``python -m training rescreen``, in ``training/__main__.py``), the benchmark and the Spark engine's Python
    workers; never in a library call or ``rescreen.main``, so a test process that needs torch later keeps it."""
    if "torch" not in sys.modules:
        sys.modules["torch"] = None


COUNT_COLUMNS = ("rows", "screened", "changed", "newly_flagged", "rejected_rows")


def count_frame(results):
    """One row of counts (``COUNT_COLUMNS``) for a DataFrame of result rows."""
    import pandas as pd

    screened = results["status"] == "screened"
    return pd.DataFrame({
        "rows": [len(results)], "screened": [int(screened.sum())], "changed": [int((results["changed"] == True).sum())],
        "newly_flagged": [int((results["newly_flagged"] == True).sum())],
        "rejected_rows": [int((~screened).sum())],
    }, dtype="int64")


def screen_partition(batches: Iterable, spec: JobSpec, out: Path, part: str, checker: Checker | None = None) -> Iterator:
    """The body both engines run on their share of the rows: every batch (a DataFrame of ``INPUT_COLUMNS``) goes
    through :func:`screen_frame` with the checker of ``spec`` (built once per process), its report and reject rows
    are appended to this part's files (:class:`PartWriter`), and a one-row DataFrame of its counts is yielded (the
    local engine's progress bar; Spark's ``mapInPandas`` output, summed on the driver)."""
    checker = checker or checker_for(spec)
    writer = PartWriter(out, part)
    ok = False
    try:
        for pdf in batches:
            results = screen_frame(pdf, checker, spec.queue_min_severity)
            writer.add(results)
            yield count_frame(results)
        ok = True
    finally:
        writer.close(ok)


# --- inputs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    path: str  # as the engines read it: an absolute local path (or a URI with a scheme for Spark)
    fmt: str  # "parquet" | "jsonl"
    columns: tuple[str, ...] = ()  # Parquet: which of PARQUET_COLUMNS the file has
    rows: int | None = None  # Parquet: from the footer
    row_groups: int | None = None  # Parquet: from the footer (Spark splits a file at row-group boundaries)
    size: int = 0  # bytes


def _fmt(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return None


def file_reject(path: str, reason: str) -> dict:
    row = dict.fromkeys(RESULT_COLUMNS)
    row.update(source=path, status="rejected", reason=reason)
    return row


def expand_inputs(paths: list[str]) -> tuple[list[InputFile], list[dict]]:
    """Input paths (files or folders of ``.parquet`` / ``.jsonl``) -> readable files, and a reject row for every
    path that is missing, of another format or unreadable (naming it and why)."""
    import pyarrow.parquet as pq

    files: list[InputFile] = []
    rejects: list[dict] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            rejects.append(file_reject(given, f"input {given}: not found"))
            continue
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _fmt(p) and not p.name.startswith(("_", ".")))
            if not found:
                rejects.append(file_reject(given, f"input {given}: folder holds no .parquet or .jsonl files"))
                continue
        else:
            found = [path]
        for p in found:
            shown = str(p.resolve())
            fmt = _fmt(p)
            if fmt is None:
                rejects.append(file_reject(shown, f"input {shown}: not a .parquet or .jsonl file"))
            elif fmt == "parquet":
                try:
                    meta = pq.ParquetFile(p)
                    names = set(meta.schema_arrow.names)
                    rows = meta.metadata.num_rows
                except Exception as exc:  # noqa: BLE001 - any reader error means unreadable
                    rejects.append(file_reject(shown, f"input {shown}: unreadable Parquet: {type(exc).__name__}: "
                                                      f"{str(exc)[:300]}"))
                    continue
                if REQUIRED_PARQUET_COLUMN not in names:
                    rejects.append(file_reject(shown, f"input {shown}: has no column {REQUIRED_PARQUET_COLUMN!r} "
                                                      f"(columns: {', '.join(sorted(names))})"))
                    continue
                files.append(InputFile(shown, fmt, tuple(c for c in PARQUET_COLUMNS if c in names), rows,
                                       meta.metadata.num_row_groups, p.stat().st_size))
            else:
                try:
                    with open(p, "rb") as fh:
                        fh.read(1)
                except OSError as exc:
                    rejects.append(file_reject(shown, f"input {shown}: unreadable: {exc.strerror or exc}"))
                    continue
                files.append(InputFile(shown, fmt, size=p.stat().st_size))
    return files, rejects


def count_rows(files: list[InputFile]) -> int:
    total = 0
    for f in files:
        if f.rows is not None:
            total += f.rows
        else:
            with open(f.path, "rb") as fh:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return total


def local_batches(files: list[InputFile], batch_rows: int) -> Iterator:
    """Input rows as pandas DataFrames of ``INPUT_COLUMNS``, ``batch_rows`` at a time, file by file.  The row
    sources are the ones the Spark engine gives (``<file>#row=<0-based row>`` / ``<file>:<1-based line>``)."""
    import pandas as pd
    import pyarrow.parquet as pq

    for f in files:
        if f.fmt == "parquet":
            offset = 0
            for batch in pq.ParquetFile(f.path).iter_batches(batch_size=batch_rows, columns=list(f.columns)):
                data = {c: batch.column(c).to_pylist() for c in f.columns}
                n = batch.num_rows
                data["source"] = [f"{f.path}#row={offset + i}" for i in range(n)]
                data["line"] = [None] * n
                offset += n
                yield pd.DataFrame({c: data.get(c, [None] * n) for c in INPUT_COLUMNS})
        else:
            # universal newlines and UTF-8 with replacement: the same lines Hadoop's text reader gives Spark
            with open(f.path, encoding="utf-8", errors="replace", newline=None) as fh:
                sources: list[str] = []
                lines: list[str] = []
                for number, line in enumerate(fh, start=1):
                    sources.append(f"{f.path}:{number}")
                    lines.append(line.rstrip("\n"))
                    if len(lines) >= batch_rows:
                        yield _jsonl_frame(sources, lines)
                        sources, lines = [], []
                if lines:
                    yield _jsonl_frame(sources, lines)


def _jsonl_frame(sources: list[str], lines: list[str]):
    import pandas as pd

    n = len(lines)
    return pd.DataFrame({"source": sources, "line": lines, "prescription_id": [None] * n,
                         "prescription_json": [None] * n, "previous_json": [None] * n, "synthetic": [None] * n})


# --- outputs ---------------------------------------------------------------------------------------------


def arrow_schema(columns: Iterable[str] = RESULT_COLUMNS):
    import pyarrow as pa

    types = {"string": pa.string(), "bool": pa.bool_()}
    kinds = dict(RESULT_FIELDS)
    return pa.schema([(c, types[kinds[c]]) for c in columns])


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RescreenError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RescreenError(f"--out {out} is not empty (use --overwrite to replace its report)")


def prepare_out(out: Path, overwrite: bool) -> None:
    check_out(out, overwrite)
    if out.exists() and any(out.iterdir()):
        import shutil

        for name in (REPORT_DIR, REJECTS_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (QUEUED_FILE, SUMMARY_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


class PartWriter:
    """One part of the output: ``<out>/report/<part>.parquet`` and ``<out>/rejects/<part>.parquet``, each opened
    when its first row comes.  Written under a temporary ``_tmp-`` name (readers skip ``_`` files) and renamed
    when the part is complete, so a retried Spark task replaces its part instead of adding a second copy, and a
    failed one leaves no half file."""

    def __init__(self, out: Path | str, part: str):
        self.out, self.part = Path(out), part
        self._open: dict[str, tuple] = {}

    def write(self, folder: str, frame, columns: tuple[str, ...]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not len(frame):
            return
        schema = arrow_schema(columns)
        if folder not in self._open:
            (self.out / folder).mkdir(parents=True, exist_ok=True)
            tmp = self.out / folder / f"_tmp-{self.part}-{uuid.uuid4().hex[:12]}.parquet"
            self._open[folder] = (pq.ParquetWriter(tmp, schema), tmp, self.out / folder / f"{self.part}.parquet")
        self._open[folder][0].write_table(pa.Table.from_pandas(frame[list(columns)], schema=schema,
                                                               preserve_index=False))

    def add(self, results) -> None:
        """Result rows of :func:`screen_frame`: the changed ones to the report, the rejected ones to rejects."""
        report, rejects = split_results(results)
        self.write(REPORT_DIR, report, REPORT_COLUMNS)
        self.write(REJECTS_DIR, rejects, REJECT_COLUMNS)

    def close(self, ok: bool = True) -> None:
        for writer, tmp, final in self._open.values():
            writer.close()
            if ok:
                os.replace(tmp, final)
            else:
                tmp.unlink(missing_ok=True)
        self._open.clear()


def write_file_rejects(out: Path, file_rejects: list[dict]) -> None:
    """The rejects of whole inputs (missing, unreadable), written by the driver as ``rejects/part-inputs``."""
    import pandas as pd

    if file_rejects:
        writer = PartWriter(out, "part-inputs")
        writer.write(REJECTS_DIR, pd.DataFrame.from_records(file_rejects, columns=list(RESULT_COLUMNS)),
                     REJECT_COLUMNS)
        writer.close()


def finish_out(out: Path) -> None:
    """After a run: leftovers of failed attempts removed; a folder without parts gets an empty one (with the
    schema), so ``pandas.read_parquet(<out>/report)`` reads zero rows instead of failing."""
    import pyarrow.parquet as pq

    for folder, columns in ((REPORT_DIR, REPORT_COLUMNS), (REJECTS_DIR, REJECT_COLUMNS)):
        path = out / folder
        path.mkdir(parents=True, exist_ok=True)
        for tmp in path.glob("_tmp-*"):
            tmp.unlink(missing_ok=True)
        if not any(p.suffix == ".parquet" for p in path.iterdir()):
            pq.write_table(arrow_schema(columns).empty_table(), path / "part-00000.parquet")


@dataclass
class Counts:
    rows: int = 0
    screened: int = 0
    changed: int = 0
    newly_flagged: int = 0
    rejected_rows: int = 0
    rejected_inputs: int = 0

    def add(self, counts) -> None:
        """A one-row count frame (:func:`count_frame`) or a mapping of ``COUNT_COLUMNS``."""
        for name in COUNT_COLUMNS:
            value = counts[name]
            setattr(self, name, getattr(self, name) + int(value.iloc[0] if hasattr(value, "iloc") else value or 0))


def split_results(results):
    """A DataFrame of result rows -> (report rows, reject rows)."""
    screened = results["status"] == "screened"
    report = results[screened & (results["changed"] == True)]
    rejects = results[~screened]
    return report[list(REPORT_COLUMNS)], rejects[list(REJECT_COLUMNS)]


def run_local(files: list[InputFile], file_rejects: list[dict], spec: JobSpec, checker: Checker, out: Path, *,
              batch_rows: int = 2000, progress: bool = True) -> Counts:
    """The single-process engine: :func:`screen_partition` (what every Spark task runs) over all the rows as one
    part, a tqdm bar over the rows."""
    from tqdm import tqdm

    counts = Counts(rejected_inputs=len(file_rejects))
    write_file_rejects(out, file_rejects)
    with tqdm(total=count_rows(files) if progress else None, unit="rx", desc="rescreen", disable=not progress,
              mininterval=1.0) as bar:
        for batch_counts in screen_partition(local_batches(files, batch_rows), spec, out, "part-00000", checker):
            counts.add(batch_counts)
            bar.update(int(batch_counts["rows"].iloc[0]))
    finish_out(out)
    return counts
