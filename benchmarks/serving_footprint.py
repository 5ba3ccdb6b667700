"""Benchmark of the service's footprint (not a test): the full dev env vs a serving-only install, side by side.

    .venv/bin/python benchmarks/serving_footprint.py [--rounds 3] [--venv DIR] [--kb PATH]

Builds a serving-only venv under /tmp with ``scripts/setup --serve-only`` (the project without extras; pip takes
the wheels from its local cache), unless ``--venv`` names one (then it is refreshed the same way and kept),
and a knowledge base with ``.venv/bin/python -m training kb`` unless ``--kb`` names one.  Then, per round and
interleaved, for each of

- **full, no guard**: the full dev env (``.venv``, with the ``train`` extra) running the service the way
  ``python -m serving`` did before its torch guard (``serving.__main__.main()`` called from an import);
- **full**: the full dev env, ``python -m serving`` (its first statement keeps torch out);
- **serving-only**: the serving-only venv, ``python -m serving`` (no torch installed);

it measures
- install size: ``du`` of the env's site-packages;
- start-up: from spawning ``python -m serving`` on a free loopback port until ``/healthz`` answers (the
  lifespan has completed by then: red-flag rules, KB, review database; no models: the model URIs name missing
  folders, so the service is up but not ready), and, in a separate process, import + ``create_app`` +
  lifespan start-up measured in-process;
- RSS of the server process after start-up (``VmRSS`` in ``/proc/<pid>/status``, 0.5 s after ``/healthz``);
- torch: whether ``sys.modules`` holds an imported torch after the entry point's imports, ``create_app`` and
  the lifespan (in-process), and whether a torch library is mapped in the server (``/proc/<pid>/maps``).

Medians over ``--rounds``.  The machine is shared: absolute times move with the load average (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.cpu_info import describe_cpu

FULL_PY = ROOT / ".venv" / "bin" / "python"
API_KEYS = '{"k1234567890": "admin"}'

# The entry point, run in-process: its module-level imports (with or without the guard), then create_app and
# the lifespan start-up and shut-down; prints seconds and whether torch was imported.
PROBE = r"""
import contextlib, io, json, runpy, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "main":   # as `python -m serving`: __name__ == "__main__", so the torch guard runs
    sys.argv = ["serving", "--help"]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_module("serving", run_name="__main__", alter_sys=True)
        except SystemExit:
            pass
else:                       # imported as a module: no guard (how the service ran before it)
    import serving.__main__  # noqa: F401
t_import = time.perf_counter()
import asyncio
from serving.app import create_app
app = create_app()
async def start():
    async with app.router.lifespan_context(app):
        return time.perf_counter()
t_started = asyncio.run(start())
torch = sys.modules.get("torch")
print(json.dumps({"import_s": t_import - t0, "startup_s": t_started - t0, "torch_imported": torch is not None}))
"""

# `python -m serving` without its guard: the same main(), called from an import of serving.__main__.
NO_GUARD = "import sys; from serving.__main__ import main; sys.exit(main(sys.argv[1:]))"


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(work: Path, kb: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RXT_WORK_DIR": str(work),
        "RXT_API_KEYS": API_KEYS,
        "RXT_TRIAGE_MODEL_URI": str(work / "no-such-triage-model"),
        "RXT_DDI_MODEL_URI": str(work / "no-such-ddi-model"),
        "RXT_KB_PATH": str(kb),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    env.pop("PYTHONPATH", None)
    return env


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def torch_libraries(pid: int) -> list[str]:
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and ("/torch/" in parts[5] or "libtorch" in parts[5]):
            found.add(parts[5])
    return sorted(found)


def run_server(argv: list[str], env: dict[str, str], cwd: Path, port: int, timeout: float = 120.0) -> dict:
    """Spawn the service, time until /healthz answers, read RSS and mapped torch libraries, stop it."""
    log_path = cwd / f"server-{port}.log"
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv + ["--port", str(port), "--log-level", "warning"], env=env, cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"service exited with {proc.returncode}; see {log_path}")
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"no /healthz after {timeout} s; see {log_path}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    time.sleep(0.02)
            up = time.perf_counter() - t0
            time.sleep(0.5)
            return {"up_s": up, "rss_mb": vm_rss_mb(proc.pid), "torch_libs": torch_libraries(proc.pid)}
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_probe(python: Path, mode: str, env: dict[str, str], cwd: Path) -> dict:
    out = subprocess.run([str(python), "-c", PROBE, mode], env=env, cwd=cwd, check=True, capture_output=True,
                         text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_serving_venv(target: Path) -> float:
    t = time.perf_counter()
    subprocess.run([str(ROOT / "scripts" / "setup"), "--serve-only", str(target)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--venv", type=Path, help="serving-only venv to build or refresh and keep "
                        "(default: a fresh one under /tmp, removed afterwards)")
    parser.add_argument("--kb", type=Path, help="built KB artefact (default: built under /tmp first)")
    args = parser.parse_args()

    print(f"CPU: {describe_cpu()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="rxt-footprint-"))
    try:
        venv = args.venv or tmp / "serving-venv"
        print(f"building the serving-only venv at {venv} (scripts/setup --serve-only) ...", flush=True)
        print(f"  built in {build_serving_venv(venv):.0f} s")
        kb = args.kb
        if kb is None:
            kb = tmp / "kb.json"
            print("building the KB (python -m training kb) ...", flush=True)
            subprocess.run([str(FULL_PY), "-m", "training", "kb", "--output", str(kb)], check=True,
                           cwd=ROOT, stdout=subprocess.DEVNULL)
        serve_py = venv / "bin" / "python"
        envs = {  # name -> (python, server argv, probe mode)
            "full, no guard": (FULL_PY, [str(FULL_PY), "-c", NO_GUARD], "import"),
            "full": (FULL_PY, [str(FULL_PY), "-m", "serving"], "main"),
            "serving-only": (serve_py, [str(serve_py), "-m", "serving"], "main"),
        }
        sizes = {py: du_mb(site_packages(py)) for py in {py for py, _, _ in envs.values()}}
        size = {name: sizes[py] for name, (py, _, _) in envs.items()}
        results: dict[str, list[dict]] = {name: [] for name in envs}
        for r in range(args.rounds):
            for name, (py, argv, mode) in envs.items():
                work = tmp / f"work-{r}-{name.replace(' ', '').replace(',', '')}"
                work.mkdir()
                env = service_env(work, kb)
                probe = run_probe(py, mode, env, work)
                server = run_server(argv, env, work, free_port())
                results[name].append({**probe, **server})
                print(f"  round {r + 1} {name:15s}: up {server['up_s']:.2f} s, in-process {probe['startup_s']:.2f} s, "
                      f"RSS {server['rss_mb']:.0f} MB, torch imported {probe['torch_imported']}, "
                      f"torch libraries mapped {len(server['torch_libs'])}", flush=True)
        print(f"load average at end: {os.getloadavg()[0]:.2f}\n")

        def med(name: str, key: str) -> float:
            return statistics.median(x[key] for x in results[name])

        def yes(name: str, key: str) -> str:
            return "yes" if any(x[key] for x in results[name]) else "no"

        base = "serving-only"
        rows = [
            ("install size (site-packages)", {n: size[n] for n in envs}, "{:,.0f} MB"),
            ("start-up: spawn until /healthz answers", {n: med(n, "up_s") for n in envs}, "{:.2f} s"),
            ("start-up in-process: import + create_app + lifespan", {n: med(n, "startup_s") for n in envs},
             "{:.2f} s"),
            ("of which the entry point's imports", {n: med(n, "import_s") for n in envs}, "{:.2f} s"),
            ("RSS after start-up", {n: med(n, "rss_mb") for n in envs}, "{:.0f} MB"),
        ]
        names = list(envs)
        print(f"| measure | {' | '.join(names)} | {' | '.join(f'{n} / {base}' for n in names if n != base)} |")
        print("|---|" + "---:|" * (2 * len(names) - 1))
        for label, values, fmt in rows:
            ratios = [f"{values[n] / values[base]:.2f}x" for n in names if n != base]
            print(f"| {label} | {' | '.join(fmt.format(values[n]) for n in names)} | {' | '.join(ratios)} |")
        print(f"| torch in sys.modules | {' | '.join(yes(n, 'torch_imported') for n in names)} |"
              + " |" * (len(names) - 1))
        print(f"| torch library mapped | {' | '.join(yes(n, 'torch_libs') for n in names)} |"
              + " |" * (len(names) - 1))
        print(f"\nmedians of {args.rounds} interleaved rounds; site-packages: "
              + "; ".join(f"{n}: {site_packages(envs[n][0])}" for n in ("full", base)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the default venv and KB live here; --venv / --kb are kept
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
