"""Load benchmark of ``POST /v1/triage`` on loopback: micro-batching vs batch-size-1 serving.

For each serving mode (``batched``: the configured ``batch_max_size``/``batch_max_wait_ms``;
``unbatched``: ``batch_max_size=1``) the script

1. starts the service as a separate process (``python -m serving``) on a free loopback
   port with the real model (the registered champion, or ``--model PATH_OR_URI``) and waits for
   ``/readyz``;
2. runs a separate client process (httpx async) per concurrency level (1, 8, 64 by default),
   bounded in time (``--duration`` s) and count (``--max-requests``), after a short warm-up;
3. prints sustained requests/s, p50/p95/p99 latency and errors, side by side, with the
   batched/unbatched ratio, and the 1-minute load average before each run (the CPU is shared).

    .venv/bin/python benchmarks/load_triage.py --model var/runs/triage/<stamp>/model
    .venv/bin/python benchmarks/load_triage.py --duration 5 --concurrency 1 8 64 --json out.json
    .venv/bin/python benchmarks/load_triage.py --modes batched shadow --concurrency 64   # shadow challenger cost
    .venv/bin/python benchmarks/load_triage.py --modes batched shadow --concurrency 64 --rounds 6 --duration 20 \
        --challenger <model folder> --shadow-fraction 0.2     # both servers up, ABBAAB..., warm-up round discarded
    .venv/bin/python benchmarks/load_triage.py --modes batched shadow --concurrency 64 --rounds 12 --duration 6 \
        --challenger <model folder> --shadow-fraction 0.2 --wrk   # the same, each slice driven by wrk

Modes ``nofeedback`` (answers not recorded: RXT_FEEDBACK_ENABLED=false) and ``shadow`` (the challenger, by default
the same model, scores ``--shadow-fraction`` of the requests off the answering path) are batched serving with one
setting changed, for the cost of issue 15's feedback recording and shadow scoring; every mode records into its own
temporary SQLite database.

Goal on the 2-core machine: >= 400 req/s with p99 < 100 ms and zero errors.

``--wrk`` (issue #16): the client is ``wrk`` (C, one thread, N keep-alive connections; Debian package ``wrk``)
instead of the Python client, posting the same texts round-robin; ``--workers 1 2`` serves with that many worker
processes (``python -m serving --workers N``); and ``--inprocess S`` first measures the in-process pipeline for S
seconds in this process (``TriageService``'s batch function -- classifier + red flags + urgency -- on micro-batches
of ``--batch-max-size`` texts, the same model, one onnxruntime session per core as the served workers have in
total), plus the tokenizer's share of it, so HTTP can be read as a share of the in-process throughput in the
same run::

    .venv/bin/python benchmarks/load_triage.py --wrk --concurrency 64 --workers 1 2 --inprocess 10 --modes batched

Goal (issue #16): >= 600 req/s at 64 connections from wrk with p99 < 150 ms, HTTP >= 80% of in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "bench-chat-key-not-secret"

# Lay complaints of varied length (written for this benchmark; not patient data).
TEXTS = [
    "I have had a dry cough and a fever for three days and my chest feels tight",
    "itchy red rash on both elbows that gets worse at night",
    "toothache on the lower left side, hurts when I drink something cold",
    "my knee swells up after running and it clicks when I climb stairs",
    "burning when I pee and I need to go all the time",
    "I feel anxious every morning and can't sleep more than four hours",
    "my 4 year old has had an ear ache since yesterday and keeps pulling at his ear",
    "heartburn after every meal for the past month, worse when lying down",
    "blurry vision in my right eye and it is a bit red",
    "lower back pain after lifting boxes at work on Monday, no numbness",
    "my periods have been very irregular for six months",
    "I get very thirsty and pee a lot, and I have lost weight without trying",
    "sore throat and swollen glands, it hurts to swallow",
    "the skin around my big toe nail is red, swollen and painful",
    "I have had diarrhoea and stomach cramps since eating at a restaurant two days ago",
    "my ankle is swollen and bruised after I twisted it playing football",
    "headache behind my eyes most afternoons, better after resting",
    "yellowish eyes and dark urine for a week, feel tired",
    "small cut on my hand from a kitchen knife, it is a bit red around the edge",
    "crushing chest pain spreading to my left arm and I'm sweating",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- client
async def _client(url: str, concurrency: int, duration: float, max_requests: int, warmup: float,
                  raw: bool = False) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    state = {"sent": 0, "measuring": False}

    # One single-connection client per worker: httpx's shared pool costs CPU that grows with the
    # number of connections, which made the client (not the server) the bottleneck at c=64.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30.0) for _ in range(concurrency)]
    try:

        async def worker(wid: int, stop_at: float, record: bool) -> None:
            client = clients[wid]
            i = wid
            while time.perf_counter() < stop_at:
                if record:
                    if state["sent"] >= max_requests:
                        return
                    state["sent"] += 1
                text = TEXTS[i % len(TEXTS)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/triage", json={"text": text, "age": 30 + i % 40})
                    ok = r.status_code == 200
                    key = None if ok else f"http {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, key = False, exc.__class__.__name__
                elapsed = time.perf_counter() - t0
                if record:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors[key] = errors.get(key, 0) + 1

        if warmup > 0:
            stop = time.perf_counter() + warmup
            await asyncio.gather(*(worker(w, stop, False) for w in range(concurrency)))
        started = time.perf_counter()
        stop = started + duration
        await asyncio.gather(*(worker(w, stop, True) for w in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()

    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        if not lat:
            return None
        return round(lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] * 1000, 2)

    return {
        **({"latencies_ms": [round(x * 1000, 3) for x in latencies]} if raw else {}),
        "concurrency": concurrency,
        "requests": len(lat) + sum(errors.values()),
        "ok": len(lat),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall, 2),
        "rps": round(len(lat) / wall, 1) if wall > 0 else 0.0,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None,
    }


def run_client_process(url: str, concurrency: int, duration: float, max_requests: int, warmup: float,
                       raw: bool = False) -> dict:
    cmd = [
        sys.executable, __file__, "--client", "--url", url, "--concurrency", str(concurrency),
        "--duration", str(duration), "--max-requests", str(max_requests), "--warmup", str(warmup),
    ] + (["--raw"] if raw else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- in-process pipeline
def inprocess_pipeline(model: str | None, work_dir: str | None, seconds: float, batch: int) -> dict:
    """texts/s of TriageService's batch function (classifier + red flags + urgency) in this process, and the
    tokenizer's share of the time (encode only, same texts)."""
    from serving.metrics import Metrics
    from serving.settings import Settings
    from serving.triage_service import TriageInput, TriageService

    overrides = {"model_poll_seconds": 0}
    if work_dir:
        overrides["work_dir"] = Path(work_dir)
    if model:
        overrides["triage_model_uri"] = model
    service = TriageService(Settings(**overrides), Metrics())
    result = service.holder.load()
    if not result.reloaded:
        raise RuntimeError(f"model did not load: {result.error}")
    service.load_red_flags()
    items = [TriageInput(text=t, age=30 + i % 40) for i, t in enumerate(TEXTS)]
    batches = [[items[(k * batch + j) % len(items)] for j in range(batch)] for k in range(len(items))]
    service._process_batch(batches[0])  # warm-up
    done, k = 0, 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        done += len(service._process_batch(batches[k % len(batches)]))
        k += 1
    wall = time.perf_counter() - started
    cpu_ms = (time.process_time() - cpu_started) * 1000 / max(done, 1)
    model_obj = service.holder.model
    tok = getattr(model_obj, "_tokenizer", None)
    tok_ms = None
    if tok is not None:
        t0 = time.perf_counter()
        for text in TEXTS * 50:
            tok.encode_batch([text])
        tok_ms = (time.perf_counter() - t0) / (len(TEXTS) * 50) * 1000
    return {"texts_per_s": round(done / wall, 1), "ms_per_text": round(wall / done * 1000, 3),
            "cpu_ms_per_text": round(cpu_ms, 3),
            "tokenizer_ms_per_text": None if tok_ms is None else round(tok_ms, 3), "version": service.holder.version}


# ------------------------------------------------------------------------------- server
class Server:
    def __init__(self, model: str | None, batch_max_size: int, batch_max_wait_ms: float, log_path: Path,
                 work_dir: str | None, workers: int = 1, extra_env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            {
                "RXT_API_KEYS": json.dumps({BENCH_KEY: "chat"}),
                "RXT_API_KEYS_FILE": "",
                "RXT_BATCH_MAX_SIZE": str(batch_max_size),
                "RXT_BATCH_MAX_WAIT_MS": str(batch_max_wait_ms),
                "RXT_MODEL_POLL_SECONDS": "0",
                "HF_HUB_OFFLINE": "1",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            }
        )
        env.pop("RXT_API_KEYS_FILE")
        if work_dir:
            env["RXT_WORK_DIR"] = work_dir
        env.update(extra_env or {})
        cmd = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(workers)]
        if workers > 1:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(log_path.parent / f"prom-{self.port}")
        if model:
            cmd += ["--model", model]
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                last = r.json()
                comps = last.get("components", {})
                # Only the triage components matter here (other areas' components may be absent).
                if all(comps.get(name, {}).get("ok") for name in ("triage_model", "red_flags")):
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout}s: {last}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="triage model URI or folder (default: the configured champion)")
    p.add_argument("--work-dir", help="RXT_WORK_DIR for the server (registry location)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per concurrency level")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--max-requests", type=int, default=20000, help="cap per concurrency level")
    p.add_argument("--batch-max-size", type=int, default=32)
    p.add_argument("--batch-max-wait-ms", type=float, default=3.0)
    p.add_argument("--modes", nargs="+", default=["batched", "unbatched"],
                   choices=["batched", "unbatched", "nofeedback", "shadow", "control"],
                   help="control: batched serving again, its own server and database (an A/A test of two "
                        "identical servers: how far two processes differ by themselves)")
    p.add_argument("--shadow-fraction", type=float, default=1.0, help="shadow mode: RXT_SHADOW_FRACTION")
    p.add_argument("--challenger", help="shadow mode: the challenger's URI or folder (default: --model)")
    p.add_argument("--rounds", type=int, default=0,
                   help="alternate: start every mode's server once, keep all up, discard one warm-up round per "
                        "mode, then measure this many rounds per concurrency level, the order of the modes "
                        "reversed every round (AB BA AB ...); prints the p99 ratio of each round and the median")
    p.add_argument("--pairs", type=int, default=1,
                   help="--rounds: start a fresh pair of servers this many times (their start order alternated) "
                        "and run --rounds rounds on each pair; a difference that belongs to one process rather "
                        "than to the mode shows up as pairs that disagree")
    p.add_argument("--warmup-round", type=float, default=20.0,
                   help="--rounds: seconds of the discarded warm-up round of each mode")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--wrk", action="store_true", help="drive the service with wrk instead of the Python client (with --rounds: each slice is one wrk run; "
                        "wrk reports percentiles only, so no pooled p99)")
    p.add_argument("--workers", type=int, nargs="+", default=[1], help="service worker processes, one run each")
    p.add_argument("--profile", type=float, default=0.0,
                   help="--wrk: sample the server with py-spy for this many seconds during the last concurrency "
                        "level and print the share of each area of the triage path (encoder, tokenizer, red flags, "
                        "urgency, feedback recorder, logging, HTTP stack)")
    p.add_argument("--inprocess", type=float, default=0.0,
                   help="first measure the in-process pipeline for this many seconds (HTTP share of it)")
    # client mode (internal)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.client:
        result = asyncio.run(_client(args.url, args.concurrency[0], args.duration, args.max_requests, args.warmup,
                                     raw=args.raw))
        print(json.dumps(result))
        return 0

    if args.rounds:
        return alternate_main(args)
    if args.wrk:
        return wrk_main(args)
    results: dict[str, list[dict]] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="load-triage-"))
    for mode in args.modes:
        size = 1 if mode == "unbatched" else args.batch_max_size
        extra = mode_env(mode, args, log_dir)
        server = Server(args.model, size, args.batch_max_wait_ms, log_dir / f"server-{mode}.log", args.work_dir,
                        args.workers[0], extra)
        try:
            ready = server.wait_ready()
            model = ready["components"]["triage_model"]["detail"]
            print(f"[{mode}] batch_max_size={size} wait={args.batch_max_wait_ms}ms  {model}", flush=True)
            rows = []
            for c in args.concurrency:
                load = os.getloadavg()[0]
                row = run_client_process(server.url, c, args.duration, args.max_requests, args.warmup)
                row["load_before"] = round(load, 2)
                rows.append(row)
                print(
                    f"  c={c:<3} {row['rps']:>7.1f} req/s  p50 {row['p50_ms']} ms  p95 {row['p95_ms']} ms  "
                    f"p99 {row['p99_ms']} ms  errors {row['errors']} {row['error_kinds'] or ''}  (load {load:.2f})",
                    flush=True,
                )
            results[mode] = rows
            if mode in ("shadow", "batched", "nofeedback"):  # how much background work was done (or dropped)
                counters = background_counters(server.url)
                rows[-1]["background"] = counters
                print(f"  background work: {counters}", flush=True)
        finally:
            server.stop()

    print("\nconcurrency | " + " | ".join(f"{m}: req/s  p50  p95  p99  err" for m in results) + (" | batched/unbatched req/s" if set(results) == {"batched", "unbatched"} else ""))
    for i, c in enumerate(args.concurrency):
        cells = []
        for m in results:
            r = results[m][i]
            cells.append(f"{r['rps']:.0f}  {r['p50_ms']}  {r['p95_ms']}  {r['p99_ms']}  {r['errors']}")
        ratio = ""
        if set(results) == {"batched", "unbatched"} and results["unbatched"][i]["rps"]:
            ratio = f" | {results['batched'][i]['rps'] / results['unbatched'][i]['rps']:.2f}x"
        print(f"{c:>11} | " + " | ".join(cells) + ratio)
    first = next(iter(results))
    if len(results) > 1:
        print(f"\np99 and req/s relative to {first}:")
        for m in list(results)[1:]:
            cells = []
            for i, c in enumerate(args.concurrency):
                a, b = results[first][i], results[m][i]
                if a["p99_ms"] and b["p99_ms"] and a["rps"]:
                    cells.append(f"c={c}: p99 x{b['p99_ms'] / a['p99_ms']:.3f}, req/s x{b['rps'] / a['rps']:.3f}")
            print(f"  {m}: " + "; ".join(cells))
    from evaluation.cpu_info import describe_cpu

    print(f"(server logs in {log_dir}; cpu: {describe_cpu()}; load average now {os.getloadavg()[0]:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "args": vars(args)}, indent=2))
    return 0


def mode_env(mode: str, args, log_dir: Path, suffix: str = "") -> dict:
    """The environment that makes ``mode`` differ from ``batched`` (each mode records into its own database;
    ``control`` is batched again)."""
    extra = {"RXT_DATABASE_URL": f"sqlite:///{log_dir / f'feedback-{mode}{suffix}.db'}"}
    if mode == "nofeedback":
        extra["RXT_FEEDBACK_ENABLED"] = "false"
    if mode == "shadow":
        extra["RXT_SHADOW_FRACTION"] = str(args.shadow_fraction)
        challenger = args.challenger or args.model
        if challenger:
            extra["RXT_CHALLENGER_MODEL_URI"] = challenger
    return extra


BACKGROUND = ("rxt_shadow_scored_total", "rxt_shadow_dropped_total", "rxt_shadow_skipped_total",
              "rxt_shadow_outstanding", "rxt_feedback_recorded_total", "rxt_feedback_dropped_total",
              "rxt_triage_predictions_total", "rxt_shadow_agreement_rate")


def background_counters(url: str) -> dict:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(BACKGROUND)}


def settle(url: str, timeout: float = 60.0) -> float:
    """Wait until the server has no shadow work outstanding (so that it does not run into the next mode's round);
    returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not background_counters(url).get("rxt_shadow_outstanding"):
            break
        time.sleep(0.5)
    return time.monotonic() - started


def server_cpu(server: "Server") -> dict:
    """CPU seconds used so far by the service's processes, split into the shadow scorer processes
    (``serving.shadow_worker``) and the rest (the parent and its workers), and the machine's idle and steal seconds
    (/proc/stat): where the CPU of a slice went."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from wrk_support import cpu_seconds

    # descendants by parent pid (/proc/<pid>/task/<tid>/children names only the children that thread started, and
    # the scorer process is started by a worker thread)
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = [], [server.proc.pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    scorer, rest = [], []
    for pid in tree:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        (scorer if b"serving.shadow_worker" in cmdline else rest).append(pid)
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    tick = os.sysconf("SC_CLK_TCK")
    return {"service_cpu_s": cpu_seconds(rest), "scorer_cpu_s": cpu_seconds(scorer),
            "idle_s": (int(fields[3]) + int(fields[4])) / tick, "steal_s": int(fields[7]) / tick}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def pooled_p99_ratio(rounds: list[dict], modes: list[str], resamples: int = 2000, seed: int = 0) -> dict | None:
    """p99 of every request of each mode pooled over the rounds, their ratio, and a 95% bootstrap interval that
    resamples whole rounds (a round's two slices ran side by side in time, so they stay paired)."""
    import random

    pairs = [(r[modes[0]].get("latencies_ms") or [], r[modes[1]].get("latencies_ms") or []) for r in rounds]
    pairs = [(a, b) for a, b in pairs if a and b]
    if not pairs:
        return None

    def ratio(sample):
        return _p99([x for _, b in sample for x in b]) / _p99([x for a, _ in sample for x in a])

    rng = random.Random(seed)
    boot = sorted(ratio([pairs[rng.randrange(len(pairs))] for _ in pairs]) for _ in range(resamples))
    a_all = [x for a, _ in pairs for x in a]
    b_all = [x for _, b in pairs for x in b]
    return {"rounds": len(pairs), "a_n": len(a_all), "b_n": len(b_all), "a_p99_ms": _p99(a_all),
            "b_p99_ms": _p99(b_all), "ratio": _p99(b_all) / _p99(a_all),
            "low": boot[int(0.025 * resamples)], "high": boot[int(0.975 * resamples) - 1]}


def alternate_main(args) -> int:
    """Every mode's server up at once; rounds alternate the order of the modes (ABBA...), so warm-up, drift of the
    machine's load and position effects fall on both modes alike."""
    from evaluation.cpu_info import describe_cpu

    modes = list(dict.fromkeys(args.modes))
    if len(modes) != 2:
        raise SystemExit("--rounds compares exactly two modes (e.g. --modes batched shadow)")
    if args.wrk:  # --rounds --wrk: the slices are driven by wrk (no per-request latencies: no pooled p99)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from wrk_support import run_wrk

        bodies = [{"text": t, "age": 30 + i % 40} for i, t in enumerate(TEXTS)]

        def drive(url: str, c: int, seconds: float, raw: bool = False) -> dict:
            if args.warmup > 0:
                run_wrk(f"{url}/v1/triage", bodies, BENCH_KEY, connections=c, seconds=args.warmup)
            return run_wrk(f"{url}/v1/triage", bodies, BENCH_KEY, connections=c, seconds=seconds)
    else:
        def drive(url: str, c: int, seconds: float, raw: bool = False) -> dict:
            return run_client_process(url, c, seconds, args.max_requests, args.warmup, raw=raw)
    print(f"cpu: {describe_cpu()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; client "
          f"{'wrk' if args.wrk else 'python (httpx)'}", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="load-triage-ab-"))
    rounds: list[dict] = []
    for pair in range(1, max(1, args.pairs) + 1):
        start_order = modes if pair % 2 == 1 else modes[::-1]
        if args.pairs > 1:
            print(f"pair {pair}: fresh servers, started in the order {' '.join(start_order)}", flush=True)
        rounds += _alternate_pair(args, modes, start_order, drive, log_dir, pair)
    _alternate_report(args, modes, rounds, log_dir)
    return 0


def _alternate_pair(args, modes: list[str], start_order: list[str], drive, log_dir: Path, pair: int) -> list[dict]:
    """One pair of servers (one per mode) up at once, a discarded warm-up round each, then ``args.rounds`` rounds
    per concurrency level in ABBA order."""
    servers: dict[str, Server] = {}
    rounds: list[dict] = []
    try:
        for mode in start_order:
            size = 1 if mode == "unbatched" else args.batch_max_size
            servers[mode] = Server(args.model, size, args.batch_max_wait_ms,
                                   log_dir / f"server-{mode}-pair{pair}.log", args.work_dir, args.workers[0],
                                   mode_env(mode, args, log_dir, suffix=f"-pair{pair}"))
        for mode, server in servers.items():
            ready = server.wait_ready()
            print(f"[{mode}] {ready['components']['triage_model']['detail']}", flush=True)
        for c in args.concurrency:
            for mode in modes:  # the discarded warm-up round of each server
                row = drive(servers[mode].url, c, args.warmup_round)
                waited = settle(servers[mode].url)
                print(f"  c={c} warm-up {mode}: {row['rps']:.1f} req/s  p99 {row['p99_ms']} ms (discarded; settled "
                      f"{waited:.1f} s)", flush=True)
            for k in range(args.rounds):
                order = modes if k % 2 == 0 else modes[::-1]
                got: dict[str, dict] = {}
                for mode in order:
                    load = os.getloadavg()[0]
                    before = background_counters(servers[mode].url)
                    cpu_before = server_cpu(servers[mode])
                    row = drive(servers[mode].url, c, args.duration, raw=True)
                    cpu_after = server_cpu(servers[mode])
                    at_end = background_counters(servers[mode].url)  # before the settle: scored during the slice
                    waited = settle(servers[mode].url)
                    after = background_counters(servers[mode].url)
                    row["background"] = {key: round(after.get(key, 0) - before.get(key, 0), 3)
                                         for key in after if key.endswith("_total")}
                    row["scored_in_slice"] = round(at_end.get("rxt_shadow_scored_total", 0)
                                                   - before.get("rxt_shadow_scored_total", 0))
                    # the client's slice (warm-up + measured), CPU seconds per served request and the machine's
                    # idle/steal seconds over it
                    row["cpu"] = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
                    row.update(load_before=round(load, 2), settled_s=round(waited, 1), mode=mode)
                    got[mode] = row
                    print(f"  c={c} round {k + 1} {mode:<10} {row['rps']:>7.1f} req/s  p50 {row['p50_ms']} ms  "
                          f"p99 {row['p99_ms']} ms  errors {row['errors']}  (load {load:.2f}; settled {waited:.1f} s) "
                          f"{ {k_.replace('_total', ''): v for k_, v in row['background'].items() if v} } "
                          f"scored in slice {row['scored_in_slice']}; cpu {row['cpu']}", flush=True)
                a, b = got[modes[0]], got[modes[1]]
                ratio = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] and b["p99_ms"] else None
                rounds.append({"concurrency": c, "pair": pair, "round": k + 1, "order": order, modes[0]: a, modes[1]: b,
                               "p99_ratio": ratio, "rps_ratio": b["rps"] / a["rps"] if a["rps"] else None})
    finally:
        for server in servers.values():
            server.stop()
    return rounds


def _alternate_report(args, modes: list[str], rounds: list[dict], log_dir: Path) -> None:
    from evaluation.cpu_info import describe_cpu

    print(f"\n| c | round | order | {modes[0]} req/s | {modes[0]} p99 ms | {modes[1]} req/s | {modes[1]} p99 ms | "
          f"p99 {modes[1]}/{modes[0]} | req/s {modes[1]}/{modes[0]} | {modes[1]} scored / dropped / skipped |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rounds:
        a, b = r[modes[0]], r[modes[1]]
        bg = b["background"]
        dropped = sum(v for k, v in bg.items() if k.startswith("rxt_shadow_dropped_total"))
        skipped = sum(v for k, v in bg.items() if k.startswith("rxt_shadow_skipped_total"))
        print(f"| {r['concurrency']} | {r['pair']}.{r['round']} | {''.join(m[0].upper() for m in r['order'])} | {a['rps']:.1f} | "
              f"{a['p99_ms']} | {b['rps']:.1f} | {b['p99_ms']} | {r['p99_ratio']:.3f} | {r['rps_ratio']:.3f} | "
              f"{bg.get('rxt_shadow_scored_total', 0):.0f} / {dropped:.0f} / {skipped:.0f} of "
              f"{bg.get('rxt_triage_predictions_total', 0):.0f} |")
    for c in args.concurrency:
        for mode in modes:  # where the CPU went during the slices, and how much of the sample was scored
            rows_ = [r[mode] for r in rounds if r["concurrency"] == c]
            if not rows_:
                continue
            cpu = {k: sum(r["cpu"][k] for r in rows_) for k in rows_[0]["cpu"]}
            bg: dict[str, float] = {}
            for r in rows_:
                for k, v in r["background"].items():
                    bg[k] = bg.get(k, 0) + v
            served = sum(r["ok"] for r in rows_)
            offered = bg.get("rxt_triage_predictions_total", 0)
            scored = bg.get("rxt_shadow_scored_total", 0)
            dropped = sum(v for k, v in bg.items() if k.startswith("rxt_shadow_dropped_total"))
            skipped = sum(v for k, v in bg.items() if k.startswith("rxt_shadow_skipped_total"))
            print(f"c={c} {mode}: {served} requests measured, {offered:.0f} answered in the slices (warm-ups "
                  f"included); service CPU {cpu['service_cpu_s']:.1f} s, scorer CPU {cpu['scorer_cpu_s']:.1f} s, "
                  f"machine idle {cpu['idle_s']:.1f} s, steal {cpu['steal_s']:.1f} s over the slices"
                  + (f"; shadow scored {scored:.0f} ({scored / max(offered, 1):.1%} of answers; "
                     f"{sum(r['scored_in_slice'] for r in rows_)} during the slices, the rest while settling), "
                     f"dropped {dropped:.0f}, skipped {skipped:.0f}" if mode == "shadow" else ""))
        pooled = pooled_p99_ratio([r for r in rounds if r["concurrency"] == c], modes)
        if pooled:
            print(f"c={c}: pooled over {pooled['rounds']} rounds: {modes[0]} p99 {pooled['a_p99_ms']:.1f} ms "
                  f"({pooled['a_n']} requests), {modes[1]} p99 {pooled['b_p99_ms']:.1f} ms ({pooled['b_n']}); ratio "
                  f"{pooled['ratio']:.3f}, 95% bootstrap interval over rounds {pooled['low']:.3f} .. "
                  f"{pooled['high']:.3f}")
        ratios = [r["p99_ratio"] for r in rounds if r["concurrency"] == c and r["p99_ratio"] is not None]
        rps = [r["rps_ratio"] for r in rounds if r["concurrency"] == c and r["rps_ratio"] is not None]
        if ratios:
            print(f"c={c}: p99 {modes[1]}/{modes[0]} per round {', '.join(f'{x:.3f}' for x in ratios)}; median "
                  f"{statistics.median(ratios):.3f}, geometric mean {statistics.geometric_mean(ratios):.3f}; "
                  f"req/s ratio median {statistics.median(rps):.3f}")
        per_pair = pair_medians(rounds, c)
        if len(per_pair) > 1:
            print(f"c={c}: median p99 ratio per pair of servers " + ", ".join(
                f"pair {k}: {v:.3f}" for k, v in per_pair.items()) + f"; median of the pair medians "
                f"{statistics.median(per_pair.values()):.3f}, {sum(v > 1 for v in per_pair.values())} of "
                f"{len(per_pair)} pairs above 1")
    print(f"(server logs in {log_dir}; cpu: {describe_cpu()}; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "args": vars(args)}, indent=2))


def pair_medians(rounds: list[dict], concurrency: int) -> dict[int, float]:
    """The median p99 ratio of each pair of servers at one concurrency level (pair number -> median)."""
    by_pair: dict[int, list[float]] = {}
    for r in rounds:
        if r["concurrency"] == concurrency and r.get("p99_ratio") is not None:
            by_pair.setdefault(r.get("pair", 1), []).append(r["p99_ratio"])
    return {k: statistics.median(v) for k, v in sorted(by_pair.items())}


# areas of the served triage path for --profile: a sample counts for the first area one of whose markers is in its
# stack (py-spy frame names)
TRIAGE_CATEGORIES = [
    ("encoder (onnxruntime)", ("Session.run",)),
    ("tokenizer", ("TriageClassifier._encode",)),
    ("red flags", ("RedFlagMatcher.",)),
    ("urgency head and decision", ("decide_urgency", "UrgencyHead.", "respect_mentions")),
    ("feedback recorder", ("FeedbackRecorder.", "make_record")),
    ("shadow hand-off", ("shadow.py", "Shadow")),
    ("logging", ("Logger.", "JsonFormatter")),
    ("metrics", ("prometheus_client", "MetricWrapperBase")),
    ("HTTP, ASGI, FastAPI, validation", ("run_asgi", "httptools_impl", "h11_impl")),
]


def wrk_main(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from wrk_support import categorise_stacks, cpu_seconds, py_spy_record, run_wrk, tree_pids

    from evaluation.cpu_info import describe_cpu

    print(f"cpu: {describe_cpu()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    inproc = None
    if args.inprocess:
        inproc = inprocess_pipeline(args.model, args.work_dir, args.inprocess, args.batch_max_size)
        print(f"in-process pipeline (model {inproc['version']}, batches of {args.batch_max_size}): "
              f"{inproc['texts_per_s']} texts/s, {inproc['ms_per_text']} ms/text, CPU {inproc['cpu_ms_per_text']} ms/text, "
              f"of which tokenizer "
              f"{inproc['tokenizer_ms_per_text']} ms/text  (load {os.getloadavg()[0]:.2f})", flush=True)
    bodies = [{"text": t, "age": 30 + i % 40} for i, t in enumerate(TEXTS)]
    log_dir = Path(tempfile.mkdtemp(prefix="load-triage-wrk-"))
    rows = []
    for mode in args.modes:
        size = 1 if mode == "unbatched" else args.batch_max_size
        for workers in args.workers:
            server = Server(args.model, size, args.batch_max_wait_ms, log_dir / f"server-{mode}-{workers}.log",
                            args.work_dir, workers)
            try:
                ready = server.wait_ready()
                version = (ready.get("worker") or {}).get("triage_model_version")
                run_wrk(f"{server.url}/v1/triage", bodies, BENCH_KEY, connections=8, seconds=args.warmup)
                for c in args.concurrency:
                    load = os.getloadavg()[0]
                    pids = tree_pids(server.proc.pid)
                    spy = None
                    if args.profile and c == args.concurrency[-1]:  # py-spy beside the last level's run
                        out = log_dir / f"pyspy-{mode}-{workers}w"
                        spy = concurrent.futures.ThreadPoolExecutor(1).submit(
                            py_spy_record, pids, min(args.profile, max(1.0, args.duration - 1)), out)
                    cpu0 = cpu_seconds(pids)
                    row = run_wrk(f"{server.url}/v1/triage", bodies, BENCH_KEY, connections=c, seconds=args.duration)
                    row["cpu_ms_per_request"] = round((cpu_seconds(pids) - cpu0) * 1000 / max(row["requests"], 1), 3)
                    if spy is not None:
                        samples, shares = categorise_stacks(spy.result(), TRIAGE_CATEGORIES)
                        row["profile"] = dict(shares)
                        print(f"    py-spy, {samples} samples of active threads (server processes), share per area: "
                              + ", ".join(f"{name} {share}%" for name, share in shares), flush=True)
                    row.update(mode=mode, workers=workers, load_before=round(load, 2), version=version)
                    rows.append(row)
                    share = (f"  = {row['rps'] / inproc['texts_per_s']:.0%} of in-process req/s, CPU efficiency "
                             f"{inproc['cpu_ms_per_text'] / max(row['cpu_ms_per_request'], 1e-9):.0%}") if inproc else ""
                    print(f"[{mode} workers={workers}] c={c:<3} {row['rps']:>7.1f} req/s  p50 {row['p50_ms']:.1f} ms  "
                          f"p90 {row['p90_ms']:.1f}  p99 {row['p99_ms']:.1f}  max {row['max_ms']:.0f}  errors "
                          f"{row['errors']}{share}  server CPU {row['cpu_ms_per_request']:.2f} ms/request  (load {load:.2f}, "
                          f"model {version})", flush=True)
            finally:
                server.stop()
    print("\n| mode | workers | connections | req/s | p50 ms | p99 ms | errors | HTTP / in-process | server CPU ms/req | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = f"{r['rps'] / inproc['texts_per_s']:.0%}" if inproc else "-"
        print(f"| {r['mode']} | {r['workers']} | {r['connections']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['errors']} | {share} | {r['cpu_ms_per_request']:.2f} | {r['load_before']:.2f} |")
    print(f"(server logs in {log_dir}; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    if args.json:
        Path(args.json).write_text(json.dumps({"inprocess": inproc, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
