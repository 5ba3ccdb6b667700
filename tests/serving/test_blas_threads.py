"""Issue 16: the service pins numpy's BLAS to one thread per process (``RXT_BLAS_THREADS``, default 1).

OpenBLAS's threads waking for the urgency head's small nearest-exemplar product beside onnxruntime's threads cost
~10 ms a call against 0.14 ms on one thread (docs/benchmarks.md).  Checked in a fresh interpreter, as a worker
process starts, because the limit is process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
import numpy  # loads the BLAS library, as the service's imports do before create_app
from threadpoolctl import threadpool_info
def blas():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
before = blas()
from serving.app import create_app
create_app()
print(json.dumps({"before": before, "after": blas()}))
"""


def _probe(tmp_path: Path, **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RXT_") and k != "OPENBLAS_NUM_THREADS"}
    full.update({"RXT_WORK_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), **env})
    out = subprocess.run([sys.executable, "-c", PROBE], env=full, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_service_pins_blas_to_one_thread(tmp_path):
    seen = _probe(tmp_path)
    if not seen["before"]:
        pytest.fail("numpy's BLAS is not visible to threadpoolctl: the pin cannot be checked")
    assert seen["after"] and all(n == 1 for n in seen["after"]), seen
    if (os.cpu_count() or 1) > 1:  # the library's default is one thread per core: the pin changed something
        assert max(seen["before"]) > 1, seen


def test_blas_threads_zero_leaves_the_library_default(tmp_path):
    seen = _probe(tmp_path, RXT_BLAS_THREADS="0")
    assert seen["after"] == seen["before"], seen


def test_blas_threads_setting_is_validated(tmp_path):
    from serving.settings import Settings
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="blas_threads"):
        Settings(blas_threads=-1)
    assert Settings(blas_threads=2).blas_threads == 2
