"""The `elections` checker: no Raft election may happen outside nemesis fault windows.

Owns the verdict on the status samples a run took of every node (`GET /raftchroma/status`, about
every 0.5 s: `term`, `leader_changes`, `role`, `leader`, `pid`), against the fault windows of
the nemesis records. Pure: it must not poll nodes (status_monitor does) nor pair client ops.

Events, each known only to lie between two samples (from the earlier one's send to the later
one's receipt, so a gap in sampling, e.g. while a node is paused, widens it):
- a new term: a sample shows a term above every term any node showed before (each term in
  between counts once, the first node to show it dates it);
- a leader change: a node's `leader_changes` counter rose between two samples of the same
  process (the counter restarts with the process, so samples of different pids are not compared,
  and its first rise, from 0 to 1, is a process learning of the leader after it started).
Samples up to the moment every node has answered once are the baseline (the cluster's first
election happened there); nodes the membership nemesis added (`join-node`) are left out of it, or
the baseline would last until the last of them joined.

An event is excused if its interval meets an excused window: a fault from its `*-start`
invocation to its `*-stop` (or `heal`) completion, extended for `kill` and `restart` (and for
nodes that `heal` started) until the restarted node first answers its status (it takes seconds
to start, and only then can it hear the leader), then by `grace_s` (default 6 s: the election
timeout max of 4 s, in which a node that lost the leader during the fault may still call an
election, plus 2 s for the 0.5 s polling and a loaded machine). Anything else is an election
outside the fault windows: invalid. `unknown` when no node was sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jepsen_lite.history import Op

ELECTION_TIMEOUT_MAX_S = 4.0  # raftchroma's default [raft] election_timeout_max_s
GRACE_MARGIN_S = 2.0
GRACE_S = ELECTION_TIMEOUT_MAX_S + GRACE_MARGIN_S
RESTARTING_KINDS = frozenset({"kill", "restart"})
EXAMPLES_MAX = 20
_NS = 1_000_000_000
FOREVER_NS = 2 ** 63

Sample = dict[str, Any]  # {"node", "sent_ns", "time_ns", "pid", "term", "leader_changes", "role", "leader"}


def _first_answer_ns(samples: Sequence[Sample], nodes: Sequence[str], after_ns: int) -> int:
    """When every one of `nodes` has answered a status poll sent at or after `after_ns`."""
    latest = after_ns
    for node in nodes:
        answers = [s["time_ns"] for s in samples if s["node"] == node and s["sent_ns"] >= after_ns]
        if not answers:
            return FOREVER_NS
        latest = max(latest, min(answers))
    return latest


def _targets(start: Op) -> list[str]:
    value = start.value if isinstance(start.value, dict) else {}
    targets = value.get("targets")
    return [str(t) for t in targets] if isinstance(targets, list) else [n for n in str(start.node).split(",") if n]


def fault_windows_ns(nemesis: Sequence[Op], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Each fault: kind, start, end (the stop or heal completion), and `restarted_ns`, when
    every node it (or heal) started again had answered its status (the end when none)."""
    windows: list[dict[str, Any]] = []
    opened: Op | None = None
    for op in nemesis:
        if op.f.endswith("-start") and op.type == "invoke" and opened is None:
            opened = op
        elif (op.f.endswith("-stop") or op.f == "heal") and op.type != "invoke" and opened is not None:
            kind = opened.f.removesuffix("-start")
            started = _targets(opened) if kind in RESTARTING_KINDS else []
            if op.f == "heal" and isinstance(op.value, dict):
                started = sorted(set(started) | set(op.value.get("started") or []))
            restarted = _first_answer_ns(samples, started, op.time_ns) if started else op.time_ns
            windows.append({"kind": kind, "start_ns": opened.time_ns, "end_ns": op.time_ns,
                            "restarted_ns": max(op.time_ns, restarted)})
            opened = None
        elif op.f == "heal" and op.type != "invoke" and isinstance(op.value, dict) and op.value.get("started"):
            restarted = _first_answer_ns(samples, op.value["started"], op.time_ns)
            windows.append({"kind": "heal", "start_ns": op.time_ns, "end_ns": op.time_ns,
                            "restarted_ns": max(op.time_ns, restarted)})
    if opened is not None:
        windows.append({"kind": opened.f.removesuffix("-start"), "start_ns": opened.time_ns, "end_ns": FOREVER_NS,
                        "restarted_ns": FOREVER_NS})
    return windows


def _events(samples: Sequence[Sample], joined: frozenset[str] = frozenset()) -> tuple[list[dict[str, Any]], int | None]:
    """New terms and leader changes after the baseline, and the baseline's end (None without
    samples). Nodes in `joined` came during the run and do not extend the baseline."""
    ordered = sorted(samples, key=lambda s: (s["time_ns"], s["node"]))
    sampled = {s["node"] for s in ordered}
    nodes = (sampled - joined) or sampled
    first_seen: dict[str, int] = {}
    for s in ordered:
        first_seen.setdefault(s["node"], s["time_ns"])
    if not ordered:
        return [], None
    baseline_end_ns = max(first_seen[n] for n in nodes)
    events: list[dict[str, Any]] = []
    last: dict[str, Sample] = {}
    max_term = -1
    for s in ordered:
        prev = last.get(s["node"])
        term = int(s["term"])
        if term > max_term and s["time_ns"] > baseline_end_ns and max_term >= 0:
            lo = prev["sent_ns"] if prev is not None else s["sent_ns"]
            events += [{"kind": "new-term", "node": s["node"], "term": t, "lo_ns": lo, "hi_ns": s["time_ns"]}
                       for t in range(max_term + 1, term + 1)]
        max_term = max(max_term, term)
        if prev is not None and prev.get("pid") == s.get("pid") and s["time_ns"] > baseline_end_ns:
            # The first leader a process sees (its counter leaving 0) is the node learning of the
            # leader after it started, not an election.
            rise = int(s["leader_changes"]) - max(1, int(prev["leader_changes"]))
            if rise > 0:
                events.append({"kind": "leader-change", "node": s["node"], "term": term, "count": rise,
                               "leader": s.get("leader"), "lo_ns": prev["sent_ns"], "hi_ns": s["time_ns"]})
        last[s["node"]] = s
    return events, baseline_end_ns


def _excused(event: dict[str, Any], windows: Sequence[dict[str, Any]], grace_ns: int) -> bool:
    return any(event["lo_ns"] <= min(w["restarted_ns"] + grace_ns, FOREVER_NS) and event["hi_ns"] >= w["start_ns"]
               for w in windows)


def check_elections(samples: Sequence[Sample], nemesis: Sequence[Op], origin_ns: int | None = None,
                    grace_s: float = GRACE_S) -> dict[str, Any]:
    """Valid iff no new term and no leader change falls outside every excused window."""
    if not samples:
        return {"verdict": "unknown", "reason": "no status samples", "elections_outside_windows": None}
    origin = min(s["sent_ns"] for s in samples) if origin_ns is None else origin_ns
    windows = fault_windows_ns(nemesis, samples)
    joined = frozenset(str(op.node) for op in nemesis if op.f == "join-node")
    events, baseline_end_ns = _events(samples, joined)
    grace_ns = int(grace_s * _NS)
    outside = [e for e in events if not _excused(e, windows, grace_ns)]

    def seconds(ns: int) -> float | None:
        return None if ns >= FOREVER_NS else round((ns - origin) / _NS, 3)

    def shown(e: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in e.items() if not k.endswith("_ns")} | {"between_s": [seconds(e["lo_ns"]),
                                                                                        seconds(e["hi_ns"])]}
    terms = [e for e in events if e["kind"] == "new-term"]
    changes = [e for e in events if e["kind"] == "leader-change"]
    result = {
        "grace_s": grace_s,
        "samples": len(samples),
        "nodes_sampled": sorted({s["node"] for s in samples}),
        "baseline_end_s": seconds(baseline_end_ns) if baseline_end_ns is not None else None,
        "elections": len(terms),
        "leader_changes": sum(e["count"] for e in changes),
        "elections_outside_windows": sum(1 for e in outside if e["kind"] == "new-term"),
        "leader_changes_outside_windows": sum(e["count"] for e in outside if e["kind"] == "leader-change"),
        "outside": [shown(e) for e in outside[:EXAMPLES_MAX]],
        "excused_windows_s": [[w["kind"], seconds(w["start_ns"]), seconds(min(w["restarted_ns"] + grace_ns, FOREVER_NS))]
                              for w in windows],
    }
    result["verdict"] = "invalid" if outside else "valid"
    return result
