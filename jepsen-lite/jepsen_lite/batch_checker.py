"""The `batch` workload checker: every read shows whole batches only.

Owns the verdict on what reads of multi-record batches showed, and `BatchModel`. Pure: it must
not pair raw records (history.pair_ops does) nor talk to nodes; the search is
linearizability.check.

Operations (see workloads.BatchWorkload; inputs carry "batch", "n" and, for writes, "version"):
`add-batch`, `upsert-batch` (all n records of batch k, one fresh version), `delete-batch` (by
ids or by `where {"batch": k}`), `refused-batch` (a fresh batch the server must refuse with a
400: one record, or all, of the wrong dimension), and the reads `read-batch` (`get` with where
{"batch": k}), `read-all` (`get` of the whole collection, also the final read of every node)
and `count`, each at the consistency named in its input. Reads record row groups (batch.py).

Why "torn" is decidable with concurrent writers: each write touches exactly one batch, always
all of its n records, with a version no other write uses. So whatever the interleaving, a batch
is at any moment either absent or n records carrying one version, and any read, stale or not,
must show each batch that way. Checked on every ok read:
- `torn`: a batch shown with some but not all of its n rows, rows of several versions, rows
  whose metadata names another batch, or a row returned twice;
- `refused_visible`: a row of a refused batch;
- `failed_write_visible`: a version whose write certainly failed (`fail`);
- `future_version`: a version whose write was called after the read returned;
- `unknown_version`, `foreign_rows`: a version no write sent, an id outside the scheme;
- `impossible_count`: a count that no set of whole batches makes (each batch that some
  non-failed write had been called for before the count returned counts n or 0; sizes are
  multiples of 10, so a count showing part of a batch is found unless the part is a multiple
  of 10 and happens to fit);
- `refused_accepted`: a refused batch the server acknowledged.
And for linearizable reads only (`read-batch`, `read-all` projected onto each batch, and the
final reads): per batch, linearizability against BatchModel, which also finds acknowledged
writes lost or rolled back. `unknown` when no final read answered or the search ran out of time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jepsen_lite.batch import groups_by_batch
from jepsen_lite.history import Operation
from jepsen_lite.linearizability import UNKNOWN, ModelInput, check

WRITE_FS = frozenset({"add-batch", "upsert-batch"})
READ_FS = frozenset({"read-batch", "read-all"})
ANOMALY_KINDS = ("torn", "refused_visible", "failed_write_visible", "future_version", "unknown_version",
                 "foreign_rows", "impossible_count", "refused_accepted")
EXAMPLES_MAX = 10
FINAL_PREFIX = "final"
LINEARIZABLE = "linearizable"


@dataclass
class Batches:
    """What the history says about each batch: its size, whether it was a refused one, and
    which write sent each version."""

    sizes: dict[int, int] = field(default_factory=dict)
    refused: set[int] = field(default_factory=set)
    version_writes: dict[int, Operation] = field(default_factory=dict)

    @classmethod
    def of(cls, ops: Sequence[Operation]) -> Batches:
        batches = cls()
        for op in ops:
            if op.f in WRITE_FS or op.f in ("delete-batch", "refused-batch"):
                batches.sizes[int(op.input["batch"])] = int(op.input["n"])
            if op.f == "refused-batch":
                batches.refused.add(int(op.input["batch"]))
            if op.f in WRITE_FS or op.f == "refused-batch":
                batches.version_writes[int(op.input["version"])] = op
        return batches


def _is_final(op: Operation) -> bool:
    return str(op.process).startswith(FINAL_PREFIX)


def _anomaly(kind: str, op: Operation, **details: Any) -> dict[str, Any]:
    return {"kind": kind, "op": op.id, "f": op.f, "node": op.node, "process": op.process,
            "consistency": (op.input or {}).get("consistency"), **details}


# ------------------------------------------------------------ whole batches


def _whole_version(batch: int, groups: Sequence[list[Any]], n: int | None) -> int | None:
    """The version if `groups` show batch `batch` whole (all n rows, one version, its own
    metadata), else None."""
    if n is None or len(groups) != 1:
        return None
    _, meta_batch, version, ranges = groups[0]
    whole = meta_batch == batch and ranges == [[0, n - 1]] and isinstance(version, int)
    return version if whole else None


def _version_anomaly(op: Operation, batch: int, version: int, batches: Batches) -> dict[str, Any] | None:
    write = batches.version_writes.get(version)
    if write is None or int(write.input["batch"]) != batch:
        return _anomaly("unknown_version", op, batch=batch, version=version)
    if write.f == "refused-batch":
        return None  # reported as refused_visible
    if write.outcome == "fail":
        return _anomaly("failed_write_visible", op, batch=batch, version=version, write=write.id,
                        write_error=write.error)
    if write.call_ns > op.return_ns:
        return _anomaly("future_version", op, batch=batch, version=version, write=write.id)
    return None


def _describe_groups(groups: Sequence[list[Any]]) -> list[dict[str, Any]]:
    return [{"metadata_batch": g[1], "version": g[2], "rows": sum(hi - lo + 1 for lo, hi in g[3]),
             "index_ranges": g[3][:8]} for g in groups]


def read_state(op: Operation, batches: Batches, anomalies: list[dict[str, Any]]) -> dict[int, int]:
    """Checks one ok read of rows; appends its anomalies; returns {batch: version} of the
    batches it showed whole (absent batches are absent from the map)."""
    encoded = op.output or {}
    for record_id, metadata in encoded.get("other", []):
        anomalies.append(_anomaly("foreign_rows", op, id=record_id, metadata=metadata))
    for record_id, _ in encoded.get("duplicates", []):
        anomalies.append(_anomaly("torn", op, reason="a row returned twice", id=record_id))
    state: dict[int, int] = {}
    for batch, groups in sorted(groups_by_batch(encoded).items()):
        if batch in batches.refused:
            anomalies.append(_anomaly("refused_visible", op, batch=batch, groups=_describe_groups(groups)))
            continue
        n = batches.sizes.get(batch)
        version = _whole_version(batch, groups, n)
        if version is None:
            anomalies.append(_anomaly("torn", op, batch=batch, n=n, groups=_describe_groups(groups)))
            continue
        problem = _version_anomaly(op, batch, version, batches)
        if problem is not None:
            anomalies.append(problem)
        state[batch] = version
    if op.f == "read-batch":
        asked = int(op.input["batch"])
        others = sorted(set(groups_by_batch(encoded)) - {asked})
        if others:
            anomalies.append(_anomaly("torn", op, reason="rows of other batches matched where batch", batch=asked,
                                      other_batches=others[:EXAMPLES_MAX]))
    return state


# ------------------------------------------------------------------ counts


def check_counts(ops: Sequence[Operation], batches: Batches) -> list[dict[str, Any]]:
    """Each ok count must be a sum of whole batches: those some non-failed write had been called
    for before the count returned (a subset-sum over their sizes, as a bitset)."""
    writes = sorted((op for op in ops if op.f in WRITE_FS and op.outcome != "fail"), key=lambda o: o.call_ns)
    counts = sorted((op for op in ops if op.f == "count" and op.outcome == "ok"), key=lambda o: o.return_ns)
    anomalies, reachable, included, w = [], 1, set(), 0
    for op in counts:
        while w < len(writes) and writes[w].call_ns <= op.return_ns:
            batch = int(writes[w].input["batch"])
            if batch not in included:
                included.add(batch)
                reachable |= reachable << batches.sizes[batch]
            w += 1
        count = op.output
        if not isinstance(count, int) or count < 0 or not (reachable >> count) & 1:
            anomalies.append(_anomaly("impossible_count", op, count=count, batches_possible=len(included)))
    return anomalies


# ------------------------------------------------------------ linearizable


class BatchModel:
    """One register per batch: absent (None) or the version of its rows. `add-batch` inserts
    only if absent (Chroma's add leaves existing ids as they are), `upsert-batch` sets, `delete-batch`
    clears, `read` observes."""

    def init(self) -> int | None:
        return None

    def step(self, state: Any, input: ModelInput, output: Any) -> tuple[bool, Any]:
        if input.f == "add-batch":
            return True, input.value if state is None else state
        if input.f == "upsert-batch":
            return True, input.value
        if input.f == "delete-batch":
            return True, None
        if input.f == "read":
            return output is UNKNOWN or output == state, state
        raise ValueError(f"batch model has no operation {input.f!r}")

    def partition(self, history: Sequence[Operation]) -> dict[Any, list[Operation]]:
        """Per batch: the ops `linearizable_ops` derived, already keyed `b{k}`."""
        parts: dict[Any, list[Operation]] = {}
        for op in history:
            parts.setdefault(op.key, []).append(op)
        return parts


def _as(op: Operation, f: str, key: str, input: Any, output: Any) -> Operation:
    return Operation(op.id, op.process, op.node, f, key, input, output, op.outcome, op.call_ns, op.return_ns, op.error)


def linearizable_ops(ops: Sequence[Operation], reads: Mapping[int, dict[int, int]],
                     batches: Batches) -> list[Operation]:
    """The history BatchModel judges, keyed by batch: the writes (failed ones dropped; an info
    add / upsert whose version no read shows dropped too, as the register model does: nothing
    could observe it) and, per linearizable read that showed only whole batches (`reads`: op id
    -> {batch: version}), one `read` of each batch it covers (a `read-all` covers every batch
    that has writes), whose output is the version or None (absent)."""
    observed: dict[int, set[int]] = {}
    for state in reads.values():
        for batch, version in state.items():
            observed.setdefault(batch, set()).add(version)
    derived: list[Operation] = []
    written: set[int] = set()
    for op in ops:
        if (op.f not in WRITE_FS and op.f != "delete-batch") or op.outcome == "fail":
            continue
        batch, version = int(op.input["batch"]), op.input.get("version")
        if op.outcome == "info" and op.f in WRITE_FS and version not in observed.get(batch, set()):
            continue
        written.add(batch)
        derived.append(_as(op, op.f, f"b{batch}", version, None))
    by_id = {op.id: op for op in ops}
    for op_id, state in reads.items():
        op = by_id[op_id]
        covered = [int(op.input["batch"])] if op.f == "read-batch" else sorted(written)
        derived += [_as(op, "read", f"b{batch}", None, state.get(batch)) for batch in covered if batch in written]
    return derived


# ------------------------------------------------------------------- check


def _is_linearizable_read(op: Operation) -> bool:
    return _is_final(op) or (op.input or {}).get("consistency") == LINEARIZABLE


def check_batches(ops: Sequence[Operation], budget_s: float = 60.0) -> dict[str, Any]:
    """Invalid on any anomaly (see the module docstring) or a linearizable read that no order of
    the writes explains; unknown with no final read or when the search runs out of time."""
    batches = Batches.of(ops)
    anomalies: list[dict[str, Any]] = []
    lin_reads: dict[int, dict[int, int]] = {}
    read_counts: dict[str, int] = {}
    for op in ops:
        if op.f == "refused-batch" and op.outcome == "ok":
            anomalies.append(_anomaly("refused_accepted", op, batch=op.input["batch"], how=op.input.get("how")))
        if op.outcome != "ok" or op.f not in READ_FS and op.f != "count":
            continue
        label = f"{op.f} {'final' if _is_final(op) else (op.input or {}).get('consistency')}"
        read_counts[label] = read_counts.get(label, 0) + 1
        if op.f in READ_FS:
            before = len(anomalies)
            state = read_state(op, batches, anomalies)
            if _is_linearizable_read(op) and len(anomalies) == before:
                lin_reads[op.id] = state
    anomalies += check_counts(ops, batches)
    lin = check(linearizable_ops(ops, lin_reads, batches), BatchModel(), budget_s).to_dict()
    finals = sorted({op.node for op in ops if _is_final(op) and op.f == "read-all" and op.outcome == "ok"})
    result: dict[str, Any] = {
        "batches": len(batches.sizes) - len(batches.refused),
        "refused_batches": len(batches.refused),
        "writes": _write_counts(ops),
        "reads_checked": dict(sorted(read_counts.items())),
        "final_reads": finals,
        **{kind: [a for a in anomalies if a["kind"] == kind][:EXAMPLES_MAX] for kind in ANOMALY_KINDS},
        "anomaly_counts": {kind: sum(1 for a in anomalies if a["kind"] == kind) for kind in ANOMALY_KINDS},
        "linearizable": lin,
    }
    result["verdict"] = "invalid" if anomalies or lin["verdict"] == "invalid" else \
        "unknown" if not finals or lin["verdict"] == "unknown" else "valid"
    return result


def _write_counts(ops: Sequence[Operation]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for op in ops:
        if op.f in WRITE_FS or op.f in ("delete-batch", "refused-batch"):
            per_f = counts.setdefault(op.f, {"ok": 0, "fail": 0, "info": 0})
            per_f[op.outcome] += 1
    return dict(sorted(counts.items()))

