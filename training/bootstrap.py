"""``python -m training bootstrap [--no-train]``: get a fresh machine ready to serve (``scripts/run`` calls it).

1. The prescription knowledge base: builds ``settings.resolved_kb_path()`` when it is missing, unreadable or
   built from other curated tables than those in ``datasets/drugs`` (the service refuses a stale artefact).
2. The triage model: if ``RXT_TRIAGE_MODEL_URI`` (default ``models:/triage-classifier@champion``) does not
   resolve, trains and registers one with ``training.triage_train.train_triage`` on its defaults and sets the
   alias.  With ``--no-train`` nothing is trained: the service then starts not ready and says why at ``/readyz``.
3. Likewise the prescription risk model (``RXT_DDI_MODEL_URI``, default ``models:/ddi-severity@champion``,
   ``training.ddi_train.train_ddi``; DDInter and WHO ATC are non-commercial sources: see docs/licences.md).
   Without it the checker runs rules-only and says so in ``/readyz`` and in each response.

First start in minutes (``--quick``, what ``scripts/run`` does): step 2 trains a *quick* triage model instead
(``QUICK_TRIAGE_OPTIONS``: 2 encoder layers, one epoch on a sample per center, no urgency head or cross-source
run; ``meta.json`` says ``"quick": true``, so ``/readyz`` and every answer's ``model_version`` read
``<version>+quick``), step 3 trains nothing (checks run rules-only and say so), and a separate background process
(``python -m training bootstrap --full``, log in ``<work_dir>/logs/bootstrap-full.log``) then trains the full
champion and the DDI model.  Each registers itself as ``@champion``; the service's alias poller
(``RXT_MODEL_POLL_SECONDS``, 15 s in ``scripts/run``) hot-swaps to it.  ``--full`` holds a lock
(``<work_dir>/bootstrap-full.lock``), so a second one exits at once, and it re-trains whenever the champion is
still a quick model (an earlier run was interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from serving.registry import ModelNotFoundError, parse_alias_uri, resolve_model_dir
from serving.settings import Settings, get_settings
from training import registry
from training.ddi_train import MODEL_NAME, train_ddi
from training.kb_build import KBBuildError, ensure_kb
from training.triage_train import TRIAGE_MODEL_NAME, train_triage


def ensure_registered(settings: Settings, train: bool, *, what: str, uri: str, model_name: str,
                      train_fn: Callable, without: str, duration: str) -> str:
    """Resolve a model URI; train + register one when its registry alias has none (and training is allowed)."""
    try:
        folder, version = resolve_model_dir(uri, settings)
        return f"{what} {uri} -> version {version or 'local'} ({folder})"
    except ModelNotFoundError as exc:
        reason = str(exc)
    alias = parse_alias_uri(uri)
    if not train or alias is None or alias[0] != model_name:
        return f"{what} {uri} not available ({reason}); {without}"
    print(f"[bootstrap] {reason}", file=sys.stderr)
    print(f"[bootstrap] training and registering {model_name} on the embedded defaults (alias {alias[1]}); "
          f"{duration} ...", file=sys.stderr, flush=True)
    result = train_fn(settings, alias=alias[1])
    registry.configure(settings)
    if registry.get_alias_version(model_name, alias[1]) is None and result.version is not None:
        registry.set_alias(model_name, alias[1], str(result.version))
    return f"trained and registered {model_name} version {result.version} as @{alias[1]}"


def ensure_model(settings: Settings, train: bool) -> str:
    """The triage model: without it the service starts not ready."""

    return ensure_registered(settings, train, what="triage model", uri=settings.triage_model_uri,
                             model_name=TRIAGE_MODEL_NAME, train_fn=train_triage,
                             without="the service starts NOT ready", duration="about 20 minutes on 2 CPU cores")


def ensure_ddi_model(settings: Settings, train: bool) -> str:
    """The DDI risk model: without it prescription checks run rules-only (and say so)."""

    return ensure_registered(settings, train, what="ddi model", uri=settings.ddi_model_uri, model_name=MODEL_NAME,
                             train_fn=train_ddi, without="prescription checks run rules-only",
                             duration="about 10 minutes on 2 CPU cores")


def bootstrap(settings: Settings, train: bool = True) -> list[str]:
    return [ensure_kb(settings), ensure_model(settings, train), ensure_ddi_model(settings, train)]


# A first-start triage model: minutes on 2 cores, clearly labelled quick (meta.json "quick": true).
QUICK_TRIAGE_OPTIONS = dict(layers=2, epochs=1, limit_per_center=40, max_length=64, cross_source=False,
                            urgency=False, urgency_external=False, progress=False, quick=True)


def train_quick_triage(settings: Settings, alias: str):
    return train_triage(settings, alias=alias, **QUICK_TRIAGE_OPTIONS)


def champion_is_quick(settings: Settings) -> bool:
    """True when the triage URI resolves to a quick first-start model (or to nothing)."""
    try:
        folder, _ = resolve_model_dir(settings.triage_model_uri, settings)
    except ModelNotFoundError:
        return True
    try:
        return bool(json.loads((Path(folder) / "meta.json").read_text()).get("quick"))
    except (OSError, ValueError):
        return False


def ddi_missing(settings: Settings) -> bool:
    try:
        resolve_model_dir(settings.ddi_model_uri, settings)
        return False
    except ModelNotFoundError:
        return True


def bootstrap_quick(settings: Settings) -> tuple[list[str], bool]:
    """KB + a quick triage model when none is registered, nothing for DDI; True when the full models are still
    to be trained (``--full``)."""
    lines = [ensure_kb(settings),
             ensure_registered(settings, True, what="triage model", uri=settings.triage_model_uri,
                               model_name=TRIAGE_MODEL_NAME, train_fn=train_quick_triage,
                               without="the service starts NOT ready",
                               duration="a quick first-start model, about 2 minutes on 2 CPU cores")]
    alias = parse_alias_uri(settings.triage_model_uri)
    trainable = alias is not None and alias[0] == TRIAGE_MODEL_NAME
    ddi_alias = parse_alias_uri(settings.ddi_model_uri)
    ddi_trainable = ddi_alias is not None and ddi_alias[0] == MODEL_NAME
    need = (trainable and champion_is_quick(settings)) or (ddi_trainable and ddi_missing(settings))
    return lines, need


def bootstrap_full(settings: Settings) -> list[str]:
    """The full champion (when the champion is missing or quick) and the DDI model (when missing), once at a time."""
    import fcntl

    settings.work_dir.mkdir(parents=True, exist_ok=True)
    lock = open(settings.work_dir / "bootstrap-full.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return ["another 'bootstrap --full' is running; nothing to do"]
    lines = []
    alias = parse_alias_uri(settings.triage_model_uri)
    if alias is not None and alias[0] == TRIAGE_MODEL_NAME and champion_is_quick(settings):
        print(f"[bootstrap] training the full triage model ({TRIAGE_MODEL_NAME}, alias {alias[1]}) to replace the "
              "quick one; about 20 minutes on 2 CPU cores ...", file=sys.stderr, flush=True)
        result = train_triage(settings, alias=alias[1])
        registry.configure(settings)
        if registry.get_alias_version(TRIAGE_MODEL_NAME, alias[1]) != str(result.version) and result.version:
            registry.set_alias(TRIAGE_MODEL_NAME, alias[1], str(result.version))
        lines.append(f"trained and registered {TRIAGE_MODEL_NAME} version {result.version} as @{alias[1]}")
    else:
        lines.append(f"triage model {settings.triage_model_uri}: a full model is registered (or not trainable)")
    lines.append(ensure_ddi_model(settings, True))
    lock.close()
    return lines


def start_full_in_background(settings: Settings) -> Path:
    """``python -m training bootstrap --full`` as a detached process; returns its log file."""
    import os
    import subprocess

    log_path = settings.work_dir / "logs" / "bootstrap-full.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "training", "bootstrap", "--full"], stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                         env={**os.environ})
    return log_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="never train a model (only build the KB)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="first start in minutes: a quick triage model now, rules-only DDI, and the full models "
                      "trained by a background 'bootstrap --full' (scripts/run)")
    mode.add_argument("--full", action="store_true",
                      help="train the full triage champion (when missing or quick) and the DDI model (when missing)")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.full:
            lines = bootstrap_full(settings)
        elif args.quick and not args.no_train:
            lines, need_full = bootstrap_quick(settings)
            if need_full:
                log_path = start_full_in_background(settings)
                lines.append(f"training the full models in the background (log: {log_path}); the service "
                             "hot-swaps to them when they are registered")
        else:
            lines = bootstrap(settings, train=not args.no_train)
        for line in lines:
            print(f"[bootstrap] {line}", file=sys.stderr, flush=True)
    except KBBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
