"""The history model: what a jepsen-lite run records, and how records pair into operations.

Owns the on-disk format (JSON lines, one `Op` per line) and the pairing of each invocation with
its completion. It must not interpret what an operation means: that belongs to the checkers.
"""

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

OpType = Literal["invoke", "ok", "fail", "info"]
Outcome = Literal["ok", "fail", "info"]
Process = int | str

OP_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
NEMESIS_PROCESSES: frozenset[Process] = frozenset({-1, "nemesis"})
_REQUIRED_FIELDS = ("process", "node", "f", "key", "value", "type", "time_ns")


@dataclass(frozen=True)
class Op:
    """One record: an invocation, or the completion (ok / fail / info) of one."""

    process: Process
    node: str
    f: str
    key: str | None
    value: Any
    type: OpType
    time_ns: int
    index: int
    error: str | None = None


@dataclass(frozen=True)
class Operation:
    """An invocation paired with its completion; `id` is the invocation's history index.

    `return_ns` is math.inf when the outcome is `info`: such an operation may take effect at any
    moment after its call, even after a timeout was recorded, or never.
    """

    id: int
    process: Process
    node: str
    f: str
    key: str | None
    input: Any
    output: Any
    outcome: Outcome
    call_ns: int
    return_ns: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe view: an infinite return time becomes None."""
        d = asdict(self)
        d["return_ns"] = None if math.isinf(self.return_ns) else int(self.return_ns)
        return d


def is_nemesis(op: Op) -> bool:
    """True for records written by the fault injector rather than by a client."""
    return op.process in NEMESIS_PROCESSES


def op_from_dict(record: dict[str, Any], default_index: int) -> Op:
    """Builds an Op from one decoded JSON line, validating the fields that checkers rely on."""
    missing = [name for name in _REQUIRED_FIELDS if name not in record]
    if missing:
        raise ValueError(f"history record {default_index} lacks fields {missing}")
    if record["type"] not in OP_TYPES:
        raise ValueError(f"history record {default_index} has unknown type {record['type']!r}")
    return Op(
        process=record["process"],
        node=str(record["node"]),
        f=str(record["f"]),
        key=record["key"],
        value=record["value"],
        type=cast(OpType, record["type"]),
        time_ns=int(record["time_ns"]),
        index=int(record.get("index", default_index)),
        error=record.get("error"),
    )


def op_to_dict(op: Op) -> dict[str, Any]:
    """The JSON line for one Op; `error` is left out when there is none."""
    d = asdict(op)
    if d["error"] is None:
        del d["error"]
    return d


def load_history(path: str | Path) -> list[Op]:
    """Reads a JSON-lines history; blank lines are skipped."""
    ops: list[Op] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                ops.append(op_from_dict(json.loads(line), default_index=len(ops)))
    return ops


def dump_history(ops: Iterable[Op], path: str | Path) -> None:
    """Writes ops as JSON lines, one per line, in the order given."""
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps(op_to_dict(op), sort_keys=True) + "\n")


def _complete(invoke: Op, completion: Op | None) -> Operation:
    """Pairs an invocation with its completion; no completion counts as `info`."""
    outcome: Outcome = "info" if completion is None else cast(Outcome, completion.type)
    return_ns: float = math.inf
    if completion is not None and outcome != "info":
        return_ns = completion.time_ns
    return Operation(
        id=invoke.index,
        process=invoke.process,
        node=invoke.node,
        f=invoke.f,
        key=invoke.key,
        input=invoke.value,
        output=None if completion is None else completion.value,
        outcome=outcome,
        call_ns=invoke.time_ns,
        return_ns=return_ns,
        error=None if completion is None else completion.error,
    )


def pair_ops(history: Sequence[Op]) -> list[Operation]:
    """Pairs client invocations with completions per process, in invocation order.

    Nemesis records are skipped (see `nemesis_ops`). A process has at most one operation in
    flight, as in Jepsen; a second invocation or an orphan completion is a malformed history.
    """
    pending: dict[Process, Op] = {}
    done: list[Operation] = []
    for op in history:
        if is_nemesis(op):
            continue
        if op.type == "invoke":
            if op.process in pending:
                raise ValueError(f"process {op.process!r} invoked again at index {op.index}")
            pending[op.process] = op
        elif op.process not in pending:
            raise ValueError(f"completion at index {op.index} has no invocation")
        else:
            done.append(_complete(pending.pop(op.process), op))
    done.extend(_complete(invoke, None) for invoke in pending.values())
    return sorted(done, key=lambda operation: operation.id)


def nemesis_ops(history: Sequence[Op]) -> list[Op]:
    """The fault injector's records, in history order, for reports and timelines."""
    return [op for op in history if is_nemesis(op)]
