"""The live history of a run: thread-safe appends of invocations and completions.

Owns: assigning each record its index and its monotonic time, under one lock, so that the
history order is the order in which the harness observed events. It must not interpret ops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jepsen_lite.history import Op, OpType, Process

NEMESIS = "nemesis"


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: list[Op] = []

    def record(self, process: Process, node: str, f: str, key: str | None, value: Any,
               type: OpType, error: str | None = None) -> Op:
        with self._lock:
            op = Op(process=process, node=node, f=f, key=key, value=value, type=type,
                    time_ns=time.monotonic_ns(), index=len(self._ops), error=error)
            self._ops.append(op)
        return op

    @contextmanager
    def nemesis_op(self, f: str, node: str, value: Any = None) -> Iterator[dict[str, Any]]:
        """Records a nemesis action's start and end (the end carries an error if it raised).
        The action may fill the yielded dict with what it observed (e.g. nodes it could not
        reach); those items are merged into the completion's value."""
        self.record(NEMESIS, node, f, None, value, "invoke")
        observed: dict[str, Any] = {}
        try:
            yield observed
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.record(NEMESIS, node, f, None, _merged(value, observed), "info", error=error)
            raise
        self.record(NEMESIS, node, f, None, _merged(value, observed), "ok")

    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)


def _merged(value: Any, observed: dict[str, Any]) -> Any:
    if not observed:
        return value
    return {**value, **observed} if isinstance(value, dict) else {"value": value, **observed}
