"""Timing: one client doing a fixed number of operations, or many clients for a fixed duration.

Owns: the clock (time.perf_counter), latencies, error counts and their summary. Must not: know
what an operation does or which server it talks to; every wait here is bounded.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

import numpy as np

BARRIER_TIMEOUT_S = 120.0   # every client has made its warm-up requests by then
JOIN_GRACE_S = 60.0         # a request still running at the deadline gets this long to finish
WARMUP_OPS = 2              # per client, not measured
ERROR_SAMPLES = 5           # distinct error texts kept per measurement

Op = Callable[[int], Any]


@dataclasses.dataclass
class Sample:
    """`ops` operations carrying `records` records took `elapsed_s`; one latency per completed op."""

    ops: int
    records: int
    elapsed_s: float
    latencies_ms: list[float]
    errors: int = 0
    error_samples: list[str] = dataclasses.field(default_factory=list)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def percentile_ms(self, q: float) -> float | None:
        return round(float(np.percentile(self.latencies_ms, q)), 2) if self.latencies_ms else None

    def summary(self) -> dict[str, Any]:
        return {"ops": self.ops, "records": self.records, "elapsed_s": round(self.elapsed_s, 3),
                "ops_per_s": round(self.ops_per_s, 2), "records_per_s": round(self.records_per_s, 2),
                "latency_ms_p50": self.percentile_ms(50), "latency_ms_p99": self.percentile_ms(99),
                "latency_ms_max": round(max(self.latencies_ms), 2) if self.latencies_ms else None,
                "errors": self.errors, "error_samples": self.error_samples}


def sequential(count: int, op: Op, records_per_op: Callable[[int], int] = lambda i: 1) -> Sample:
    """`op(i)` for i in range(count), one at a time, by one client; an error ends the run."""
    latencies_ms = []
    records = 0
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        op(i)
        latencies_ms.append((time.perf_counter() - t0) * 1000)
        records += records_per_op(i)
    return Sample(count, records, time.perf_counter() - start, latencies_ms)


@dataclasses.dataclass
class _Client:
    op: Op
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    last_done: float = 0.0


def concurrent(ops: list[Op], duration_s: float) -> Sample:
    """One thread per op, each calling `op(i)` for i = 0, 1, ... for `duration_s`, after a warm-up
    of WARMUP_OPS calls with negative i.

    All clients start measuring together (a barrier); an op started before the deadline is
    counted once it returns, and the elapsed time runs to the last such return. An op that
    raises counts as an error, not as an operation; the client goes on."""
    clients = [_Client(op) for op in ops]
    started = [0.0]
    barrier = threading.Barrier(len(clients) + 1, action=lambda: started.__setitem__(0, time.perf_counter()),
                                timeout=BARRIER_TIMEOUT_S)
    threads = [threading.Thread(target=_run_client, args=(c, barrier, started, duration_s), daemon=True)
               for c in clients]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join(timeout=duration_s + JOIN_GRACE_S)
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"a client was still in a request {JOIN_GRACE_S} s after the deadline")
    return _merge(clients, started[0])


def _run_client(client: _Client, barrier: threading.Barrier, started: list[float], duration_s: float) -> None:
    try:
        for i in range(WARMUP_OPS):
            client.op(-1 - i)
    except BaseException:
        barrier.abort()
        raise
    barrier.wait()
    deadline = started[0] + duration_s
    i = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            client.op(i)
        except Exception as exc:  # a failed request is a measured outcome, not a crash of the run
            client.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        else:
            client.latencies_ms.append((time.perf_counter() - t0) * 1000)
        client.last_done = time.perf_counter()
        i += 1


def _merge(clients: list[_Client], started: float) -> Sample:
    latencies = [ms for c in clients for ms in c.latencies_ms]
    errors = [e for c in clients for e in c.errors]
    ended = max((c.last_done for c in clients), default=started)
    return Sample(len(latencies), len(latencies), max(ended - started, 1e-9), latencies, len(errors),
                  list(dict.fromkeys(errors))[:ERROR_SAMPLES])
