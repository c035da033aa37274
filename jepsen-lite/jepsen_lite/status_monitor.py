"""The status monitor: every node's `GET /raftchroma/status`, polled through a whole run.

Owns one polling thread per node (so that a paused or slow node delays only its own samples)
and the samples file of a run (`raft-status.jsonl`, one JSON object per answered poll: node,
`sent_ns` and `time_ns` on the recorder's monotonic clock, pid, term, leader_changes, role,
leader). Unanswered polls (node down, paused, busy) are counted, not kept. With `follow` (the
cluster's current members) it starts polling a node added during the run and stops polling one
removed. It must not judge
(elections_checker does) nor send anything but status reads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SAMPLES_FILE = "raft-status.jsonl"
POLL_INTERVAL_S = 0.5
STATUS_TIMEOUT_S = 1.0
SAMPLE_FIELDS = ("pid", "term", "leader_changes", "role", "leader")

StatusFn = Callable[[str], "dict[str, Any] | None"]


class StatusMonitor:
    """`start()`, then `stop()`; `samples()` in time order. `status(node)` returns the node's
    status, or None when it did not answer (LocalCluster.status)."""

    def __init__(self, nodes: list[str], status: StatusFn, interval_s: float = POLL_INTERVAL_S,
                 follow: Callable[[], Sequence[str]] | None = None) -> None:
        self.nodes = list(nodes)
        self.status = status
        self.interval_s = interval_s
        self.follow = follow
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._samples: list[dict[str, Any]] = []
        self.unanswered = {n: 0 for n in self.nodes}
        self._threads: list[threading.Thread] = []
        self._retired: dict[str, threading.Event] = {}  # node -> set when it left the membership

    def start(self) -> None:
        for node in self.nodes:
            self._watch(node)
        if self.follow is not None:
            thread = threading.Thread(target=self._follow, name="status-follow", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _watch(self, node: str) -> None:
        self._retired[node] = threading.Event()
        self.unanswered.setdefault(node, 0)
        thread = threading.Thread(target=self._poll, args=(node,), name=f"status-{node}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _follow(self) -> None:
        """Every interval: poll the members not yet polled, stop polling those that left."""
        assert self.follow is not None
        while not self._stop.wait(self.interval_s):
            members = list(self.follow())
            for node in members:
                if node not in self._retired:
                    self.nodes.append(node)
                    self._watch(node)
            for node, retired in self._retired.items():
                if node not in members:
                    retired.set()

    def stop(self, timeout_s: float = STATUS_TIMEOUT_S * 3) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout_s)

    def _poll(self, node: str) -> None:
        retired = self._retired[node]
        while not self._stop.is_set() and not retired.is_set():
            sent_ns = time.monotonic_ns()
            status = self.status(node)
            received_ns = time.monotonic_ns()
            with self._lock:
                if status is None or not all(k in status for k in SAMPLE_FIELDS):
                    self.unanswered[node] += 1
                else:
                    self._samples.append({"node": node, "sent_ns": sent_ns, "time_ns": received_ns,
                                          **{k: status[k] for k in SAMPLE_FIELDS}})
            self._stop.wait(max(0.0, self.interval_s - (received_ns - sent_ns) / 1e9))

    def samples(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._samples, key=lambda s: s["time_ns"])

    def write(self, run_dir: Path) -> None:
        with open(run_dir / SAMPLES_FILE, "w", encoding="utf-8") as f:
            for sample in self.samples():
                f.write(json.dumps(sample, sort_keys=True) + "\n")


def load_samples(run_dir: Path) -> list[dict[str, Any]] | None:
    """A run's samples, or None for a run recorded before the monitor existed."""
    path = run_dir / SAMPLES_FILE
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
