"""One compiled red-flag matcher per test session, shared by every app and evaluation the tests start.

Compiling the shipped red-flag table (``triage.redflags.RedFlagMatcher()``: ~9,000 spaCy token patterns) costs
about 1.3 s of CPU, and every ``create_app`` start-up (``TriageService.load_red_flags``) and every evaluation
helper built one: several hundred compilations of the same file per suite run.  Here the modules that build the
default matcher get a factory that returns the real matcher, compiled once per distinct content of the default
table (the file is re-hashed on every call, so an edited table still gets a fresh compile, and an unreadable one
still raises the real error).  Nothing is stubbed: ``match`` is the real matcher's; what a matcher does after it
is built is shared state only in its memo of spelling fixes, a pure function of the input.

tests/triage/test_redflags.py builds its own matchers (``RedFlagMatcher(...)`` imported from ``triage.redflags``,
not patched here), so the table's loading, validation and compile errors are still tested there.
"""

from __future__ import annotations

import hashlib
import sys
import threading

import pytest

from triage import redflags

# Modules that call ``RedFlagMatcher()`` for the default table (grep "RedFlagMatcher()" outside tests/).
PATCHED_MODULES = (
    "serving.triage_service",
    "training.urgency_train",
    "training.offline_eval",
    "training.lifecycle_eval",
    "evaluation.acuity_eval",
    "evaluation.redflag_eval",
)


class _SharedMatchers:
    def __init__(self, real):
        self.real = real
        self.built: dict[str, redflags.RedFlagMatcher] = {}
        self.lock = threading.Lock()
        self.compiles = 0

    def __call__(self, table_path=None, *args, **kwargs):
        if table_path is not None or args or kwargs:
            return self.real(table_path, *args, **kwargs)
        try:
            digest = hashlib.sha256(redflags.DEFAULT_TABLE_PATH.read_bytes()).hexdigest()
        except OSError:
            return self.real()  # raises the matcher's own error naming the table
        with self.lock:
            if digest not in self.built:
                self.built[digest] = self.real()
                self.compiles += 1
            return self.built[digest]


def _patch_imported(mp: pytest.MonkeyPatch, shared: _SharedMatchers) -> None:
    for name in PATCHED_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "RedFlagMatcher", None) is redflags.RedFlagMatcher:
            mp.setattr(module, "RedFlagMatcher", shared)


@pytest.fixture(scope="session", autouse=True)
def shared_red_flag_matcher():
    """The app's start-up path is patched for the whole session (module-scoped app fixtures included); the other
    modules when a test runs after they were imported (nothing heavy is imported here only to patch it)."""
    import serving.triage_service  # noqa: F401 - every app start-up goes through it

    shared = _SharedMatchers(redflags.RedFlagMatcher)
    with pytest.MonkeyPatch.context() as mp:
        _patch_imported(mp, shared)
        yield shared


@pytest.fixture(autouse=True)
def _use_shared_red_flag_matcher(shared_red_flag_matcher, monkeypatch):
    _patch_imported(monkeypatch, shared_red_flag_matcher)
