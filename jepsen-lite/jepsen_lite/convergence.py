"""The convergence check: after the cluster heals, every node must hold the same data.

Owns the comparison of per-node {collection: digest} maps. It must not compute digests or talk
to nodes; the harness collects the maps and hands them in.
"""

from collections.abc import Mapping
from typing import Any

from jepsen_lite._compare import majority


def _differing_collections(
    digests: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str | None]]:
    """Collections whose digest is not the same on every node; None marks a missing one."""
    names = sorted({name for per_node in digests.values() for name in per_node})
    differing: dict[str, dict[str, str | None]] = {}
    for name in names:
        seen = {node: digests[node].get(name) for node in sorted(digests)}
        if len(set(seen.values())) > 1:
            differing[name] = seen
    return differing


def check_convergence(digests: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """Valid iff every node reports an identical map; `unknown` when no node reported.

    `differing_nodes` lists the nodes whose map differs from the majority's.
    """
    nodes = sorted(digests)
    if not nodes:
        return {
            "verdict": "unknown",
            "nodes": [],
            "differing_nodes": [],
            "differing_collections": {},
        }
    frozen = {node: tuple(sorted(digests[node].items())) for node in nodes}
    reference = majority(frozen)
    differing_nodes = [node for node in nodes if frozen[node] != reference]
    return {
        "verdict": "invalid" if differing_nodes else "valid",
        "nodes": nodes,
        "differing_nodes": differing_nodes,
        "differing_collections": _differing_collections(digests),
    }
