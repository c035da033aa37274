"""Terse constructors for hand-written histories in tests."""

import math
from typing import Any

from jepsen_lite.history import Operation, Outcome


def operation(
    id: int,
    f: str,
    input: Any = None,
    output: Any = None,
    outcome: Outcome = "ok",
    call_ns: int = 0,
    return_ns: float | None = None,
    key: str | None = "k",
    node: str = "n1",
) -> Operation:
    """An Operation; `info` ops return at +inf, as pair_ops makes them."""
    if outcome == "info" or return_ns is None:
        return_ns = math.inf
    return Operation(id, id, node, f, key, input, output, outcome, call_ns, return_ns)


def write(
    id: int,
    value: Any,
    call_ns: int,
    return_ns: int | None,
    outcome: Outcome = "ok",
    key: str = "k",
) -> Operation:
    return operation(id, "write", value, None, outcome, call_ns, return_ns, key)


def read(id: int, value: Any, call_ns: int, return_ns: int, key: str = "k") -> Operation:
    return operation(id, "read", None, value, "ok", call_ns, return_ns, key)


def ids(ops: Any) -> list[int]:
    return [op.id for op in ops]
