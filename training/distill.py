"""Distil the fine-tuned triage classifier (the teacher) into a smaller student with fewer encoder layers.

    python -m training distill --teacher models:/triage-classifier@champion [--layers 2]
    python -m training distill --teacher var/runs/triage/<run>/model --layers 2 --no-cross-source   # a folder

The student is the same architecture (MiniLM, mean-pooled head, same tokenizer) with ``--layers`` encoder layers,
initialised from the teacher: its word/position embeddings, the chosen teacher layers (default evenly spaced,
first and last included: 0, 2, 5 of 6) and its center head.  It is exported with the same artefact layout as
``training.triage_train`` (``model.onnx``, ``model.int8.onnx``, ``tokenizer/``, ``labels.json``, ``meta.json``,
``urgency_head.json``), so the service loads it unchanged.  One run = one MLflow run in experiment ``triage``,
steps (each a function):

1. ``prepare``: the teacher's artefact (a registry URI or a folder) and the teacher's own split (the seed in its
   ``meta.json``), so validation and test rows are exactly the teacher's;
2. ``transfer_set``: every training text with its label, one word-dropout copy of each (unlabelled), and
   unlabelled complaint text: the guidance-derived complaints of the urgency data's *training* statement groups
   and the external rows whose label map drops them; any text in, or near-duplicate of, a validation or test row
   is removed.  Saved with the run (``data/transfer.csv``: text, label or empty, source, provenance);
3. ``teacher_model``: the teacher's torch weights rebuilt from its fp32 ONNX graph (registered versions carry no
   torch weights), checked against onnxruntime (``teacher_parity``);
4. ``soft_targets``: the teacher's logits and pooled embeddings on the transfer set (once, fp32);
5. ``init_student`` + ``distil``: loss = ``alpha`` * T^2 * KL(teacher || student at temperature T) + (1 - alpha)
   * class-weighted cross entropy on the labelled rows + ``embedding_weight`` * (1 - cosine(student pooled,
   teacher pooled)), early stopping on validation macro-F1;
6. ``calibrate`` / ``evaluate_test``: temperature and abstention threshold on validation; in-source test beside
   the teacher on the same rows (accuracy, macro-F1, top-3, ECE, selective accuracy, top-1 agreement);
7. ``export``: ONNX, parity, int8; ``urgency``: the urgency head refitted (frozen mode) on the student's int8
   embeddings and its thresholds chosen on validation (``training.urgency_train``), measured like the teacher's;
8. ``cross_source``: per direction, a fresh teacher trained on one public source as ``training.triage_train``
   does, a student distilled from it (no text of the other source), both tested on the other source;
9. ``report`` / ``register``: metrics, report and ``model/`` logged; a new version of ``triage-classifier``
   (never an alias by itself) evaluated by ``training.lifecycle_eval`` (logged to the run as
   ``registered_eval_*``); with ``--promote`` (default) ``training.lifecycle.promote`` then moves ``champion``
   only if the gate in ``training/gates/triage.json`` passes (never forced).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import triage_eval as ev
from serving.registry import resolve_model_dir
from serving.settings import Settings, get_settings
from training import center_statements, lifecycle, onnx_export, registry, urgency_train
from training.onnx_export import _by_length
from training.sources import hashes_for
from training.triage_data import (
    AVEY,
    NEAR_DUP_THRESHOLD,
    S2D,
    SPEECH,
    _read_avey,
    _read_s2d,
    _read_speech,
    cross_source_splits,
    dataset_files,
    dataset_hashes,
    load_examples,
    make_splits,
    near_duplicate_groups,
    normalise_text,
)
from training.triage_train import (
    EXPERIMENT,
    TRIAGE_MODEL_NAME,
    TrainOptions,
    _description_rows,
    _eval_block,
    _length_batches,
    _quiet_transformers,
    class_weights,
    fit,
    git_commit,
    new_model,
    predict_logits,
    set_seed,
)
from training.triage_train import load_tokenizer as encoder_tokenizer
from training.urgency_data import data_hash as guidance_hash
from triage.classifier import URGENCY_HEAD_FILE, TriageClassifier, UrgencyHead
from triage.taxonomy import load_taxonomy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)

DEFAULT_TEACHER = "models:/triage-classifier@champion"
UNLABELLED = -1  # label id of a transfer row without a hard label


class DistillError(RuntimeError):
    """The teacher cannot be distilled (missing file, unknown layer, ...); the message says why."""


@dataclass
class DistillOptions:
    teacher: str = DEFAULT_TEACHER
    layers: int = 2  # 3 layers measured 1.8-2.0x the teacher's texts/s, 2 layers 2.6-2.7x (docs/benchmarks.md)
    layer_map: tuple[int, ...] | None = None  # teacher layer per student layer; None: evenly spaced
    epochs: int = 4
    patience: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    temperature: float = 2.0  # distillation temperature T
    alpha: float = 0.7  # weight of the soft (KL) term; 1 - alpha goes to the hard-label cross entropy
    embedding_weight: float = 1.0  # cosine loss between student and teacher pooled embeddings
    # TinyBERT-style intermediate-layer matching (0: off): MSE between each student layer's output and the output of
    # teacher layer hidden_map[j] (default: the input the next student layer's teacher weights expect, see
    # default_hidden_map); KL between the last layers' attention distributions (needs eager attention; the
    # student then trains without attention-probability dropout)
    hidden_weight: float = 0.0
    hidden_map: tuple[int, ...] | None = None
    attention_weight: float = 0.0
    augment: int = 1  # word-dropout copies of each labelled training text (teacher-labelled only)
    unlabelled: bool = True  # guidance-derived complaints + label-map-dropped external rows
    unlabelled_limit: int | None = None  # cap on unlabelled rows (fast runs)
    limit_per_center: int | None = None  # cap labelled rows per center and split (fast runs)
    freeze_embeddings: bool = True
    # the teacher's training rows derived from public condition pages (training.center_statements; a teacher trained
    # with `triage --center-statements` saw them): labelled transfer rows, training split only
    center_statements: bool = False
    # int8 graph of the served model (training.onnx_export.QUANT_SCHEMES; benchmarks/int8_schemes.py compares them on
    # validation texts); int8_exclude: node-name substrings kept fp32; int8_calibration: training texts (static-qdq)
    int8_scheme: str = "dynamic-per-channel"  # 2-layer student: mean logit error to fp32 0.366 -> 0.122 (validation)
    int8_exclude: tuple[str, ...] = ()
    int8_calibration: int = 300
    # fuse the graph before int8 (onnx_export.fused_int8; dynamic schemes): off, as it measured no faster than the
    # unfused int8 at equal fidelity on this project's CPU (benchmarks/fused_int8.py, issue 16)
    fuse: bool = False
    seed: int | None = None  # None: the teacher's seed (its split)
    threads: int = 1  # one thread: a busy shared machine runs a 2-thread torch far slower than twice one thread
    progress: bool = True
    urgency: bool = True  # refit the urgency head on the student's embeddings
    urgency_per_statement: int = 6
    urgency_limit: int | None = None
    urgency_external: bool = True  # measure the urgency decision on the blind set and AcuityBench too
    cross_source: bool = True
    cross_source_epochs: int | None = None  # student epochs per direction (default: epochs)
    cross_source_unlabelled: int = 1000  # unlabelled guidance rows per direction
    # extra student recipes distilled from the same cross-source teachers, e.g. ("hidden_weight=0",): a cheap A/B
    cross_source_variants: tuple[str, ...] = ()
    # the cross-source step does not depend on the in-source teacher's weights (fresh teachers per direction), so it
    # can run before that teacher exists: --cross-source-only (teacher recipe: triage_train's defaults with
    # --teacher-layers) writes cross_source.json; a later run reads it with --cross-source-from after checking
    # that both recipes match
    cross_source_only: bool = False
    teacher_layers: int = 6
    cross_source_from: Path | None = None
    register: bool = True
    promote: bool = True  # try the gated promotion after registering (never forced)
    output_dir: Path | None = None


@dataclass
class Distillation:
    """What the steps of one distillation run share (see ``distil_triage``)."""

    settings: Settings
    opts: DistillOptions
    teacher_dir: Path
    teacher_version: str | None
    teacher_meta: dict
    labels: list[str]
    seed: int
    max_length: int
    layer_map: tuple[int, ...]
    df: pd.DataFrame  # the teacher's split examples
    out: Path
    model_dir: Path
    report_dir: Path
    texts: dict = field(default_factory=dict)
    y: dict = field(default_factory=dict)
    hidden_map: tuple[int, ...] = ()  # teacher layer each student layer's output is matched to (hidden_weight > 0)
    transfer: pd.DataFrame | None = None
    urgency_frame: pd.DataFrame | None = None
    tokenizer: object = None
    teacher: object = None
    student: object = None
    soft_logits: np.ndarray | None = None
    soft_embeddings: np.ndarray | None = None
    temperature: float = 1.0
    choice: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    flat: dict = field(default_factory=dict)
    run_id: str | None = None
    commit: str = ""
    stamp: str = ""


@dataclass
class DistillResult:
    run_id: str | None
    version: str | None
    model_dir: Path
    promoted: bool | None
    metrics: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- small pieces (tested alone)
def default_layer_map(teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    """Evenly spaced teacher layers, first and last included when there is room: 6 -> 3 gives (0, 2, 5),
    6 -> 2 gives (0, 5), 2 -> 1 gives (0,)."""
    if not 1 <= student_layers <= teacher_layers:
        raise DistillError(f"a student needs 1..{teacher_layers} layers (the teacher's), got {student_layers}")
    if student_layers == 1:
        return (0,)
    return tuple(int(np.floor(i * (teacher_layers - 1) / (student_layers - 1) + 1e-9)) for i in range(student_layers))


def check_layer_map(layer_map, teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    layer_map = tuple(int(i) for i in layer_map)
    if len(layer_map) != student_layers:
        raise DistillError(f"--layer-map names {len(layer_map)} layers for a {student_layers}-layer student")
    if any(not 0 <= i < teacher_layers for i in layer_map):
        raise DistillError(f"--layer-map {list(layer_map)}: the teacher has layers 0..{teacher_layers - 1}")
    if list(layer_map) != sorted(set(layer_map)):
        raise DistillError(f"--layer-map {list(layer_map)} must be strictly increasing")
    return layer_map


def default_hidden_map(layer_map: tuple[int, ...], teacher_layers: int) -> tuple[int, ...]:
    """The teacher layer whose output student layer j is matched to: for all but the last, the output the next
    student layer's weights (teacher layer layer_map[j + 1]) read in the teacher, i.e. teacher layer
    layer_map[j + 1] - 1; for the last, the teacher's last layer.  6 -> 2 from (0, 5): (4, 5); 6 -> 3 from
    (0, 2, 5): (1, 4, 5); 2 -> 1: (1,)."""
    return tuple(int(layer_map[j + 1]) - 1 for j in range(len(layer_map) - 1)) + (int(teacher_layers) - 1,)


def check_hidden_map(hidden_map, teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    hidden_map = tuple(int(i) for i in hidden_map)
    if len(hidden_map) != student_layers:
        raise DistillError(f"--hidden-map names {len(hidden_map)} layers for a {student_layers}-layer student")
    if any(not 0 <= i < teacher_layers for i in hidden_map):
        raise DistillError(f"--hidden-map {list(hidden_map)}: the teacher has layers 0..{teacher_layers - 1}")
    return hidden_map


def hidden_state_loss(student_states, teacher_states, mask):
    """Mean over matched layers of the MSE between student and teacher token states, real tokens only.
    student_states: K tensors [batch, length, hidden]; teacher_states: [batch, K, length, hidden]; mask:
    [batch, length] (1 = real token)."""
    m = mask.unsqueeze(-1).to(teacher_states.dtype)
    denom = m.sum().clamp(min=1.0) * teacher_states.shape[-1]
    losses = [(((s - teacher_states[:, k]) ** 2) * m).sum() / denom for k, s in enumerate(student_states)]
    return sum(losses) / len(losses)


def attention_loss(student_attention, teacher_attention, mask, eps: float = 1e-8):
    """KL(teacher || student) of the attention distributions [batch, heads, length, length], averaged over heads
    and real query tokens (padded keys carry ~0 probability in both)."""
    import torch

    kl = (teacher_attention * (torch.log(teacher_attention + eps) - torch.log(student_attention + eps))).sum(-1)
    m = mask.unsqueeze(1).to(kl.dtype).expand_as(kl)
    return (kl * m).sum() / m.sum().clamp(min=1.0)


def word_dropout(text: str, rng: np.random.Generator, p: float = 0.15) -> str:
    """A perturbed copy of a complaint (each word dropped with probability p, one adjacent pair swapped), for the
    teacher to label: the student sees more of the teacher's function around each training text."""
    words = text.split()
    if len(words) < 3:
        return text
    kept = [w for w in words if rng.random() >= p] or words[:1]
    if len(kept) > 2:
        i = int(rng.integers(len(kept) - 1))
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
    return " ".join(kept)


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float,
                      class_weight=None, student_embedding=None, teacher_embedding=None,
                      embedding_weight: float = 0.0):
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y) over rows with y >= 0
    + embedding_weight * mean(1 - cos(student_embedding, teacher_embedding)); returns (loss, parts)."""
    import torch.nn.functional as F

    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean") * t * t
    labelled = labels >= 0
    hard = (F.cross_entropy(student_logits[labelled], labels[labelled], weight=class_weight)
            if bool(labelled.any()) else student_logits.sum() * 0.0)
    loss = alpha * soft + (1.0 - alpha) * hard
    emb = student_logits.new_zeros(())
    if embedding_weight and student_embedding is not None:
        emb = (1.0 - F.cosine_similarity(student_embedding, teacher_embedding, dim=-1)).mean()
        loss = loss + embedding_weight * emb
    parts = {"soft": float(soft.detach()), "hard": float(hard.detach()), "embedding": float(emb.detach())}
    return loss, parts


def state_dict_from_onnx(path: Path) -> dict:
    """The torch state dict of a MeanPoolClassifier rebuilt from its fp32 ONNX export.

    The TorchScript exporter keeps parameter names for biases, LayerNorms and embeddings but stores each Linear
    weight transposed under a generated name (``onnx::MatMul_123``) feeding a MatMul whose output is added to the
    named bias; the head is a Gemm.  Exact (no arithmetic), verified afterwards by ``teacher_parity``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    state: dict[str, np.ndarray] = {}
    for name, value in inits.items():
        if not name.startswith("onnx::"):
            state[name] = value
    for node in model.graph.node:
        if node.op_type == "Add":
            bias = next((i for i in node.input if i in inits and i.endswith(".bias")), None)
            other = next((i for i in node.input if i != bias), None)
            mm = producer.get(other)
            if bias is None or mm is None or mm.op_type != "MatMul":
                continue
            weight = next((i for i in mm.input if i in inits), None)
            if weight is not None:
                state[bias[: -len(".bias")] + ".weight"] = inits[weight].T
        elif node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w_name, b_name = node.input[1], node.input[2] if len(node.input) > 2 else None
            if w_name in inits and b_name and b_name.endswith(".bias"):
                w = inits[w_name]
                state[b_name[: -len(".bias")] + ".weight"] = w if attrs.get("transB", 0) else w.T
    prefix = "inner."  # training.onnx_export wraps the model to add the embedding output
    return {(k.removeprefix(prefix)): v for k, v in state.items()}


def load_state(model, state: dict, what: str) -> None:
    import torch

    own = model.state_dict()
    # buffers, and BERT's [CLS] pooler, which the mean-pooled head never uses (so no graph holds it)
    missing = [k for k in own if k not in state and not k.endswith(("position_ids", "token_type_ids"))
               and not k.startswith("bert.pooler.")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise DistillError(f"{what}: weights do not fit the model (missing {missing[:4]}, unexpected "
                           f"{unexpected[:4]})")
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(np.shape(v)):
            raise DistillError(f"{what}: {k} has shape {tuple(np.shape(v))}, the model {tuple(own[k].shape)}")
    model.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in state.items()}, strict=False)


def student_state(teacher_state: dict, layer_map: tuple[int, ...]) -> dict:
    """The teacher's weights for a student: embeddings and head as they are, teacher layer layer_map[j] as
    student layer j, other layers left out."""
    out = {}
    for key, value in teacher_state.items():
        if key.startswith("bert.encoder.layer."):
            idx, rest = key[len("bert.encoder.layer."):].split(".", 1)
            if int(idx) in layer_map:
                out[f"bert.encoder.layer.{layer_map.index(int(idx))}.{rest}"] = value
        else:
            out[key] = value
    return out


def teacher_layer_count(state: dict) -> int:
    idx = {int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer.")}
    if not idx:
        raise DistillError("the teacher's ONNX graph has no encoder layers")
    return max(idx) + 1


# ---------------------------------------------------------------------------- pipeline steps
def prepare(settings: Settings, opts: DistillOptions) -> Distillation:
    """The teacher's artefact and split, the run's folders."""
    if opts.int8_scheme not in onnx_export.QUANT_SCHEMES:
        raise DistillError(f"unknown int8 scheme {opts.int8_scheme!r}; choose one of {sorted(onnx_export.QUANT_SCHEMES)}")
    if opts.int8_scheme == "static-qdq" and opts.int8_calibration < 1:
        raise DistillError("static-qdq needs --int8-calibration >= 1 training texts")
    if opts.fuse and opts.int8_scheme == "static-qdq":
        raise DistillError("--fuse is for the dynamic int8 schemes, not static-qdq")
    try:
        folder, version = resolve_model_dir(opts.teacher, settings)
    except registry.ModelNotFoundError as exc:
        raise DistillError(f"teacher {opts.teacher}: {exc}") from exc
    folder = Path(folder)
    for name in ("model.onnx", "labels.json", "meta.json", "tokenizer/tokenizer.json"):
        if not (folder / name).is_file():
            raise DistillError(f"teacher folder {folder} lacks {name} (the fp32 graph carries the weights)")
    meta = json.loads((folder / "meta.json").read_text())
    labels = json.loads((folder / "labels.json").read_text())
    if opts.epochs < 1 or opts.layers < 1 or opts.batch_size < 1 or not 0.0 <= opts.alpha <= 1.0 \
            or opts.temperature <= 0:
        raise DistillError("epochs, layers and batch size must be >= 1, alpha in [0, 1], temperature > 0")
    teacher_layers = int(meta.get("layers") or 0)
    seed = int(opts.seed if opts.seed is not None else meta.get("seed", 13))
    df = make_splits(load_examples(settings), seed=seed)
    if opts.center_statements:  # as triage_train adds them: training split only, nothing near a held-out text
        heldout = list(df.loc[df["split"] != "train", "text"])
        df = pd.concat([df, center_statements.center_rows(heldout, seed=seed)], ignore_index=True)
    unknown = sorted(set(df["center"]) - set(labels))
    if unknown:
        raise DistillError(f"the teacher's labels lack centers of the training data: {unknown}")
    if opts.limit_per_center:
        n = int(opts.limit_per_center)
        df = df.sample(frac=1.0, random_state=seed)
        df = pd.concat([df[df["split"] == s].groupby("center", sort=False).head(k)
                        for s, k in (("train", n), ("val", max(2, n // 2)), ("test", max(2, n // 2)))])
        df = df.sort_values(["split", "center"], kind="stable").reset_index(drop=True)
    layer_map = (check_layer_map(opts.layer_map, teacher_layers, opts.layers) if opts.layer_map
                 else default_layer_map(teacher_layers or opts.layers, opts.layers))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(opts.output_dir or settings.work_dir / "runs" / "distill" / stamp)
    run = Distillation(settings, opts, folder, version, meta, list(labels), seed, int(meta["max_length"]),
                       layer_map, df, out, out / "model", out / "report", stamp=stamp)
    run.model_dir.mkdir(parents=True, exist_ok=True)
    run.report_dir.mkdir(parents=True, exist_ok=True)
    index = {c: i for i, c in enumerate(run.labels)}
    parts = {"train": df[df["split"] == "train"], "val": df[df["split"] == "val"],
             "test": df[(df["split"] == "test") & (df["origin"] == "external")]}
    for name, part in parts.items():
        if part.empty:
            raise DistillError(f"the {name} split is empty; more examples are needed")
        run.texts[name], run.y[name] = list(part["text"]), part["center"].map(index).to_numpy()
    run.results = {"teacher": {"uri": opts.teacher, "version": version, "folder": str(folder),
                               "run_id": meta.get("run_id"), "layers": teacher_layers},
                   "layers": opts.layers, "layer_map": list(layer_map), "seed": seed, "max_length": run.max_length}
    return run


def unlabelled_rows(settings: Settings, opts: DistillOptions, urgency_frame: pd.DataFrame | None,
                    limit: int | None = None, seed: int = 13) -> pd.DataFrame:
    """Complaint text without a center label: the guidance-derived complaints of the urgency data's training
    statement groups (public bodies' pages, their URL kept) and the external rows whose label map drops them."""
    frames = []
    if urgency_frame is not None:
        g = urgency_frame[urgency_frame["split"] == "train"]
        frames.append(pd.DataFrame({"text": g["text"].map(normalise_text), "source": "guidance_derived",
                                    "provenance": g["source_url"] + " (" + g["statement_id"].astype(str) + ", "
                                    + g["kind"] + ")"}))
    mapped = set(load_examples(settings)["text"])
    for source, reader in ((SPEECH, _read_speech), (S2D, _read_s2d), (AVEY, _read_avey)):
        rows = reader(settings)
        rows = rows[~rows["text"].isin(mapped)]
        frames.append(pd.DataFrame({"text": rows["text"], "source": source,
                                    "provenance": source + " label '" + rows["source_label"].astype(str)
                                    + "' dropped by its label map"}))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["text", "source", "provenance"])
    out = out[out["text"].str.len() > 0].drop_duplicates("text")
    if limit is not None and len(out) > limit:
        out = out.sample(n=limit, random_state=seed)
    return out.reset_index(drop=True)


def drop_near_heldout(candidates: pd.DataFrame, heldout_texts: list[str]) -> pd.DataFrame:
    """Candidates minus any text equal to, or a near duplicate (the data's own TF-IDF rule) of, a held-out one."""
    if candidates.empty or not heldout_texts:
        return candidates
    texts = list(candidates["text"]) + list(heldout_texts)
    keys = [normalise_text(t).lower() for t in texts]
    groups = near_duplicate_groups(texts, keys, NEAR_DUP_THRESHOLD)
    held = set(groups[len(candidates):])
    keep = np.array([g not in held for g in groups[: len(candidates)]])
    return candidates[keep]


def transfer_set(run: Distillation) -> None:
    """Labelled training text (+ the taxonomy descriptions the teacher trained on), word-dropout copies, and
    unlabelled complaint text; nothing that is, or nearly is, a validation or test text."""
    opts = run.opts
    rng = np.random.default_rng(run.seed)
    train = run.df[run.df["split"] == "train"]
    rows = pd.DataFrame({"text": run.texts["train"], "label": run.y["train"], "source": list(train["source"]),
                         "provenance": list(train["origin"] + " training row")})
    if run.teacher_meta.get("few_shot", "prototypes") in ("prototypes", "both"):
        d_text, d_y = _description_rows(load_taxonomy(), run.labels)
        rows = pd.concat([rows, pd.DataFrame({"text": d_text, "label": d_y, "source": "taxonomy_description",
                                              "provenance": "project-written center description"})])
    parts = [rows]
    for k in range(opts.augment):
        parts.append(pd.DataFrame({"text": [word_dropout(t, rng) for t in rows["text"]], "label": UNLABELLED,
                                   "source": "augmented", "provenance": [f"word dropout {k + 1} of: {s}"
                                                                         for s in rows["source"]]}))
    if opts.urgency or opts.unlabelled:
        run.urgency_frame = urgency_train.training_frame(per_statement=opts.urgency_per_statement,
                                                         limit=opts.urgency_limit)
    if opts.unlabelled:
        extra = unlabelled_rows(run.settings, opts, run.urgency_frame, opts.unlabelled_limit, run.seed)
        extra["label"] = UNLABELLED
        parts.append(extra)
    transfer = pd.concat(parts, ignore_index=True)
    transfer = transfer[transfer["text"].str.strip().str.len() > 0]
    unlabelled = transfer["label"] == UNLABELLED
    kept = drop_near_heldout(transfer[unlabelled], run.texts["val"] + run.texts["test"])
    transfer = pd.concat([transfer[~unlabelled], kept.drop_duplicates("text")], ignore_index=True)
    run.transfer = transfer.reset_index(drop=True)
    run.transfer.to_csv(run.report_dir / "transfer.csv", index=False)
    run.results["transfer"] = {"n": len(transfer), "by_source": transfer["source"].value_counts().to_dict(),
                               "labelled": int((transfer["label"] != UNLABELLED).sum()),
                               "removed_near_heldout": int(unlabelled.sum() - len(kept))}


def log_inputs(run: Distillation) -> None:
    import mlflow

    run.commit = git_commit()
    params = {k: (str(v) if isinstance(v, (Path, tuple)) else v) for k, v in asdict(run.opts).items()
              if k != "progress"}
    mlflow.log_params({**params, "layer_map": ",".join(map(str, run.layer_map)), "seed_used": run.seed,
                       "max_length": run.max_length, "teacher_version": run.teacher_version,
                       "teacher_run_id": run.teacher_meta.get("run_id"), "n_transfer": len(run.transfer),
                       "n_val": len(run.texts["val"]), "n_test": len(run.texts["test"])})
    hashes = {**hashes_for(dataset_files()), **dataset_hashes(settings=run.settings),
              "guidance/presentations": guidance_hash()}
    mlflow.set_tags({"taxonomy_version": run.teacher_meta.get("taxonomy_version"), "git_commit": run.commit,
                     "model_name": TRIAGE_MODEL_NAME, "distilled_from": f"{run.opts.teacher} (version "
                     f"{run.teacher_version or 'local'})", **{f"data.{k}": v for k, v in hashes.items()}})
    mlflow.log_dict(hashes, "data/dataset_sha256.json")
    mlflow.log_artifact(str(run.report_dir / "transfer.csv"), "data")
    run.df.to_csv(run.report_dir / "split.csv", index=False)
    mlflow.log_artifact(str(run.report_dir / "split.csv"), "data")


def load_tokenizer(folder: Path):
    """The teacher's own tokenizer (the student keeps it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder / "tokenizer"))


def teacher_model(run: Distillation) -> None:
    """The teacher as a torch MeanPoolClassifier, its weights read from its fp32 ONNX graph."""
    state = state_dict_from_onnx(run.teacher_dir / "model.onnx")
    layers = teacher_layer_count(state)
    if run.results["teacher"]["layers"] and run.results["teacher"]["layers"] != layers:
        raise DistillError(f"teacher meta.json says {run.results['teacher']['layers']} layers, its graph has {layers}")
    run.results["teacher"]["layers"] = layers
    if not run.opts.layer_map:
        run.layer_map = default_layer_map(layers, run.opts.layers)
    check_layer_map(run.layer_map, layers, run.opts.layers)
    run.results["layer_map"] = list(run.layer_map)
    run.hidden_map = (check_hidden_map(run.opts.hidden_map, layers, run.opts.layers) if run.opts.hidden_map
                      else default_hidden_map(run.layer_map, layers))
    if run.opts.hidden_weight or run.opts.attention_weight:
        run.results["intermediate"] = {"hidden_weight": run.opts.hidden_weight, "hidden_map": list(run.hidden_map),
                                       "attention_weight": run.opts.attention_weight}
    run.tokenizer = load_tokenizer(run.teacher_dir)
    model = new_model(run.labels, layers)
    load_state(model, state, f"teacher {run.teacher_dir / 'model.onnx'}")
    model.eval()
    run.teacher = model
    teacher_parity(run)


def teacher_parity(run: Distillation) -> None:
    """The rebuilt torch teacher against onnxruntime on the fp32 graph: max |logit difference|, top-1 agreement."""
    par = onnx_export.parity(run.teacher, run.tokenizer, run.teacher_dir / "model.onnx", run.texts["test"][:64],
                             run.max_length)
    run.results["teacher_rebuild_parity"] = par
    if par["max_abs_diff"] > 1e-3:
        raise DistillError(f"the teacher rebuilt from its ONNX graph differs from it by {par['max_abs_diff']:.2e} "
                           "logits: unsupported graph layout")


def encode_outputs(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64):
    """(logits, pooled embeddings) in input order, fp32, no dropout."""
    import torch

    model.eval()
    texts, undo = _by_length(list(texts))
    logits, pooled = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            emb = model.embed(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
            logits.append(model.classifier(emb).numpy())
            pooled.append(emb.numpy())
    return np.concatenate(logits)[undo], np.concatenate(pooled)[undo]


def onnx_outputs(path: Path, tokenizer, texts: list[str], max_length: int, threads: int | None = None,
                 batch_size: int = 64):
    """(logits, pooled embeddings) of an exported model run by onnxruntime (fp32: the same function as the torch
    model to ~1e-5, about 3x faster on CPU), or None when the graph has no embedding output."""
    sess = onnx_export.session(path, threads)
    if [o.name for o in sess.get_outputs()][:2] != ["logits", "embedding"]:
        return None
    names = {i.name for i in sess.get_inputs()}
    texts, undo = _by_length(list(texts))
    logits, pooled = [], []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        out = sess.run(["logits", "embedding"], {k: np.asarray(enc[k], dtype=np.int64) for k in onnx_export.INPUT_NAMES
                                                  if k in names})
        logits.append(out[0])
        pooled.append(out[1])
    return np.concatenate(logits)[undo], np.concatenate(pooled)[undo]


def soft_targets(run: Distillation) -> None:
    """The teacher's fp32 outputs on the transfer set: from its ONNX graph by onnxruntime when it has the embedding
    output (the same numbers as torch within the parity checked above, faster), else from the rebuilt torch model."""
    import torch

    torch.set_num_threads(run.opts.threads)
    texts = list(run.transfer["text"])
    out = onnx_outputs(run.teacher_dir / "model.onnx", run.tokenizer, texts, run.max_length, run.opts.threads)
    if out is None:
        out = encode_outputs(run.teacher, run.tokenizer, texts, run.max_length)
    run.soft_logits, run.soft_embeddings = out


def use_eager_attention(model) -> None:
    """Attention implementation that returns the attention probabilities (transformers' default, SDPA, does not)."""
    model.config._attn_implementation = "eager"
    model.bert.config._attn_implementation = "eager"


def teacher_internals(teacher, tokenizer, texts: list[str], max_length: int, hidden_layers: tuple[int, ...],
                      attention: bool = False, batch_size: int = 64):
    """The teacher's token states after each of ``hidden_layers`` and (``attention``) its last layer's attention
    probabilities, per text without padding, float16: (hidden [K, length, hidden] per text, attention
    [heads, length, length] per text or None).  Computed once, like the soft targets."""
    import torch

    teacher.eval()
    previous = teacher.config._attn_implementation
    if attention:
        use_eager_attention(teacher)
    idx = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    hidden: list = [None] * len(texts)
    attn: list | None = [None] * len(texts) if attention else None
    try:
        with torch.no_grad():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                enc = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
                out = teacher.bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                   token_type_ids=enc["token_type_ids"], output_hidden_states=True,
                                   output_attentions=attention)
                states = torch.stack([out.hidden_states[k + 1] for k in hidden_layers], dim=1)  # [B, K, L, H]
                lengths = enc["attention_mask"].sum(1).tolist()
                for row, i in enumerate(chunk):
                    n = int(lengths[row])
                    hidden[i] = states[row, :, :n].to(torch.float16).numpy()
                    if attention:
                        attn[i] = out.attentions[-1][row, :, :n, :n].to(torch.float16).numpy()
    finally:
        teacher.config._attn_implementation = previous
        teacher.bert.config._attn_implementation = previous
    return hidden, attn


def padded_hidden(arrays: list, length: int):
    """Per-text teacher states [K, n, H] (``teacher_internals``) zero-padded to [batch, K, length, H]."""
    import torch

    out = np.zeros((len(arrays), arrays[0].shape[0], length, arrays[0].shape[-1]), dtype=np.float32)
    for r, a in enumerate(arrays):
        out[r, :, : a.shape[1]] = a
    return torch.from_numpy(out)


def padded_attention(arrays: list, length: int):
    """Per-text teacher attention [heads, n, n] zero-padded to [batch, heads, length, length]."""
    import torch

    out = np.zeros((len(arrays), arrays[0].shape[0], length, length), dtype=np.float32)
    for r, a in enumerate(arrays):
        out[r, :, : a.shape[1], : a.shape[2]] = a
    return torch.from_numpy(out)


def init_student(teacher, labels: list[str], layer_map: tuple[int, ...]):
    """A MeanPoolClassifier with len(layer_map) layers holding the teacher's embeddings, chosen layers and head."""
    teacher_state = {k: v.detach().numpy() for k, v in teacher.state_dict().items()}
    student = new_model(labels, len(layer_map))
    load_state(student, student_state(teacher_state, layer_map), "student initialisation")
    return student


def train_student(teacher, tokenizer, labels: list[str], layer_map: tuple[int, ...], texts: list[str],
                  y: np.ndarray, soft_logits: np.ndarray, soft_embeddings: np.ndarray,
                  val_texts: list[str] | None, val_y: np.ndarray | None, opts: DistillOptions, max_length: int,
                  seed: int, log_metrics: bool = True, desc: str = "distil", internals=None):
    """Distil: returns (student, history, best_epoch). Early stopping on validation macro-F1 when given.
    ``internals`` = (per-text teacher states, per-text last-layer attention or None) from ``teacher_internals``,
    needed when ``opts.hidden_weight`` or ``opts.attention_weight`` is set."""
    import torch
    from sklearn.metrics import f1_score
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    set_seed(seed)
    torch.set_num_threads(opts.threads)
    student = init_student(teacher, labels, layer_map)
    if opts.freeze_embeddings:
        student.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    t_hidden, t_attn = internals if internals is not None else (None, None)
    use_hidden = bool(opts.hidden_weight) and t_hidden is not None
    use_attention = bool(opts.attention_weight) and t_attn is not None
    if (opts.hidden_weight and not use_hidden) or (opts.attention_weight and not use_attention):
        raise DistillError("hidden-state or attention matching needs the teacher's internals (teacher_internals)")
    if use_attention:
        use_eager_attention(student)
        for layer in student.bert.encoder.layer:  # the returned probabilities must not be dropped out
            layer.attention.self.dropout.p = 0.0
    y = np.asarray(y, dtype=np.int64)
    labelled = y[y >= 0]
    weight = torch.tensor(class_weights(labelled, len(labels)), dtype=torch.float32) if len(labelled) else None
    t_logits = torch.as_tensor(soft_logits, dtype=torch.float32)
    t_emb = torch.as_tensor(soft_embeddings, dtype=torch.float32)
    optim = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=opts.lr, weight_decay=0.01)
    steps = opts.epochs * max(1, -(-len(texts) // opts.batch_size))
    sched = get_linear_schedule_with_warmup(optim, int(0.06 * steps), steps)
    rng = np.random.default_rng(seed)
    history, best, best_state, best_epoch, stale = [], -1.0, None, 0, 0
    for epoch in range(1, opts.epochs + 1):
        student.train()
        totals, seen = {"loss": 0.0, "soft": 0.0, "hard": 0.0, "embedding": 0.0, "hidden": 0.0, "attention": 0.0}, 0
        bar = tqdm(_length_batches(texts, opts.batch_size, rng), desc=f"{desc} epoch {epoch}/{opts.epochs}",
                   disable=not opts.progress)
        for idx in bar:
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            if use_hidden or use_attention:
                out = student.bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                   token_type_ids=enc["token_type_ids"], output_hidden_states=use_hidden,
                                   output_attentions=use_attention)
                mask = enc["attention_mask"]
                m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
                pooled = (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)
            else:
                pooled = student.embed(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
            logits = student.classifier(student.dropout(pooled))
            loss, parts = distillation_loss(logits, t_logits[idx], torch.as_tensor(y[idx]), opts.temperature,
                                            opts.alpha, weight, pooled, t_emb[idx], opts.embedding_weight)
            length = enc["input_ids"].shape[1]
            if use_hidden:
                h = hidden_state_loss(list(out.hidden_states[1:]), padded_hidden([t_hidden[i] for i in idx], length),
                                      mask)
                loss = loss + opts.hidden_weight * h
                parts["hidden"] = float(h.detach())
            if use_attention:
                a = attention_loss(out.attentions[-1], padded_attention([t_attn[i] for i in idx], length), mask)
                loss = loss + opts.attention_weight * a
                parts["attention"] = float(a.detach())
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optim.step()
            sched.step()
            seen += len(idx)
            totals["loss"] += loss.item() * len(idx)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * len(idx)
            bar.set_postfix(loss=f"{totals['loss'] / seen:.3f}")
        row = {"epoch": epoch, **{f"distil_{k}": v / max(seen, 1) for k, v in totals.items()}}
        if val_texts:
            pred = predict_logits(student, tokenizer, val_texts, max_length).argmax(1)
            row["val_accuracy"] = float((pred == val_y).mean())
            row["val_macro_f1"] = float(f1_score(val_y, pred, average="macro", zero_division=0))
        history.append(row)
        if log_metrics:
            import mlflow

            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        log.info("%s epoch %d: %s", desc, epoch, row)
        score = row.get("val_macro_f1", -row["distil_loss"])
        if score > best:
            best, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(student.state_dict()) if val_texts and epoch < opts.epochs else None
        else:
            stale += 1
            if stale >= opts.patience:
                break
    if best_epoch != history[-1]["epoch"] and best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return student, history, best_epoch


def internals_for(run: Distillation, teacher, texts: list[str]):
    """The teacher's states (and attention) on ``texts`` when the options ask for intermediate matching, else None."""
    if not (run.opts.hidden_weight or run.opts.attention_weight):
        return None
    import torch

    torch.set_num_threads(run.opts.threads)
    started = time.time()
    out = teacher_internals(teacher, run.tokenizer, texts, run.max_length, run.hidden_map,
                            attention=bool(run.opts.attention_weight))
    log.info("teacher internals on %d texts in %.0f s", len(texts), time.time() - started)
    return out


def distil(run: Distillation) -> None:
    texts = list(run.transfer["text"])
    run.student, history, best_epoch = train_student(
        run.teacher, run.tokenizer, run.labels, run.layer_map, texts,
        run.transfer["label"].to_numpy(), run.soft_logits, run.soft_embeddings, run.texts["val"], run.y["val"],
        run.opts, run.max_length, run.seed, internals=internals_for(run, run.teacher, texts))
    run.results["epochs_run"], run.results["best_epoch"] = len(history), best_epoch
    run.results["history"] = history


def calibrate(run: Distillation) -> None:
    val_logits = predict_logits(run.student, run.tokenizer, run.texts["val"], run.max_length)
    run.temperature = ev.fit_temperature(run.y["val"], val_logits)
    probs = ev.softmax(val_logits, run.temperature)
    run.choice = ev.choose_threshold(run.y["val"], probs)
    run.results["calibration"] = {"temperature": run.temperature, "threshold": run.choice["threshold"],
                                  "target": run.choice["target"], "target_met": run.choice["target_met"],
                                  "val_selective_accuracy": run.choice["selective_accuracy"],
                                  "val_coverage": run.choice["coverage"]}


def evaluate_test(run: Distillation) -> None:
    """Student and teacher (torch fp32, each with its own temperature and threshold) on the same test rows."""
    y = run.y["test"]
    s_logits = predict_logits(run.student, run.tokenizer, run.texts["test"], run.max_length)
    t_out = onnx_outputs(run.teacher_dir / "model.onnx", run.tokenizer, run.texts["test"], run.max_length,
                         run.opts.threads)
    t_logits = t_out[0] if t_out is not None else predict_logits(run.teacher, run.tokenizer, run.texts["test"],
                                                                 run.max_length)
    s_probs = ev.softmax(s_logits, run.temperature)
    t_probs = ev.softmax(t_logits, float(run.teacher_meta.get("temperature", 1.0)))
    run.results["test"] = {
        "student": _eval_block(y, s_probs, run.labels, run.choice["threshold"]),
        "teacher": _eval_block(y, t_probs, run.labels, float(run.teacher_meta.get("threshold", 0.0))),
        "top1_agreement": float((s_probs.argmax(1) == t_probs.argmax(1)).mean()),
    }


def export(run: Distillation) -> None:
    """ONNX (logits + embedding), parity with torch, int8; the teacher's tokenizer; labels; meta."""
    fp32 = onnx_export.export_onnx(run.student, run.tokenizer, run.model_dir / "model.onnx", run.max_length,
                                   eager=run.opts.fuse)
    par = onnx_export.parity(run.student, run.tokenizer, fp32, run.texts["test"][:256], run.max_length)
    int8 = quantize(run, fp32)
    y = run.y["test"]
    acc = {name: float((onnx_export.onnx_logits(onnx_export.session(path), run.tokenizer, run.texts["test"],
                                                 run.max_length).argmax(1) == y).mean())
           for name, path in (("fp32", fp32), ("int8", int8))}
    run.results["onnx"] = {**par, "fp32_accuracy": acc["fp32"], "int8_accuracy": acc["int8"],
                           "int8_drop": acc["fp32"] - acc["int8"], "fp32_mb": fp32.stat().st_size / 2**20,
                           "int8_mb": int8.stat().st_size / 2**20}
    shutil.copytree(run.teacher_dir / "tokenizer", run.model_dir / "tokenizer", dirs_exist_ok=True)
    (run.model_dir / "labels.json").write_text(json.dumps(run.labels, indent=1))
    import torch

    torch.save({"state_dict": run.student.state_dict(), "labels": run.labels, "layers": run.opts.layers,
                "max_length": run.max_length, "layer_map": list(run.layer_map)}, run.out / "torch_model.pt")
    write_meta(run)


def quantize(run: Distillation, fp32: Path) -> Path:
    """The served int8 graph by the run's scheme; static calibration on training-split texts (never val/test)."""
    opts = run.opts
    calibration = None
    if opts.int8_scheme == "static-qdq":
        order = np.random.default_rng(run.seed).permutation(len(run.texts["train"]))[: opts.int8_calibration]
        calibration = onnx_export.calibration_feeds(run.tokenizer, [run.texts["train"][i] for i in order],
                                                    run.max_length)
    int8, fused = run.model_dir / "model.int8.onnx", None
    try:
        if opts.fuse:
            config = run.student.config
            fused = onnx_export.fused_int8(fp32, int8, opts.int8_scheme, config.num_attention_heads,
                                           config.hidden_size, exclude=opts.int8_exclude)
        else:
            onnx_export.quantize_int8(fp32, int8, opts.int8_scheme, exclude=opts.int8_exclude,
                                      calibration=calibration)
    except ValueError as exc:  # an exclusion pattern that matches no node
        raise DistillError(str(exc)) from exc
    run.results["quantization"] = {"scheme": opts.int8_scheme, "exclude": list(opts.int8_exclude),
                                   "calibration_texts": len(calibration or []), **({"fused": fused} if fused else {})}
    return int8


def urgency(run: Distillation) -> None:
    """The urgency head refitted on the served int8 student's embeddings (frozen mode, as the teacher's), its
    thresholds on validation, and the urgency decision measured on validation, blind set and AcuityBench."""
    opts = run.opts
    clf = TriageClassifier.from_folder(run.model_dir, variant="int8", intra_op_threads=opts.threads)
    head, details = urgency_train.train_head(clf, per_statement=opts.urgency_per_statement, limit=opts.urgency_limit,
                                             frame=run.urgency_frame)
    (run.model_dir / URGENCY_HEAD_FILE).write_text(json.dumps(head))
    clf.urgency_head = UrgencyHead.from_json(run.model_dir / URGENCY_HEAD_FILE)
    sets = {"validation": details["validation_rows"]}
    if opts.urgency_external:
        sets["blind"] = urgency_train.blind_rows()
        sets["acuitybench"] = urgency_train.acuity_rows()
    reports = urgency_train.evaluate(clf, sets)
    run.results["urgency"] = {"head": {k: v for k, v in head.items() if k not in {"weights", "bias", "exemplars"}},
                              "reports": reports}
    run.flat.update(urgency_train.flat_metrics(reports))


def variant_options(opts: DistillOptions, spec: str) -> tuple[str, DistillOptions]:
    """``"hidden_weight=0,alpha=0.5"`` -> (that label, opts with those fields replaced, typed like their defaults)."""
    fields = {f: getattr(DistillOptions(), f) for f in DistillOptions.__dataclass_fields__}
    changes = {}
    for part in filter(None, (x.strip() for x in spec.split(","))):
        key, _, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if key not in fields or not value:
            raise DistillError(f"cross-source variant {spec!r}: {part!r} is not option=value of a distillation option")
        default = fields[key]
        try:
            changes[key] = (value.lower() in ("1", "true", "yes") if isinstance(default, bool)
                            else type(default)(value) if default is not None else float(value))
        except ValueError as exc:
            raise DistillError(f"cross-source variant {spec!r}: {exc}") from exc
    return spec, replace(opts, **changes)


def cross_source_teacher_recipe(run: Distillation) -> dict:
    """What the cross-source teachers are trained with (training.triage_train's cross-source recipe)."""
    meta = run.teacher_meta
    return {"teacher_layers": int(run.results["teacher"]["layers"]),
            "teacher_epochs": int(meta.get("cross_source_epochs") or TrainOptions().epochs),
            "max_length": int(run.max_length), "seed": int(run.seed),
            "few_shot": meta.get("few_shot", "prototypes")}


def cross_source_recipe(run: Distillation, opts: DistillOptions | None = None) -> dict:
    """Everything the cross-source figures depend on: the teachers' recipe and the student's options."""
    o = opts or run.opts
    return {**cross_source_teacher_recipe(run), "layers": o.layers, "layer_map": list(run.layer_map),
            "hidden_map": list(run.hidden_map), "epochs": o.cross_source_epochs or o.epochs,
            "batch_size": o.batch_size, "lr": o.lr, "temperature": o.temperature, "alpha": o.alpha,
            "embedding_weight": o.embedding_weight, "hidden_weight": o.hidden_weight,
            "attention_weight": o.attention_weight, "augment": o.augment, "unlabelled": o.unlabelled,
            "cross_source_unlabelled": o.cross_source_unlabelled, "urgency_per_statement": o.urgency_per_statement,
            "urgency_limit": o.urgency_limit, "limit_per_center": o.limit_per_center,
            "freeze_embeddings": o.freeze_embeddings}


def cross_source(run: Distillation, full_df: pd.DataFrame | None = None) -> None:
    """Per direction: a teacher trained on one source as ``training.triage_train`` trains its cross-source models
    (same layers, epochs and recipe as the teacher's run), a student distilled from it on that source's text, the
    word-dropout copies and unlabelled guidance text (never the other source's), both tested on the other source.
    With ``cross_source_from`` the figures of an earlier ``--cross-source-only`` run are taken instead, after
    checking that its recipe is this run's."""
    if not run.opts.cross_source:
        return
    if run.opts.cross_source_from:
        return reuse_cross_source(run, Path(run.opts.cross_source_from))
    from sklearn.metrics import f1_score

    opts = run.opts
    full_df = full_df if full_df is not None else load_examples(run.settings)
    recipe = cross_source_teacher_recipe(run)
    t_opts = TrainOptions(layers=recipe["teacher_layers"], epochs=recipe["teacher_epochs"],
                          max_length=run.max_length, seed=run.seed, few_shot=recipe["few_shot"],
                          threads=opts.threads, progress=opts.progress, urgency=False, cross_source=False)
    s_opts = replace(opts, epochs=opts.cross_source_epochs or opts.epochs)
    variants = [("recipe", s_opts)] + [variant_options(s_opts, v) for v in opts.cross_source_variants]
    run.results["cross_source_variant_recipes"] = {label: cross_source_recipe(run, v) for label, v in variants[1:]}
    rng = np.random.default_rng(run.seed)
    guidance = pd.DataFrame(columns=["text"])
    if run.urgency_frame is not None and opts.unlabelled:
        g = run.urgency_frame[run.urgency_frame["split"] == "train"]
        guidance = g.sample(n=min(len(g), opts.cross_source_unlabelled), random_state=run.seed)[["text"]]
    results = {}
    for name, (train_df, test_df) in cross_source_splits(full_df).items():
        shared = sorted(set(train_df["center"]) & set(test_df["center"]))
        if len(shared) < 2:
            continue
        tr, te = train_df[train_df["center"].isin(shared)], test_df[test_df["center"].isin(shared)]
        if opts.limit_per_center:
            tr = tr.groupby("center").head(opts.limit_per_center)
            te = te.groupby("center").head(max(2, opts.limit_per_center // 2))
        index = {c: i for i, c in enumerate(shared)}
        ytr, yte = tr["center"].map(index).to_numpy(), te["center"].map(index).to_numpy()
        started = time.time()
        teacher, _tok, _hist, _ = fit(shared, list(tr["text"]), ytr, None, None, t_opts, log_metrics=False,
                                      desc=f"xsrc {name} teacher")
        teacher_seconds = time.time() - started
        aug = [word_dropout(t, rng) for _ in range(opts.augment) for t in tr["text"]]
        extra = drop_near_heldout(pd.DataFrame({"text": list(guidance["text"])}), list(te["text"]))
        texts = list(tr["text"]) + aug + list(extra["text"])
        labels = np.concatenate([ytr, np.full(len(texts) - len(ytr), UNLABELLED)])
        t_logits, t_emb = encode_outputs(teacher, run.tokenizer, texts, run.max_length)

        def score(model, te=te, yte=yte):
            pred = predict_logits(model, run.tokenizer, list(te["text"]), run.max_length).argmax(1)
            return {"accuracy": float((pred == yte).mean()),
                    "macro_f1": float(f1_score(yte, pred, average="macro", zero_division=0))}

        out, extra_out = {"teacher": score(teacher)}, {}
        cached: dict = {}
        for label, v_opts in variants:
            need = (bool(v_opts.hidden_weight), bool(v_opts.attention_weight))
            internals = None
            if any(need):
                if need not in cached:
                    cached[need] = teacher_internals(teacher, run.tokenizer, texts, run.max_length, run.hidden_map,
                                                     attention=need[1])
                internals = cached[need]
            started = time.time()
            student, _hist, _ = train_student(teacher, run.tokenizer, shared, run.layer_map, texts, labels, t_logits,
                                              t_emb, None, None, v_opts, run.max_length, run.seed, log_metrics=False,
                                              desc=f"xsrc {name} student {label}", internals=internals)
            scored = {**score(student), "seconds": round(time.time() - started, 1)}
            if label == "recipe":
                out["student"] = scored
            else:
                extra_out[label] = scored
            del student
        results[name] = {"centers": shared, "n_train": len(tr), "n_test": len(te), "n_transfer": len(texts),
                         "teacher_seconds": round(teacher_seconds, 1), **out,
                         **({"variants": extra_out} if extra_out else {})}
        del teacher
    run.results["cross_source"] = results


def reuse_cross_source(run: Distillation, path: Path) -> None:
    """The cross-source figures of an earlier ``--cross-source-only`` run, refused unless its recipe is this run's."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DistillError(f"--cross-source-from {path}: {exc}") from exc
    if not isinstance(saved, dict) or not {"recipe", "results"} <= set(saved):
        raise DistillError(f"--cross-source-from {path}: not a cross_source.json (needs 'recipe' and 'results')")
    mine = json.loads(json.dumps(cross_source_recipe(run)))

    def differ(recipe: dict) -> list[str]:
        return sorted(k for k in set(mine) | set(recipe) if mine.get(k) != recipe.get(k))

    if not differ(saved["recipe"]):
        results, used = saved["results"], "recipe"
    else:  # a variant of that run may be this run's recipe: its student's figures are then the ones to report
        match = next((label for label, r in (saved.get("variant_recipes") or {}).items() if not differ(r)), None)
        if match is None:
            raise DistillError(f"--cross-source-from {path}: its recipe differs from this run's in " + ", ".join(
                f"{k} ({saved['recipe'].get(k)!r} there, {mine.get(k)!r} here)" for k in differ(saved["recipe"])))
        results, used = {}, match
        for name, c in saved["results"].items():
            others = {"recipe": c["student"], **{k: v for k, v in c.get("variants", {}).items() if k != match}}
            results[name] = {**{k: v for k, v in c.items() if k != "variants"}, "student": c["variants"][match],
                             "variants": others}
    run.results["cross_source"] = results
    run.results["cross_source_measured_in"] = {"file": str(path), "run_id": saved.get("run_id"), "student": used,
                                               "git_commit": saved.get("git_commit"), "created": saved.get("created")}


def distil_cross_source_only(settings: Settings, opts: DistillOptions) -> DistillResult:
    """The cross-source step alone, before the in-source teacher exists: fresh teachers with triage_train's recipe
    (``opts.teacher_layers`` layers) and students with ``opts``; writes ``<out>/cross_source.json``."""
    import mlflow

    t = TrainOptions()
    seed = int(opts.seed if opts.seed is not None else t.seed)
    if opts.layers > opts.teacher_layers:
        raise DistillError(f"a {opts.layers}-layer student of a {opts.teacher_layers}-layer teacher")
    layer_map = (check_layer_map(opts.layer_map, opts.teacher_layers, opts.layers) if opts.layer_map
                 else default_layer_map(opts.teacher_layers, opts.layers))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(opts.output_dir or settings.work_dir / "runs" / "distill-xsrc" / stamp)
    meta = {"layers": opts.teacher_layers, "cross_source_epochs": t.cross_source_epochs or t.epochs,
            "few_shot": t.few_shot, "max_length": t.max_length, "seed": seed}
    run = Distillation(settings, opts, out, None, meta, [], seed, t.max_length, layer_map, pd.DataFrame(), out,
                       out / "model", out / "report", stamp=stamp)
    run.results = {"teacher": {"uri": None, "layers": opts.teacher_layers}, "layers": opts.layers,
                   "layer_map": list(layer_map)}
    run.hidden_map = (check_hidden_map(opts.hidden_map, opts.teacher_layers, opts.layers) if opts.hidden_map
                      else default_hidden_map(layer_map, opts.teacher_layers))
    run.report_dir.mkdir(parents=True, exist_ok=True)
    _quiet_transformers()
    run.tokenizer = encoder_tokenizer()
    if opts.unlabelled:
        run.urgency_frame = urgency_train.training_frame(per_statement=opts.urgency_per_statement,
                                                         limit=opts.urgency_limit)
    registry.configure(settings)
    exp = registry.experiment_id(EXPERIMENT, settings)
    with mlflow.start_run(experiment_id=exp, run_name=f"distill-xsrc-{opts.layers}l-{stamp}") as active:
        run.run_id = active.info.run_id
        run.commit = git_commit()
        recipe = cross_source_recipe(run)
        mlflow.log_params({f"xsrc_{k}": str(v) for k, v in recipe.items()})
        mlflow.set_tags({"git_commit": run.commit, "kind": "distill cross-source only"})
        cross_source(run)
        saved = {"recipe": recipe, "variant_recipes": run.results.get("cross_source_variant_recipes", {}),
                 "results": run.results["cross_source"], "run_id": run.run_id,
                 "git_commit": run.commit, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        path = out / "cross_source.json"
        path.write_text(json.dumps(saved, indent=2, default=float))
        mlflow.log_artifact(str(path), "report")
        flat = {}
        for name, c in run.results["cross_source"].items():
            key = name.replace("->", "_to_")
            for who, prefix in (("student", "xsrc"), ("teacher", "teacher_xsrc")):
                flat[f"{prefix}_{key}_accuracy"] = c[who]["accuracy"]
                flat[f"{prefix}_{key}_macro_f1"] = c[who]["macro_f1"]
        mlflow.log_metrics(flat)
    return DistillResult(run.run_id, None, path, None, {**flat, "details": run.results})


def report(run: Distillation) -> None:
    import mlflow

    r = run.results
    s, t = r["test"]["student"], r["test"]["teacher"]
    flat = {
        "test_accuracy": s["accuracy"], "test_macro_f1": s["macro_f1"], "test_top3_accuracy": s["top3_accuracy"],
        "test_ece_after": s["ece"], "test_selective_accuracy": s["selective"]["selective_accuracy"],
        "test_coverage": s["selective"]["coverage"], "temperature": run.temperature,
        "threshold": run.choice["threshold"],
        "teacher_test_accuracy": t["accuracy"], "teacher_test_macro_f1": t["macro_f1"],
        "teacher_test_ece": t["ece"], "teacher_test_selective_accuracy": t["selective"]["selective_accuracy"],
        "teacher_test_coverage": t["selective"]["coverage"], "test_top1_agreement": r["test"]["top1_agreement"],
        "teacher_rebuild_max_abs_diff": r["teacher_rebuild_parity"]["max_abs_diff"],
        "onnx_max_abs_diff": r["onnx"]["max_abs_diff"], "onnx_fp32_accuracy": r["onnx"]["fp32_accuracy"],
        "onnx_int8_accuracy": r["onnx"]["int8_accuracy"], "onnx_int8_drop": r["onnx"]["int8_drop"],
        "n_transfer": r["transfer"]["n"], **run.flat,
    }
    for name, c in r.get("cross_source", {}).items():
        key = name.replace("->", "_to_")
        for who in ("student", "teacher"):
            prefix = "xsrc" if who == "student" else "teacher_xsrc"
            flat[f"{prefix}_{key}_accuracy"] = c[who]["accuracy"]
            flat[f"{prefix}_{key}_macro_f1"] = c[who]["macro_f1"]
    run.flat = {k: float(v) for k, v in flat.items() if v is not None and np.isfinite(v)}
    (run.report_dir / "metrics.json").write_text(json.dumps(r, indent=2, default=float))
    (run.report_dir / "distill_report.md").write_text(markdown(run))
    mlflow.log_metrics(run.flat)
    mlflow.log_artifacts(str(run.report_dir), "report")


def markdown(run: Distillation) -> str:
    r = run.results
    lines = [f"# Distilled triage student ({run.opts.layers} layers from {r['teacher']['layers']}: teacher layers "
             f"{r['layer_map']})", "", f"Teacher: {run.opts.teacher} (version {run.teacher_version or 'local'}, run "
             f"{run.teacher_meta.get('run_id')}); transfer set {r['transfer']['n']} texts "
             f"({r['transfer']['by_source']}).", "",
             "| model | accuracy | macro-F1 | top-3 | ECE | selective acc. | coverage |", "|---|---:|---:|---:|---:|---:|---:|"]
    for who in ("teacher", "student"):
        m = r["test"][who]
        lines.append(f"| {who} | {m['accuracy']:.1%} | {m['macro_f1']:.1%} | {m['top3_accuracy']:.1%} | {m['ece']:.3f} "
                     f"| {m['selective']['selective_accuracy']:.1%} | {m['selective']['coverage']:.1%} |")
    lines += ["", f"Top-1 agreement with the teacher: {r['test']['top1_agreement']:.1%}; int8 accuracy "
              f"{r['onnx']['int8_accuracy']:.1%} (fp32 {r['onnx']['fp32_accuracy']:.1%})."]
    if r.get("cross_source"):
        lines += ["", "| cross-source | n test | teacher acc. | student acc. | teacher macro-F1 | student macro-F1 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, c in r["cross_source"].items():
            lines.append(f"| {name} | {c['n_test']} | {c['teacher']['accuracy']:.1%} | {c['student']['accuracy']:.1%} "
                         f"| {c['teacher']['macro_f1']:.1%} | {c['student']['macro_f1']:.1%} |")
        if r.get("cross_source_measured_in"):
            m = r["cross_source_measured_in"]
            lines += ["", f"Cross-source figures measured by the same recipe in run {m.get('run_id')} ({m.get('file')}, "
                      f"commit {m.get('git_commit')}): fresh teachers per direction do not depend on this teacher."]
    return "\n".join(lines) + "\n"


def write_meta(run: Distillation) -> None:
    meta = {
        "model_name": TRIAGE_MODEL_NAME,
        "taxonomy_version": run.teacher_meta.get("taxonomy_version"),
        "labels": run.labels,
        "temperature": run.temperature,
        "threshold": run.choice["threshold"],
        "selective_target": run.choice["target"],
        "max_length": run.max_length,
        "default_variant": "int8",
        "layers": run.opts.layers,
        "seed": run.seed,  # the teacher's split: lifecycle evaluation re-scores the same test rows
        "few_shot": run.teacher_meta.get("few_shot"),
        "parity_max_abs_diff": run.results.get("onnx", {}).get("max_abs_diff"),
        "quantization": run.results.get("quantization", {"scheme": "dynamic", "exclude": []}),
        "distillation": {"teacher_uri": run.opts.teacher, "teacher_version": run.teacher_version,
                         "teacher_run_id": run.teacher_meta.get("run_id"), "teacher_layers": run.results["teacher"]["layers"],
                         "layer_map": list(run.layer_map), "temperature": run.opts.temperature, "alpha": run.opts.alpha,
                         "embedding_weight": run.opts.embedding_weight, "n_transfer": run.results["transfer"]["n"],
                         "center_statements": run.opts.center_statements},
        "metrics": run.flat,
        "git_commit": run.commit,
        "run_id": run.run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": f"student of {run.teacher_meta.get('encoder', 'all-MiniLM-L6-v2')}",
    }
    (run.model_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def register(run: Distillation) -> tuple[str | None, dict | None]:
    """Log ``model/``; register a new version (no alias is set here), evaluate it as the lifecycle does and log that
    evaluation to the run; with ``promote`` hand it to the gated promotion. Returns (version, promotion)."""
    import mlflow

    mlflow.log_artifacts(str(run.model_dir), "model")
    if not run.opts.register:
        return None, None
    version = registry.register_run_artifact(
        TRIAGE_MODEL_NAME, run.run_id, "model",
        tags={"taxonomy_version": run.teacher_meta.get("taxonomy_version"), "git_commit": run.commit,
              "test_accuracy": round(run.flat["test_accuracy"], 4), "distilled_from": run.opts.teacher,
              "teacher_version": run.teacher_version or "local", "layers": run.opts.layers})
    kind = lifecycle.kind_of("triage")
    evaluation = lifecycle.evaluate_version(kind, version, None, run.settings)
    scalars = {f"registered_eval_{k}": float(v) for k, v in evaluation.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(scalars)
    mlflow.log_dict(evaluation, "report/registered_evaluation.json")
    run.results["registered_evaluation"] = {k: v for k, v in evaluation.items() if k != "per_class"}
    promotion = None
    if run.opts.promote:
        promotion = lifecycle.gated_promotion("triage", version, settings=run.settings,
                                              reason="distilled student: gated")
        mlflow.log_dict(promotion, "report/promotion.json")
        mlflow.set_tag("promotion", "champion" if promotion["promoted"] else "not promoted")
    return version, promotion


# ---------------------------------------------------------------------------- entry
def distil_triage(settings: Settings | None = None, **options) -> DistillResult:
    """prepare -> transfer set -> teacher -> soft targets -> distil -> calibrate -> test -> export -> urgency head
    -> cross-source -> report -> register (and gated promotion)."""
    import mlflow

    settings = settings or get_settings()
    started = time.time()
    _quiet_transformers()
    opts = DistillOptions(**options)
    if opts.cross_source_only:
        return distil_cross_source_only(settings, opts)
    run = prepare(settings, opts)
    registry.configure(settings)
    exp = registry.experiment_id(EXPERIMENT, settings)
    with mlflow.start_run(experiment_id=exp, run_name=f"distill-{run.opts.layers}l-{run.stamp}") as active:
        run.run_id = active.info.run_id
        transfer_set(run)
        log_inputs(run)
        teacher_model(run)
        if run.opts.cross_source_from:  # refuse a mismatching recipe before hours of training, not after
            reuse_cross_source(run, Path(run.opts.cross_source_from))
        soft_targets(run)
        distil(run)
        calibrate(run)
        evaluate_test(run)
        export(run)
        if run.opts.urgency:
            urgency(run)
        cross_source(run)
        run.teacher = run.student = None
        report(run)
        write_meta(run)
        version, promotion = register(run)
        mlflow.log_metric("distill_seconds", time.time() - started)
    return DistillResult(run.run_id, version, run.model_dir, None if promotion is None else promotion["promoted"],
                         {**run.flat, "details": run.results, "promotion": promotion})


def build_parser() -> argparse.ArgumentParser:
    d = DistillOptions()
    p = argparse.ArgumentParser(prog="python -m training distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default=d.teacher, help="teacher model: registry URI or artefact folder")
    p.add_argument("--layers", type=int, default=d.layers, help="student encoder layers")
    p.add_argument("--layer-map", default=None,
                   help="teacher layer per student layer, comma-separated (default: evenly spaced, e.g. 0,2,5)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--temperature", type=float, default=d.temperature, help="distillation temperature")
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of the soft-label term (rest: hard labels)")
    p.add_argument("--embedding-weight", type=float, default=d.embedding_weight,
                   help="weight of the pooled-embedding cosine loss (0: off)")
    p.add_argument("--hidden-weight", type=float, default=d.hidden_weight,
                   help="weight of the intermediate-layer MSE (TinyBERT-style hidden-state matching; 0: off)")
    p.add_argument("--hidden-map", default=None,
                   help="teacher layer each student layer's output is matched to, comma-separated (default: the "
                        "layer before the next student layer's teacher layer, and the last: 4,5 for 0,5)")
    p.add_argument("--attention-weight", type=float, default=d.attention_weight,
                   help="weight of the last-layer attention KL (0: off; trains with eager attention)")
    p.add_argument("--augment", type=int, default=d.augment, help="word-dropout copies per training text")
    p.add_argument("--unlabelled", action=argparse.BooleanOptionalAction, default=d.unlabelled,
                   help="add unlabelled complaint text (guidance-derived, label-map-dropped external rows)")
    p.add_argument("--unlabelled-limit", type=int, default=None)
    p.add_argument("--limit-per-center", type=int, default=None, help="cap labelled rows per center (fast runs)")
    p.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=d.freeze_embeddings)
    p.add_argument("--center-statements", action=argparse.BooleanOptionalAction, default=d.center_statements,
                   help="add the complaints derived from public condition pages to the training rows (use it when "
                        "the teacher was trained with `triage --center-statements`)")
    p.add_argument("--int8-scheme", choices=sorted(onnx_export.QUANT_SCHEMES), default=d.int8_scheme,
                   help="int8 graph: " + "; ".join(f"{k}: {v}" for k, v in onnx_export.QUANT_SCHEMES.items()))
    p.add_argument("--int8-exclude", default="",
                   help="comma-separated node-name substrings kept fp32 in the int8 graph, e.g. "
                        "'embeddings,classifier' (benchmarks/int8_schemes.py --sensitivity ranks the nodes)")
    p.add_argument("--int8-calibration", type=int, default=d.int8_calibration,
                   help="training texts that calibrate static-qdq's activation scales")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=d.fuse,
                   help="fuse attention, embeddings, LayerNorms and GELU (onnxruntime's transformer optimizer) "
                        "before int8 (dynamic schemes; benchmarks/fused_int8.py compares)")
    p.add_argument("--seed", type=int, default=None, help="split and training seed (default: the teacher's)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-urgency", dest="urgency", action="store_false", help="fit no urgency head")
    p.add_argument("--urgency-per-statement", type=int, default=d.urgency_per_statement)
    p.add_argument("--urgency-limit", type=int, default=None)
    p.add_argument("--no-urgency-external", dest="urgency_external", action="store_false")
    p.add_argument("--cross-source", action=argparse.BooleanOptionalAction, default=d.cross_source)
    p.add_argument("--cross-source-epochs", type=int, default=None)
    p.add_argument("--cross-source-unlabelled", type=int, default=d.cross_source_unlabelled,
                   help="unlabelled guidance rows in each cross-source student's transfer set")
    p.add_argument("--cross-source-variant", dest="cross_source_variants", action="append", default=[],
                   help="another student recipe distilled from the same cross-source teachers, e.g. "
                        "'hidden_weight=0' (repeatable; reported beside the recipe's)")
    p.add_argument("--cross-source-only", action="store_true",
                   help="run only the cross-source step (fresh teachers, no in-source teacher needed) and write "
                        "cross_source.json into the output folder")
    p.add_argument("--teacher-layers", type=int, default=d.teacher_layers,
                   help="layers of the cross-source teachers with --cross-source-only")
    p.add_argument("--cross-source-from", type=Path, default=None,
                   help="take the cross-source figures from this cross_source.json (refused unless its recipe "
                        "matches this run's)")
    p.add_argument("--no-register", dest="register", action="store_false")
    p.add_argument("--no-promote", dest="promote", action="store_false",
                   help="register only; do not hand the version to the gated promotion")
    p.add_argument("--output-dir", type=Path, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = vars(args)
    for key in ("layer_map", "hidden_map"):
        if options[key]:
            try:
                options[key] = tuple(int(x) for x in options[key].split(","))
            except ValueError:
                parser.error(f"--{key.replace('_', '-')} {options[key]!r}: comma-separated layer numbers, e.g. 0,2,5")
    options["cross_source_variants"] = tuple(options["cross_source_variants"])
    options["int8_exclude"] = tuple(x.strip() for x in options["int8_exclude"].split(",") if x.strip())
    try:
        result = distil_triage(get_settings(), **options)
    except DistillError as exc:
        print(f"error: {exc}")
        return 2
    m = result.metrics
    if args.cross_source_only:
        print(f"run {result.run_id}: cross-source figures in {result.model_dir}")
        for name, c in result.metrics["details"]["cross_source"].items():
            extra = "; ".join(f"{k}: {v['accuracy']:.4f}" for k, v in c.get("variants", {}).items())
            print(f"  {name}: teacher {c['teacher']['accuracy']:.4f}, student {c['student']['accuracy']:.4f}"
                  + (f"; variants {extra}" if extra else ""))
        return 0
    print(f"run {result.run_id} -> {TRIAGE_MODEL_NAME} version {result.version}; artifact {result.model_dir}")
    for key in ("test_accuracy", "teacher_test_accuracy", "test_macro_f1", "teacher_test_macro_f1",
                "test_ece_after", "test_selective_accuracy", "test_coverage", "test_top1_agreement",
                "onnx_int8_accuracy"):
        if key in m:
            print(f"  {key:<32} {m[key]:.4f}")
    for key in sorted(k for k in m if "xsrc_" in k):
        print(f"  {key:<32} {m[key]:.4f}")
    promotion = m.get("promotion")
    if promotion is not None:
        print("  promotion: " + ("champion" if promotion["promoted"] else "not promoted: " + "; ".join(
            f["detail"] for f in promotion["failures"]) + (promotion.get("error") or "")))
    return 0
