"""Multi-process serving (``python -m serving --workers 2``): two real worker processes on one port, each with its
own model, converge on a newly promoted champion; /readyz names the answering worker's pid and versions; /metrics
aggregates every worker (Prometheus multiprocess mode); migrations ran once, in the parent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.triage_support import (  # noqa: F401 - fixtures
    CHAT,
    KEYS,
    copy_model,
    module_registry,
    own_registry,
    register_folder,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # two service processes, each loading a model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _versions_by_pid(url: str, want: int, tries: int = 400) -> dict[int, str | None]:
    seen: dict[int, str | None] = {}
    for _ in range(tries):
        try:
            body = httpx.get(f"{url}/readyz", timeout=5).json()  # a new connection each time: any worker may answer
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        seen[body["worker"]["pid"]] = body["worker"]["triage_model_version"]
        if len(seen) >= want:
            break
    return seen


def test_two_workers_converge_on_a_promotion(own_registry, triage_model_dir, tmp_path):
    settings, v1 = own_registry
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_99999.db").write_bytes(b"stale samples of an earlier run")  # cleaned at start
    env = {k: v for k, v in os.environ.items() if not k.startswith("RXT_")}
    env.update({
        "RXT_WORK_DIR": str(settings.work_dir), "RXT_API_KEYS": json.dumps(KEYS),
        "RXT_MLFLOW_TRACKING_URI": settings.resolved_tracking_uri(),
        "RXT_DATABASE_URL": f"sqlite:///{tmp_path / 'reviews.db'}", "RXT_KB_PATH": str(tmp_path / "no-kb.json"),
        "RXT_DDI_MODEL_URI": str(tmp_path / "no-ddi"), "RXT_MODEL_POLL_SECONDS": "0.5",
        "PROMETHEUS_MULTIPROC_DIR": str(prom), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
    })
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--workers", "2", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        seen: dict[int, str | None] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            seen = _versions_by_pid(url, 2, tries=50)
            if len(seen) == 2 and all(v == v1 for v in seen.values()):
                break
            time.sleep(0.5)
        assert len(seen) == 2 and set(seen.values()) == {v1}, seen
        assert proc.pid not in seen  # the workers answer, not the parent
        assert not (prom / "counter_99999.db").exists()

        v2 = register_folder(settings, copy_model(triage_model_dir, tmp_path / "v2"))  # promotion: alias moves
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = _versions_by_pid(url, 2, tries=50)
            if len(seen) == 2 and set(seen.values()) == {v2}:
                break
            time.sleep(0.3)
        assert len(seen) == 2 and set(seen.values()) == {v2}, seen
        for _ in range(6):
            r = httpx.post(f"{url}/v1/triage", json={"text": "my knee hurts when I climb stairs"}, headers=CHAT,
                           timeout=30)
            assert r.status_code == 200 and r.json()["model_version"] == v2

        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        info = [ln for ln in metrics.splitlines() if ln.startswith("rxt_triage_model_info{")]
        live = {ln.split('pid="')[1].split('"')[0] for ln in info if f'version="{v2}"' in ln and ln.endswith(" 1.0")}
        assert live == {str(pid) for pid in seen}, info  # every worker reports the new version
        assert not [ln for ln in info if f'version="{v1}"' in ln and ln.endswith(" 1.0")], info
        triage_ok = [ln for ln in metrics.splitlines()
                     if ln.startswith('rxt_http_requests_total{') and 'route="/v1/triage"' in ln]
        assert triage_ok and sum(float(ln.rsplit(" ", 1)[1]) for ln in triage_ok) == 6.0, triage_ok
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "2 worker processes" in text
