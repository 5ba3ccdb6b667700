"""Shared helpers of the wrk-based load benchmarks (``load_rx.py``, ``load_triage.py --wrk``): not a test.

``wrk`` (Debian package ``wrk``, a C load generator: one thread, N keep-alive connections) posts bodies read from a
file, one JSON document per line, round-robin, and prints one JSON line of results from its ``done`` hook
(requests, duration, non-2xx, socket errors, latency percentiles), which :func:`run_wrk` parses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

LUA = r"""
local bodies = {}
for line in io.lines(os.getenv("RXT_WRK_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RXT_WRK_KEY")
request = function()
  i = i + 1
  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nRXT_WRK {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, bodies: list[dict], key: str, *, connections: int, seconds: float, threads: int = 1,
            timeout_s: float = 10.0) -> dict:
    """Run wrk against ``url`` (full URL of the endpoint) and return its results (req/s, errors, p50/p90/p99)."""
    if not wrk_available():
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="rxt-wrk-"))
    (tmp / "post.lua").write_text(LUA)
    (tmp / "bodies.jsonl").write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    env = {**os.environ, "RXT_WRK_BODIES": str(tmp / "bodies.jsonl"), "RXT_WRK_KEY": key}
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={max(1, round(timeout_s))}s",
           "-s", str(tmp / "post.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RXT_WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
    row = json.loads(line[len("RXT_WRK "):])
    wall = row["duration_us"] / 1e6
    errors = row["non2xx"] + row["connect"] + row["read"] + row["write"] + row["timeout"]
    row.update(connections=connections, seconds=round(wall, 2), errors=errors,
               ok=row["requests"] - row["non2xx"], rps=round((row["requests"] - row["non2xx"]) / wall, 1))
    shutil.rmtree(tmp, ignore_errors=True)
    return row


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (the service's parent and worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (/proc/<pid>/stat): load-independent cost."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def py_spy_record(pids: list[int], seconds: float, out: Path) -> list[Path]:
    """py-spy (200 Hz, non-blocking, active threads only) on each process for ``seconds``; raw collapsed stacks,
    one file per process."""
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    paths = [out.with_suffix(f".{pid}.txt") for pid in pids]
    procs = [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                               "-o", str(path), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for pid, path in zip(pids, paths)]
    for p in procs:
        p.wait(timeout=seconds + 60)
    return [p for p in paths if p.exists()]


def raw_stacks(paths: list[Path]):
    """(stack, samples) of each line of py-spy raw (collapsed) output files; missing files are skipped."""
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                yield stack, int(count)


def categorise_stacks(paths: list[Path], categories: list[tuple[str, tuple[str, ...]]]) -> tuple[int, list]:
    """Share of the samples in each category: a sample belongs to the first category (in the given order) any of
    whose markers occurs in one of its frames; the rest is "other". Returns (samples, [(name, share %)])."""
    counts = {name: 0 for name, _ in categories}
    counts["other"] = 0
    samples = 0
    for stack, n in raw_stacks(paths):
        samples += n
        for name, markers in categories:
            if any(marker in stack for marker in markers):
                counts[name] += n
                break
        else:
            counts["other"] += n
    return samples, [(name, round(100 * c / max(samples, 1), 1)) for name, c in counts.items()]
