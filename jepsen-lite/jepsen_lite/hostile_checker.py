"""The `hostile` workload checker: hostile requests must not cost availability nor acknowledged writes.

Owns three verdicts over one history, and their combination:
- availability: after each hostile request, some normal write (`add`) called within `bound_s`
  of quiet time (time outside nemesis fault windows) is acknowledged; a window that the client
  phase ends before it closes is judged by the final probes (normal writes sent to every node
  after heal): at least one must be acknowledged. No final probe acknowledged is invalid too.
- the set checker over the normal writes (lost, unexpected, disagreement: see set_checker);
- a summary of the replies to hostile requests, with every 500 InternalError counted and
  shown: an InternalError answer to a committed write is an apply-path bug, reported but not by
  itself a reason for `invalid`.
Pure: it must not pair raw records (history.pair_ops does) nor talk to nodes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from jepsen_lite.history import Op, Operation
from jepsen_lite.set_checker import check_set
from jepsen_lite.stats import fault_intervals_ns

HOSTILE_PREFIX = "h-"
NORMAL_WRITE = "add"
PROBE_PREFIX = "final-probe"
AVAILABILITY_BOUND_S = 15.0
INFO_RETURN_BOUND_S = 5.0  # the client's request timeout: an `info` op was over by then
EXAMPLES_MAX = 10
SUSPECTS_MAX = 20
TEXT_CHARS_MAX = 120
_NS = 1_000_000_000


def is_hostile(op: Operation) -> bool:
    return op.f.startswith(HOSTILE_PREFIX)


def is_probe(op: Operation) -> bool:
    return str(op.process).startswith(PROBE_PREFIX)


def advance_quiet(start_ns: int, quiet_ns: int, faults: Sequence[tuple[int, int]]) -> int:
    """The time at which `quiet_ns` of time outside every fault interval has passed since `start_ns`."""
    t, remaining = start_ns, quiet_ns
    for lo, hi in sorted(faults):
        if hi <= t:
            continue
        if lo > t:
            if lo - t >= remaining:
                return t + remaining
            remaining -= lo - t
        t = max(t, hi)
    return t + remaining


def _anchor_ns(op: Operation, info_return_bound_ns: int) -> int:
    """When a hostile op was over: its return, or for an `info` op the client's timeout."""
    return int(op.return_ns) if math.isfinite(op.return_ns) else op.call_ns + info_return_bound_ns


def _client_phase_end_ns(ops: Sequence[Operation], nemesis: Sequence[Op]) -> int:
    heals = [op.time_ns for op in nemesis if op.f == "heal" and op.type == "invoke"]
    if heals:
        return min(heals)
    calls = [op.call_ns for op in ops if not is_probe(op) and not str(op.process).startswith(("final", "digest"))]
    return max(calls, default=0)


def _short(value: Any) -> Any:
    """A value cut down for a report: long texts end in '…(N chars)'."""
    if isinstance(value, str):
        return value if len(value) <= TEXT_CHARS_MAX else f"{value[:TEXT_CHARS_MAX]}…({len(value)} chars)"
    if isinstance(value, list):
        return [_short(v) for v in value[:5]] + (["…"] if len(value) > 5 else [])
    if isinstance(value, dict):
        return {_short(k): _short(v) for k, v in list(value.items())[:8]}
    return value


def describe(op: Operation, origin_ns: int) -> dict[str, Any]:
    """A hostile op for a report: what was sent, what came back, when (s since the first call)."""
    spec = op.input if isinstance(op.input, dict) else {}
    return {"id": op.id, "f": op.f, "key": op.key, "node": op.node, "outcome": op.outcome,
            "call_s": round((op.call_ns - origin_ns) / _NS, 3), "path": _short(spec.get("path")),
            "body": _short(spec.get("body", spec.get("raw"))), "replies": _short(op.output)}


def _window(h: Operation, writes: Sequence[Operation], faults: Sequence[tuple[int, int]], bound_ns: int,
            info_bound_ns: int) -> tuple[int, int, list[Operation]]:
    start = _anchor_ns(h, info_bound_ns)
    end = advance_quiet(start, bound_ns, faults)
    return start, end, [w for w in writes if start <= w.call_ns < end]


def check_availability(ops: Sequence[Operation], nemesis: Sequence[Op], bound_s: float = AVAILABILITY_BOUND_S,
                       info_return_bound_s: float = INFO_RETURN_BOUND_S) -> dict[str, Any]:
    """Valid iff every hostile op is followed, within `bound_s` of quiet time, by an acknowledged
    normal write (a window cut short by the end of the client phase, or holding no normal write
    at all: by an acknowledged final probe), and some final probe was acknowledged. `unknown`
    if such a window needs the probes and none was sent. `suspects`: the hostile ops around the
    last acknowledged write before the first window without one (the likely culprits, see
    `_suspects`)."""
    client_ops = [op for op in ops if not str(op.process).startswith(("final", "digest")) or is_probe(op)]
    origin_ns = min((op.call_ns for op in client_ops), default=0)
    faults = fault_intervals_ns(nemesis)
    bound_ns, info_bound_ns = int(bound_s * _NS), int(info_return_bound_s * _NS)
    run_end_ns = _client_phase_end_ns(ops, nemesis)
    writes = sorted((op for op in client_ops if op.f == NORMAL_WRITE and not is_probe(op)), key=lambda o: o.call_ns)
    probes = [op for op in client_ops if op.f == NORMAL_WRITE and is_probe(op)]
    probes_ok = any(op.outcome == "ok" for op in probes)
    hostile = sorted((op for op in client_ops if is_hostile(op)), key=lambda o: o.call_ns)
    unavailable: list[dict[str, Any]] = []
    first_bad_end_ns: int | None = None
    unjudged, waits_s = 0, []
    for h in hostile:
        start, end, in_window = _window(h, writes, faults, bound_ns, info_bound_ns)
        acked = [w for w in in_window if w.outcome == "ok"]
        if acked:
            waits_s.append((acked[0].call_ns - start) / _NS)
            continue
        truncated = end > run_end_ns or not in_window  # no write to judge by before the run ended
        if truncated and not probes:
            unjudged += 1
            continue
        if truncated and probes_ok:
            continue
        first_bad_end_ns = end if first_bad_end_ns is None else first_bad_end_ns
        unavailable.append({**describe(h, origin_ns), "window_s": [round((start - origin_ns) / _NS, 3),
                                                                    round((end - origin_ns) / _NS, 3)],
                            "judged_by": "final-probes" if truncated else "window",
                            "writes_in_window": dict(Counter(w.outcome for w in in_window))})
    result: dict[str, Any] = {
        "bound_s": bound_s,
        "hostile_ops": len(hostile),
        "unavailable": len(unavailable),
        "unavailable_examples": unavailable[:EXAMPLES_MAX],
        "unjudged": unjudged,
        "longest_wait_s": round(max(waits_s), 3) if waits_s else None,
        "final_probes": {"attempted": len(probes), "ok": sum(1 for op in probes if op.outcome == "ok")},
        "suspects": _suspects(hostile, writes, first_bad_end_ns, origin_ns, info_bound_ns),
    }
    broken = bool(unavailable) or (bool(probes) and not probes_ok)
    result["verdict"] = "invalid" if broken else "unknown" if unjudged else "valid"
    return result


def _suspicion(op: Operation) -> int:
    """0: a reply says a write was proposed and never confirmed (504, or a timeout or lost
    connection: what a wedged apply leaves); 1: an InternalError (Chroma failed inside apply);
    2: anything else."""
    replies = [r for r in (op.output if isinstance(op.output, list) else []) if isinstance(r, dict)]
    if any(r.get("status") == 504 or (r.get("status") is None and r.get("outcome") == "info") for r in replies):
        return 0
    return 1 if any(r.get("error") == "InternalError" for r in replies) else 2


def _suspects(hostile: Sequence[Operation], writes: Sequence[Operation], first_bad_end_ns: int | None,
              origin_ns: int, info_bound_ns: int) -> list[dict[str, Any]]:
    """Hostile ops in flight between the call of the last acknowledged write before the end of
    the first window without one and that end, but for those that certainly changed nothing
    (`fail`). Those with an unconfirmed write come first (a request that wedges the apply is
    proposed, committed and never answered, and so is every write after it), then
    InternalErrors, each in call order."""
    if first_bad_end_ns is None:
        return []
    acked_before = [w.call_ns for w in writes if w.outcome == "ok" and w.call_ns < first_bad_end_ns]
    since = max(acked_before, default=origin_ns)
    in_flight = [h for h in hostile if h.outcome != "fail" and h.call_ns < first_bad_end_ns
                 and _anchor_ns(h, info_bound_ns) >= since]
    ranked = sorted(in_flight, key=lambda h: (_suspicion(h), h.call_ns))
    return [describe(h, origin_ns) for h in ranked[:SUSPECTS_MAX]]


def summarize_replies(ops: Sequence[Operation]) -> dict[str, Any]:
    """Per hostile kind, the replies by status; every 500 InternalError counted, with examples."""
    by_f: dict[str, Counter[str]] = {}
    internal: list[tuple[Operation, dict[str, Any]]] = []
    for op in (o for o in ops if is_hostile(o)):
        counts = by_f.setdefault(op.f, Counter())
        for reply in op.output if isinstance(op.output, list) else []:
            status = reply.get("status")
            counts[str(status) if status is not None else str(reply.get("error"))] += 1
            if status == 500 and reply.get("error") == "InternalError":
                internal.append((op, reply))
    return {
        "by_f": {f: dict(sorted(c.items())) for f, c in sorted(by_f.items())},
        "internal_errors": len(internal),
        "internal_errors_by_f": dict(sorted(Counter(op.f for op, _ in internal).items())),
        "internal_error_examples": [{"id": op.id, "f": op.f, "key": op.key, "message": _short(reply.get("message")),
                                     "path": _short((op.input or {}).get("path"))}
                                    for op, reply in internal[:EXAMPLES_MAX]],
    }


def check_hostile(ops: Sequence[Operation], nemesis: Sequence[Op],
                  bound_s: float = AVAILABILITY_BOUND_S) -> dict[str, Any]:
    """Invalid if availability fails or the set checker finds a lost (or unexpected) write;
    unknown if either cannot decide and neither is invalid."""
    availability = check_availability(ops, nemesis, bound_s)
    normal = [op for op in ops if not is_hostile(op)]
    set_result = check_set(normal)
    verdicts = (availability["verdict"], set_result["verdict"])
    verdict = "invalid" if "invalid" in verdicts else "unknown" if "unknown" in verdicts else "valid"
    return {"verdict": verdict, "availability": availability, "set": set_result, "replies": summarize_replies(ops)}
