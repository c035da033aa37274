"""The nemesis: a seeded schedule of faults, applied to a LocalCluster and undone at heal.

Owns: the schedule (a pure function of seed, fault kinds, time limit and node ids, so that the
same seed replays the same faults), applying each fault through the cluster, and recording every
action in the history as a nemesis operation. It must not send signals itself (the cluster does)
nor look at client operations.

Faults: `kill` (SIGKILL one node, the leader, or a majority; restarted at the fault's end),
`pause` (SIGSTOP, SIGCONT at the end), `restart` (SIGTERM, started again at the end).
`partition` needs a fault-injecting transport inside raftchroma and is not available yet.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from jepsen_lite.cluster import LocalCluster
from jepsen_lite.recorder import Recorder

KINDS = ("kill", "pause", "restart")
UNAVAILABLE_KINDS = {"partition": "partition nemesis not available yet"}
FIRST_FAULT_S = (1.0, 3.0)
FAULT_DURATION_S = (2.0, 5.0)
QUIET_S = (2.0, 4.0)
TARGET_MODES = {"kill": ("one", "leader", "majority"), "pause": ("one", "leader"), "restart": ("one", "leader")}


@dataclass(frozen=True)
class Fault:
    """One fault: `targets` are concrete node ids, except that mode `leader` is resolved when
    the fault starts (`targets` then holds the seeded fallback when there is no leader)."""

    kind: str
    mode: str
    targets: tuple[str, ...]
    start_s: float
    end_s: float


def schedule(seed: int, kinds: Sequence[str], time_limit_s: float, node_ids: Sequence[str]) -> list[Fault]:
    """The faults of one run, relative to the start of the workload. Pure: same inputs, same list."""
    if not kinds:
        return []
    rng = random.Random(seed)
    nodes = sorted(node_ids)
    faults: list[Fault] = []
    t = rng.uniform(*FIRST_FAULT_S)
    while t < time_limit_s - 1.0:
        kind = rng.choice(sorted(kinds))
        mode = rng.choice(TARGET_MODES[kind])
        size = len(nodes) // 2 + 1 if mode == "majority" else 1
        targets = tuple(sorted(rng.sample(nodes, size)))
        end = min(t + rng.uniform(*FAULT_DURATION_S), time_limit_s)
        faults.append(Fault(kind, mode, targets, round(t, 3), round(end, 3)))
        t = end + rng.uniform(*QUIET_S)
    return faults


class Nemesis:
    """Runs a schedule in its own thread; `heal` undoes every fault still in force."""

    def __init__(self, cluster: LocalCluster, recorder: Recorder, faults: Sequence[Fault]) -> None:
        self.cluster = cluster
        self.recorder = recorder
        self.faults = list(faults)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, origin_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(origin_s,), name="nemesis", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _sleep_until(self, origin_s: float, at_s: float) -> bool:
        """False when stopped early."""
        return not self._stop.wait(max(0.0, origin_s + at_s - time.monotonic()))

    def _run(self, origin_s: float) -> None:
        try:
            for fault in self.faults:
                if not self._sleep_until(origin_s, fault.start_s):
                    return
                targets = self._resolve(fault)
                self._apply(fault.kind, "start", targets, fault.mode)
                self._sleep_until(origin_s, fault.end_s)
                self._apply(fault.kind, "stop", targets, fault.mode)
        except Exception as exc:  # the runner reports it as a harness error
            self.error = exc

    def _resolve(self, fault: Fault) -> tuple[str, ...]:
        if fault.mode == "leader":
            leader = self.cluster.leader()
            if leader is not None:
                return (leader,)
        return fault.targets

    def _apply(self, kind: str, phase: str, targets: tuple[str, ...], mode: str) -> None:
        value = {"targets": list(targets), "mode": mode}
        with self.recorder.nemesis_op(f"{kind}-{phase}", ",".join(targets), value):
            for node_id in targets:
                getattr(self.cluster, _ACTIONS[(kind, phase)])(node_id)

    def heal(self) -> None:
        """Resumes every paused node and starts every stopped one; recorded as `heal`."""
        self.stop()
        with self.recorder.nemesis_op("heal", "all", None):
            for node_id in self.cluster.nodes:
                self.cluster.resume(node_id)
                self.cluster.start_if_down(node_id)


# (kind, phase) -> the LocalCluster method applied to each target node.
_ACTIONS = {
    ("kill", "start"): "kill",
    ("kill", "stop"): "start_if_down",
    ("pause", "start"): "pause",
    ("pause", "stop"): "resume",
    ("restart", "start"): "stop",
    ("restart", "stop"): "start_if_down",
}
