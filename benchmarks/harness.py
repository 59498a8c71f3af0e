"""What every workload of ``python -m benchmarks`` shares: sides, results, the table, the pins.

A workload is a module in this package with a ``NAME`` and a ``run(options)`` that
returns :class:`Result` rows, one per side (:data:`PLAIN_DOT`, :data:`APP`, or a
labelled variant such as ``"offline_access, DPoP"``). Sides of one workload are
measured in the same run on the same database, in alternating rounds, so neither
profits from a warmer cache. The harness prints them side by side and, in quick
mode, fails when a pinned query count (:mod:`benchmarks.pins`) regresses.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

PLAIN_DOT = "plain DOT"
APP = "offline_access"


@dataclass(frozen=True)
class Options:
    quick: bool = False
    #: Workload-specific sizes may be scaled by this (1.0 = the documented size).
    scale: float = 1.0

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else max(1, int(full * self.scale))


@dataclass
class Result:
    workload: str
    side: str
    #: Seconds per timed unit (one request, one batch, one whole run).
    seconds: list[float]
    #: Operations each timed unit stands for (a revocation of 100,000 families: 100,000).
    operations: int = 1
    #: Queries per timed unit, or None where they cannot be counted (other processes).
    queries: int | None = None
    #: Free text printed under the table (sizes, what a side does).
    note: str = ""
    #: The side this row is compared with (default: the workload's plain DOT row).
    baseline: str | None = None
    extra: dict[str, float] = field(default_factory=dict)
    #: Wall-clock seconds of the timed units together, when they overlap (concurrent clients):
    #: ops/s is then the throughput, operations over this, not over the units' summed time.
    wall_seconds: float | None = None
    #: A side of the same workload row whose queries this row may not exceed: quick mode
    #: fails when it does, whatever the pins say (the app against plain DOT, issue 12).
    max_queries_of: str | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p95_ms(self) -> float:
        if len(self.seconds) < 2:
            return self.median_ms
        return statistics.quantiles(self.seconds, n=20, method="inclusive")[-1] * 1000

    @property
    def p99_ms(self) -> float:
        if len(self.seconds) < 2:
            return self.median_ms
        return statistics.quantiles(self.seconds, n=100, method="inclusive")[-1] * 1000

    @property
    def ops_per_second(self) -> float:
        total = self.wall_seconds if self.wall_seconds is not None else sum(self.seconds)
        return self.operations * len(self.seconds) / total if total else float("inf")


def table(results: list[Result]) -> str:
    """A Markdown table: per workload and side, ops/s, median, p95, ratio to its baseline, queries."""
    lines = [
        "| workload | side | ops/s | median ms | p95 ms | ratio (median) | queries/unit |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    by_key = {(result.workload, result.side): result for result in results}
    for result in results:
        baseline_side = result.baseline or PLAIN_DOT
        baseline = by_key.get((result.workload, baseline_side))
        ratio = (
            f"{result.median_ms / baseline.median_ms:.2f}x vs {baseline_side}"
            if baseline is not None and baseline is not result
            else ""
        )
        queries = "" if result.queries is None else str(result.queries)
        lines.append(
            f"| {result.workload} | {result.side} | {result.ops_per_second:,.1f} | {result.median_ms:.2f} "
            f"| {result.p95_ms:.2f} | {ratio} | {queries} |"
        )
    notes = [f"- {result.workload}, {result.side}: {result.note}" for result in results if result.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def pins_of(pins: dict[tuple[str, str], int], *names: str) -> dict[tuple[str, str], int]:
    """The pins of the workloads ``names`` (module ``NAME``s: a row's name before its colon)."""
    return {key: value for key, value in pins.items() if key[0].split(":")[0] in names}


def regressions(results: list[Result], pins: dict[tuple[str, str], int]) -> list[str]:
    """Rows over their pin or over their ``max_queries_of`` side's queries; pinned rows that did not run."""
    found = {(result.workload, result.side): result for result in results}
    problems = []
    for result in results:
        if result.max_queries_of is None or result.queries is None:
            continue
        other = found.get((result.workload, result.max_queries_of))
        if other is None or other.queries is None:
            problems.append(
                f"{result.workload} / {result.side}: no {result.max_queries_of} row to compare with"
            )
        elif result.queries > other.queries:
            problems.append(
                f"{result.workload} / {result.side}: {result.queries} queries, more than "
                f"{result.max_queries_of} ({other.queries})"
            )
    for key, pinned in pins.items():
        result = found.get(key)
        if result is None:
            problems.append(f"{key[0]} / {key[1]}: pinned at {pinned} queries but not measured")
        elif result.queries is not None and result.queries > pinned:
            problems.append(f"{key[0]} / {key[1]}: {result.queries} queries, pinned at {pinned}")
    return problems
