"""``python -m training bootstrap [--no-train]``: get a fresh machine ready to serve (``scripts/run`` calls it).

1. The prescription knowledge base: builds ``settings.resolved_kb_path()`` when it is missing, unreadable or
   built from other curated tables than those in ``datasets/drugs`` (the service refuses a stale artefact).
2. The triage model: if ``RXT_TRIAGE_MODEL_URI`` (default ``models:/triage-classifier@champion``) does not
   resolve, trains and registers one with ``training.triage_train.train_triage`` on its defaults and sets the
   alias.  With ``--no-train`` nothing is trained: the service then starts not ready and says why at ``/readyz``.
3. Likewise the prescription risk model (``RXT_DDI_MODEL_URI``, default ``models:/ddi-severity@champion``,
   ``training.ddi_train.train_ddi``; DDInter and WHO ATC are non-commercial sources: see docs/licences.md).
   Without it the checker runs rules-only and says so in ``/readyz`` and in each response.
"""

from __future__ import annotations

import argparse
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="never train a model (only build the KB)")
    args = parser.parse_args(argv)
    try:
        for line in bootstrap(get_settings(), train=not args.no_train):
            print(f"[bootstrap] {line}", file=sys.stderr, flush=True)
    except KBBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
