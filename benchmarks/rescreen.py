"""Benchmark of the batch re-screen (not a test): Spark local[2] vs the single-process loop on the same rows.

    .venv/bin/python benchmarks/rescreen.py [--n 200000] [--kb current] [--ddi-model URI] [--work DIR]
        [--invalid-share 0.005]

Generates (or reuses) ``--n`` synthetic prescriptions (``python -m training synth-prescriptions``, drawn from the
gold set, a share of deliberately invalid rows for the rejects path), then runs ``training.rescreen.run`` on them
twice: ``--engine local`` (one process, the per-batch function in a loop) and ``--engine spark`` (local[2],
mapInPandas: the same function in two Python workers).  Prints CPU, load average before/after each run, rows/s
of each (screening only, and end to end including Spark's JVM start and the checker loads), the ratio, and
asserts that both wrote the same report and rejects row for row (sorted by source, every column equal).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.cpu_info import describe_cpu
from training import rescreen, rx_synth
from training.rescreen_core import keep_torch_out

keep_torch_out()  # as `python -m training rescreen` does: the job's process never needs torch (spaCy would import it)


class TreeCPU:
    """CPU seconds (user + system) of this process and every process under it (the JVM, its Python workers),
    sampled every second from /proc: what an engine costs the machine, whatever else runs beside it."""

    def __init__(self):
        import threading

        self.seen: dict[int, float] = {}
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _tree(self) -> dict[int, float]:
        tick = os.sysconf("SC_CLK_TCK")
        parent, cpu = {}, {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as fh:
                        fields = fh.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parent[int(name)] = int(fields[1])
                cpu[int(name)] = (int(fields[11]) + int(fields[12])) / tick
        mine, todo = {os.getpid()}, [os.getpid()]
        while todo:
            pid = todo.pop()
            for child, up in parent.items():
                if up == pid and child not in mine:
                    mine.add(child)
                    todo.append(child)
        return {pid: cpu[pid] for pid in mine if pid in cpu}

    def _loop(self):
        while not self._stop:
            self.sample()
            time.sleep(1.0)

    def sample(self) -> float:
        for pid, seconds in self._tree().items():
            self.seen[pid] = max(seconds, self.seen.get(pid, 0.0))
        return sum(self.seen.values())


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def read_sorted(folder: Path):
    import pandas as pd

    frame = pd.read_parquet(folder)
    return frame.sort_values(["source", "prescription_id"], na_position="first").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--kb", default="current")
    parser.add_argument("--ddi-model", default=None)
    parser.add_argument("--work", type=Path, default=None, help="folder for the input and outputs (default: tmp)")
    parser.add_argument("--invalid-share", type=float, default=0.005)
    parser.add_argument("--batch-rows", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="rescreen-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"synthetic-{args.n}.parquet"
    if not data.exists():
        started = time.perf_counter()
        rx_synth.write(data, args.n, seed=0, invalid_share=args.invalid_share)
        print(f"generated {args.n} synthetic rows in {time.perf_counter() - started:.1f} s: {data}")
    print(f"CPU: {describe_cpu()}")
    print(f"input: {data} ({data.stat().st_size / 1e6:.1f} MB), KB {args.kb}, model {args.ddi_model or 'none'}")

    runs = {}
    cpu = TreeCPU()
    for engine in ("local", "spark"):
        before = load()
        cpu_before = cpu.sample()
        started = time.perf_counter()
        summary = rescreen.run(args.kb, [str(data)], work / f"out-{engine}", ddi_model=args.ddi_model,
                               engine=engine, overwrite=True, progress=False, batch_rows=args.batch_rows,
                               partitions=args.partitions if engine == "spark" else None,
                               spark_conf={"spark.ui.enabled": "false"})
        wall = time.perf_counter() - started
        summary["cpu_seconds"] = cpu.sample() - cpu_before
        runs[engine] = (summary, wall, before, load())
        print(f"{engine}: {summary['rows']} rows, screening {summary['screen_seconds']:.1f} s "
              f"({summary['rows_per_second']:.0f} rows/s), end to end {wall:.1f} s; load {before} -> {load()}")

    local, spark = read_sorted(work / "out-local" / "report"), read_sorted(work / "out-spark" / "report")
    rej_local, rej_spark = read_sorted(work / "out-local" / "rejects"), read_sorted(work / "out-spark" / "rejects")
    same_report = local.shape == spark.shape and local.equals(spark)
    same_rejects = rej_local.shape == rej_spark.shape and rej_local.equals(rej_spark)
    counts = ("rows", "screened", "changed", "newly_flagged", "rejected_rows")
    same_counts = all(runs["local"][0][k] == runs["spark"][0][k] for k in counts)
    print(f"\nsame results row for row: report {same_report} ({len(local)} rows), rejects {same_rejects} "
          f"({len(rej_local)} rows), counts {same_counts}")
    (ls, lw, _, _), (ss, sw, _, _) = runs["local"], runs["spark"]
    print("\n| engine | rows | screening s | rows/s (screening) | end-to-end s | rows/s (end to end) | CPU s (all processes) | load before -> after |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, (s, w, b, a) in (("single-process loop", runs["local"]), ("Spark local[2]", runs["spark"])):
        print(f"| {name} | {s['rows']:,} | {s['screen_seconds']:.1f} | {s['rows_per_second']:,.0f} | {w:.1f} | "
              f"{s['rows'] / w:,.0f} | {s['cpu_seconds']:.1f} | {b} -> {a} |")
    print(f"\nSpark / loop: {ss['rows_per_second'] / ls['rows_per_second']:.2f}x screening, {lw / sw:.2f}x end to end")
    job = ss.get("spark_job_seconds")
    if job:
        print(f"Spark: JVM + session start {ss['spark_start_seconds']:.1f} s, job {job:.1f} s "
              f"({ss['rows'] / job:,.0f} rows/s without the start; {ss['rows'] / job / ls['rows_per_second']:.2f}x the loop); "
              f"input split: {ss.get('split')}, {ss.get('partitions')} partitions; class-data archive: "
              f"{ss.get('spark_class_archive')} (JVM stop {ss.get('spark_stop_seconds', 0):.1f} s)")
    assert same_report and same_rejects and same_counts, "Spark and the loop disagree"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
