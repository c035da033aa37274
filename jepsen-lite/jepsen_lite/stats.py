"""Availability and latency per phase of a run, from a recorded history.

Owns: splitting client operations into phases by their call time (`fault`: some nemesis fault
in force; `quiet`: none; `final`: the reads after heal) and summarising each phase. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from jepsen_lite.history import Op, Operation

PHASES = ("quiet", "fault", "final")


def fault_intervals_ns(nemesis: Sequence[Op]) -> list[tuple[int, int]]:
    """[start, end) of each fault: from a `*-start` invocation to the next `*-stop` or `heal`
    completion. A fault still open at the end of the history lasts forever."""
    intervals: list[tuple[int, int]] = []
    open_ns: int | None = None
    for op in nemesis:
        if op.f.endswith("-start") and op.type == "invoke" and open_ns is None:
            open_ns = op.time_ns
        elif (op.f.endswith("-stop") or op.f == "heal") and op.type != "invoke" and open_ns is not None:
            intervals.append((open_ns, op.time_ns))
            open_ns = None
    if open_ns is not None:
        intervals.append((open_ns, 2 ** 63))
    return intervals


def phase_of(op: Operation, intervals: Sequence[tuple[int, int]]) -> str:
    if str(op.process).startswith(("final", "digest")):
        return "final"
    return "fault" if any(lo <= op.call_ns < hi for lo, hi in intervals) else "quiet"


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(sorted_values[rank], 3)


def _summary(ops: Sequence[Operation]) -> dict[str, Any]:
    counts = {outcome: sum(1 for op in ops if op.outcome == outcome) for outcome in ("ok", "fail", "info")}
    latencies_ms = sorted((op.return_ns - op.call_ns) / 1e6 for op in ops if op.outcome == "ok")
    return {
        "count": len(ops),
        **counts,
        "availability": round(counts["ok"] / len(ops), 4) if ops else None,
        "latency_ms_p50": _percentile(latencies_ms, 0.50),
        "latency_ms_p95": _percentile(latencies_ms, 0.95),
        "latency_ms_p99": _percentile(latencies_ms, 0.99),
        "latency_ms_max": _percentile(latencies_ms, 1.0),
    }


def phase_stats(ops: Sequence[Operation], nemesis: Sequence[Op]) -> dict[str, Any]:
    """Per phase, and per operation kind inside it: counts, availability, ok-latency percentiles."""
    intervals = fault_intervals_ns(nemesis)
    result: dict[str, Any] = {}
    for phase in PHASES:
        in_phase = [op for op in ops if phase_of(op, intervals) == phase]
        by_f = {f: _summary([op for op in in_phase if op.f == f]) for f in sorted({op.f for op in in_phase})}
        result[phase] = {**_summary(in_phase), "by_f": by_f}
    result["fault_intervals"] = len(intervals)
    result["fault_time_s"] = round(sum(max(0, min(hi, _last_ns(ops)) - lo) for lo, hi in intervals) / 1e9, 3) if ops else 0.0
    return result


def _last_ns(ops: Sequence[Operation]) -> int:
    return max(int(op.call_ns) for op in ops)
