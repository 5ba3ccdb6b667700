"""Red-flag matcher speed: per-call latency on short lay messages, side by side with a naive layout.

    python -m benchmarks.redflag_bench [--rounds 20]

Runs ``RedFlagMatcher.match`` over the hand-written test phrases (short chat messages) and over
long messages (the phrases concatenated in groups of 10, ~120 words), reporting mean / p50 / p99
microseconds per call.  Side by side it times the same rules compiled into ONE spaCy Matcher with
the same gapped patterns (the straightforward layout) and prints the ratio.  Target: < 1 ms per
short text on this machine.  Timing only; no asserts (see DEVELOPERS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from spacy.matcher import Matcher

from evaluation.redflag_eval import load_phrases
from triage.redflags import MAX_GAP, RedFlagMatcher


class _SingleMatcherLayout(RedFlagMatcher):
    """Same table, same context logic, but one big Matcher run over every text."""

    def _compile(self) -> None:
        super()._compile()
        self.single = Matcher(self.nlp.vocab)
        gap = {"IS_PUNCT": False, "OP": "{0,%d}" % MAX_GAP}
        for rule in self.rules:
            for kind, groups in (("g", rule.groups), ("x", rule.excludes)):
                for gi, terms in enumerate(groups):
                    pats = []
                    for words in terms:
                        pat: list[dict] = []
                        for wi, word in enumerate(words):
                            if wi:
                                pat.append(dict(gap))
                            pat.append({"LEMMA": word})
                        pats.append(pat)
                    self.single.add(f"{rule.index}|{kind}|{gi}", pats)

    def _raw_matches(self, doc, positions):
        return list(self.single(doc))


def _time(fn, texts: list[str], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        for t in texts:
            t0 = time.perf_counter()
            fn(t)
            out.append((time.perf_counter() - t0) * 1e6)
    return out


def _summary(samples: list[float]) -> tuple[float, float, float]:
    samples = sorted(samples)
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]  # noqa: E731
    return statistics.fmean(samples), p(0.50), p(0.99)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    short = [p.text for p in load_phrases()]
    long = [" ".join(short[i : i + 10]) for i in range(0, len(short), 10)]
    fast = RedFlagMatcher()
    naive = _SingleMatcherLayout()
    for t in short + long:  # warm caches; both layouts must agree
        a = [(h.rule_id, h.matched) for h in fast.match(t)]
        b = [(h.rule_id, h.matched) for h in naive.match(t)]
        assert a == b, (t, a, b)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"red-flag matcher, table {fast.version}, {len(fast.rules)} rules; 1-min load average {load:.1f} on {os.cpu_count()} CPUs")
    print()
    print("| texts | layout | mean us | p50 us | p99 us |")
    print("|---|---|---:|---:|---:|")
    results = {}
    short_name, long_name = f"short ({len(short)} phrases)", f"long ({len(long)} x ~10 phrases)"
    for name, texts in ((short_name, short), (long_name, long)):
        for layout, m in (("per-first-word matchers (shipped)", fast), ("one big Matcher", naive)):
            mean, p50, p99 = _summary(_time(m.match, texts, args.rounds))
            results[(name, layout)] = mean
            print(f"| {name} | {layout} | {mean:.0f} | {p50:.0f} | {p99:.0f} |")
    print()
    for name in (short_name, long_name):
        ratio = results[(name, "one big Matcher")] / results[(name, "per-first-word matchers (shipped)")]
        print(f"{name}: shipped layout is {ratio:.1f}x faster than one big Matcher")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
