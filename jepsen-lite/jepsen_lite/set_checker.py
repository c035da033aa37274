"""The `set` workload checker: adds of unique ids, then one final read per node.

Owns the verdict on lost, unexpected and recovered elements and on nodes that disagree. It must
not pair raw records (history.pair_ops does) nor talk to nodes.
"""

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from jepsen_lite._compare import majority, sorted_ids
from jepsen_lite.history import Operation


def final_reads(history: Sequence[Operation]) -> dict[str, frozenset[Hashable]]:
    """The last successful `final-read` of each node, as a set of ids."""
    reads: dict[str, frozenset[Hashable]] = {}
    for op in history:
        if op.f == "final-read" and op.outcome == "ok":
            reads[op.node] = frozenset(op.output or ())
    return reads


def _adds_by_outcome(history: Sequence[Operation]) -> dict[str, set[Hashable]]:
    """Added ids grouped by outcome; an id retried with several outcomes is in several groups."""
    groups: dict[str, set[Hashable]] = {"ok": set(), "fail": set(), "info": set()}
    for op in history:
        if op.f == "add":
            groups[op.outcome].add(op.input)
    return groups


def _disagreement(reads: Mapping[str, frozenset[Hashable]]) -> dict[str, dict[str, list[Any]]]:
    """Per node whose read differs from the majority read: what it misses and what it adds."""
    reference = majority(reads)
    return {
        node: {
            "missing": sorted_ids(reference - read),
            "extra": sorted_ids(read - reference),
        }
        for node, read in sorted(reads.items())
        if read != reference
    }


def check_set(history: Sequence[Operation]) -> dict[str, Any]:
    """Valid iff no acknowledged add is missing from any final read, nothing unexpected (or
    definitely failed) is present, and all final reads agree. `unknown` with no final read.

    `lost`: acknowledged, absent from at least one final read. `unexpected`: present, never
    attempted. `failed_but_present`: only ever failed, yet present (a `fail` must be definite).
    `recovered`: never acknowledged, at least one attempt `info`, present in some final read.
    `never_read`: attempted ids present in no final read.
    """
    adds = _adds_by_outcome(history)
    reads = final_reads(history)
    attempted = adds["ok"] | adds["fail"] | adds["info"]
    present_all = frozenset.intersection(*reads.values()) if reads else frozenset()
    present_any = frozenset().union(*reads.values())
    report: dict[str, Any] = {
        "attempted": len(attempted),
        "acknowledged": len(adds["ok"]),
        "never_read": len(attempted - present_any),
        "lost": sorted_ids(adds["ok"] - present_all) if reads else [],
        "unexpected": sorted_ids(present_any - attempted),
        "failed_but_present": sorted_ids((adds["fail"] - adds["ok"] - adds["info"]) & present_any),
        "recovered": sorted_ids((adds["info"] - adds["ok"]) & present_any),
        "nodes_read": sorted(reads),
        "disagreement": _disagreement(reads) if reads else {},
    }
    report["verdict"] = _verdict(report)
    return report


def _verdict(report: Mapping[str, Any]) -> str:
    if not report["nodes_read"]:
        return "unknown"
    broken = ("lost", "unexpected", "failed_but_present", "disagreement")
    return "invalid" if any(report[name] for name in broken) else "valid"
