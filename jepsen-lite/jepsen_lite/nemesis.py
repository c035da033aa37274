"""The nemesis: a seeded schedule of faults, applied to a LocalCluster and undone at heal.

Owns: the schedule (a pure function of seed, fault kinds, time limit and node ids, so that the
same seed replays the same faults), the partition shapes (pure), applying each fault through the
cluster, and recording every action in the history as a nemesis operation. It must not send
signals or requests itself (the cluster does) nor look at client operations.

Faults: `kill` (SIGKILL one node, the leader, or a majority; restarted at the fault's end),
`pause` (SIGSTOP, SIGCONT at the end), `restart` (SIGTERM, started again at the end),
`partition` (per-node blocked peers through raftchroma's test-only fault-injecting transport:
the leader isolated, random halves, a majorities ring, or a bridge; every block lifted at the
end), `disk-full` and `apply-fail` (raftchroma's test-only disk faults on one node, the leader
or a majority: journal appends and store changes fail with ENOSPC, or store changes with EIO;
lifted at the end), `membership` (add a fresh node and promote it, remove a voter, or replace
one: see membership_nemesis.py; the schedule follows the voters each change leaves, so the
faults after it name the nodes then in the cluster). Faults never overlap, so no node is killed
or restarted by the nemesis during a partition, and no fault meets a membership change.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from jepsen_lite.cluster import LocalCluster
from jepsen_lite.membership_nemesis import MembershipNemesis
from jepsen_lite.recorder import Recorder

KINDS = ("kill", "pause", "restart", "partition", "disk-full", "apply-fail", "membership")
# kind -> the {"disk_full", "apply_fails"} flags a disk fault sets on its targets
DISK_FAULTS = {"disk-full": {"disk_full": True, "apply_fails": False},
               "apply-fail": {"disk_full": False, "apply_fails": True}}
FIRST_FAULT_S = (1.0, 3.0)
FAULT_DURATION_S = (2.0, 5.0)
QUIET_S = (2.0, 4.0)
PARTITION_MODES = ("leader", "halves", "majorities-ring", "bridge")
TARGET_MODES = {"kill": ("one", "leader", "majority"), "pause": ("one", "leader"), "restart": ("one", "leader"),
                "partition": PARTITION_MODES, "disk-full": ("one", "leader", "majority"),
                "apply-fail": ("one", "leader", "majority")}
HEAL_UNBLOCK_TIMEOUT_S = 30.0
HEAL_RETRY_INTERVAL_S = 0.2
# A membership change is planned to last this long; it runs to its end (bounded in
# membership_nemesis.py), and the next fault waits for it.
MEMBERSHIP_DURATION_S = (6.0, 10.0)
# How long `stop` waits for the fault in progress: a membership change is not cut short (it would
# leave a node half added), and its steps are bounded (membership_nemesis.ACTION_MAX_S).
STOP_TIMEOUT_S = 240.0

Grudge = dict[str, list[str]]  # node id -> the peers whose Raft messages it drops (both directions)


@dataclass(frozen=True)
class Fault:
    """One fault: `targets` are concrete node ids, except that mode `leader` is resolved when
    the fault starts (`targets` then holds the seeded fallback when there is no leader). For a
    partition, `targets` is a seeded permutation of all nodes that fixes the shape (see
    `partition_grudge`)."""

    kind: str
    mode: str
    targets: tuple[str, ...]
    start_s: float
    end_s: float


def _targets(rng: random.Random, kind: str, mode: str, nodes: list[str]) -> tuple[str, ...]:
    if kind == "partition":
        return tuple(rng.sample(nodes, len(nodes)))  # the order is the shape: not sorted
    size = len(nodes) // 2 + 1 if mode == "majority" else 1
    return tuple(sorted(rng.sample(nodes, size)))


def _new_ids(node_ids: Sequence[str]) -> Iterator[str]:
    """n<k> for k above every numbered id, never one in use: the ids of nodes added in a run."""
    numbers = [int(n[1:]) for n in node_ids if n[:1] == "n" and n[1:].isdigit()]
    k = max(numbers, default=0) + 1
    while True:
        if f"n{k}" not in node_ids:
            yield f"n{k}"
        k += 1


def _membership_change(rng: random.Random, voters: list[str], base: int,
                       new_ids: Iterator[str]) -> tuple[str, tuple[str, ...], list[str]]:
    """One membership change: (mode, targets, the voters after it). With `base` voters (the
    initial count) a node is added; with one more, a voter is removed, or replaced (killed,
    removed, then a new node added): so the voters stay within base..base + 1, and no change
    leaves fewer than `base` of them alive. Half the removals and replacements first make the
    victim the leader (`remove-leader`, `replace-leader`): the victim stays a seeded node, yet
    the leader's own removal (handed over first) and the leader's death get exercised."""
    if len(voters) <= base:
        new = next(new_ids)
        return "add", (new,), sorted([*voters, new])
    mode = rng.choice(("remove", "replace"))
    victim = rng.choice(voters)
    if rng.random() < 0.5:
        mode += "-leader"
    rest = [v for v in voters if v != victim]
    if mode.startswith("remove"):
        return mode, (victim,), rest
    new = next(new_ids)
    return mode, (victim, new), sorted([*rest, new])


def schedule(seed: int, kinds: Sequence[str], time_limit_s: float, node_ids: Sequence[str]) -> list[Fault]:
    """The faults of one run, relative to the start of the workload. Pure: same inputs, same list.
    A membership change's targets are (new,) for `add`, (victim,) for `remove`, (victim, new)
    for `replace`; every later fault picks its nodes among the voters the changes left."""
    if not kinds:
        return []
    rng = random.Random(seed)
    nodes = sorted(node_ids)
    base, new_ids = len(nodes), _new_ids(list(node_ids))
    faults: list[Fault] = []
    t = rng.uniform(*FIRST_FAULT_S)
    while t < time_limit_s - 1.0:
        kind = rng.choice(sorted(kinds))
        if kind == "membership":
            mode, targets, nodes = _membership_change(rng, nodes, base, new_ids)
            end = min(t + rng.uniform(*MEMBERSHIP_DURATION_S), time_limit_s)
        else:  # the same draws as before membership existed: old seeds keep their schedules
            mode = rng.choice(TARGET_MODES[kind])
            targets = _targets(rng, kind, mode, nodes)
            end = min(t + rng.uniform(*FAULT_DURATION_S), time_limit_s)
        faults.append(Fault(kind, mode, targets, round(t, 3), round(end, 3)))
        t = end + rng.uniform(*QUIET_S)
    return faults


# ----------------------------------------------------------------- partitions


def _grudge(order: Sequence[str], connected: Callable[[str, str], bool]) -> Grudge:
    return {a: sorted(b for b in order if b != a and not connected(a, b)) for a in sorted(order)}


def _ring_reach(n: int) -> int:
    """How far a node sees along the ring: itself plus `reach` nodes on each side make at least
    a majority (n // 2 + 1) and, from 4 nodes on, fewer than all."""
    return math.ceil((n // 2) / 2)


def partition_grudge(mode: str, order: Sequence[str], leader: str | None = None) -> Grudge:
    """Per node, the peers it blocks; symmetric (a blocks b iff b blocks a). Pure.

    `order` is a permutation of all node ids. `leader`: the leader isolated from all others
    (`order[0]` when None). `halves`: the first n // 2 nodes of `order` against the rest (1|2,
    2|3). `bridge`: the first n // 2 and the last (n - 1) // 2 cannot talk to each other, the
    node between them talks to both. `majorities-ring`: `order` is a ring; each node sees the
    nodes within `_ring_reach(n)` of it, a majority, but a different one for each node. With 3
    nodes a ring has no link to cut, so only order[0]-order[2] is cut (each end sees 2 of 3).
    """
    n, pos = len(order), {node: i for i, node in enumerate(order)}
    if mode == "leader":
        isolated = leader if leader in pos else order[0]
        return _grudge(order, lambda a, b: isolated not in (a, b))
    if mode == "halves":
        small = set(order[: n // 2])
        return _grudge(order, lambda a, b: (a in small) == (b in small))
    if mode == "bridge":
        left, right = set(order[: n // 2]), set(order[n // 2 + 1:])
        return _grudge(order, lambda a, b: not ({a, b} & left and {a, b} & right))
    if mode == "majorities-ring":
        if n == 3:
            return _grudge(order, lambda a, b: {a, b} != {order[0], order[2]})
        reach = _ring_reach(n)
        return _grudge(order, lambda a, b: min(abs(pos[a] - pos[b]), n - abs(pos[a] - pos[b])) <= reach)
    raise ValueError(f"unknown partition mode {mode!r} (known: {', '.join(PARTITION_MODES)})")


def grudge_label(grudge: Grudge) -> str:
    """The cut links, as `n1-n3,n2-n3`; `none` when nothing is blocked."""
    links = sorted({tuple(sorted((a, b))) for a, peers in grudge.items() for b in peers})
    return ",".join(f"{a}-{b}" for a, b in links) or "none"


# -------------------------------------------------------------------- nemesis


class Nemesis:
    """Runs a schedule in its own thread; `heal` undoes every fault still in force."""

    def __init__(self, cluster: LocalCluster, recorder: Recorder, faults: Sequence[Fault],
                 heal_unblock_timeout_s: float = HEAL_UNBLOCK_TIMEOUT_S) -> None:
        self.cluster = cluster
        self.recorder = recorder
        self.faults = list(faults)
        self.heal_unblock_timeout_s = heal_unblock_timeout_s
        self.membership = MembershipNemesis(cluster, recorder)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, origin_s: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(origin_s,), name="nemesis", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive() and self.error is None:
                self.error = TimeoutError(f"the nemesis was still acting {timeout_s:g}s after it was stopped")

    def _sleep_until(self, origin_s: float, at_s: float) -> bool:
        """False when stopped early."""
        return not self._stop.wait(max(0.0, origin_s + at_s - time.monotonic()))

    def _run(self, origin_s: float) -> None:
        try:
            for fault in self.faults:
                if not self._sleep_until(origin_s, fault.start_s):
                    return
                if fault.kind == "partition":
                    self._partition(fault, origin_s)
                    continue
                if fault.kind in DISK_FAULTS:
                    self._disk_fault(fault, origin_s)
                    continue
                if fault.kind == "membership":
                    self.membership.change(fault)
                    continue
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

    def _partition(self, fault: Fault, origin_s: float) -> None:
        """Blocks per the fault's shape, holds it until the fault's end, then unblocks every node.
        Each node that could not be told (down, paused, not answering) is listed as `unreached`."""
        leader = self.cluster.leader() if fault.mode == "leader" else None
        grudge = partition_grudge(fault.mode, fault.targets, leader)
        value: dict[str, Any] = {"mode": fault.mode, "order": list(fault.targets), "blocked": grudge}
        if fault.mode == "leader":
            value["leader"] = leader  # None: no agreed leader, order[0] was isolated instead
        with self.recorder.nemesis_op("partition-start", grudge_label(grudge), value) as result:
            result["unreached"] = [n for n, peers in grudge.items() if not self.cluster.block(n, peers)]
        self._sleep_until(origin_s, fault.end_s)
        healed: Grudge = {n: [] for n in grudge}
        with self.recorder.nemesis_op("partition-stop", "all", {"mode": fault.mode, "blocked": healed}) as result:
            result["unreached"] = [n for n in healed if not self.cluster.block(n, [])]

    def _disk_fault(self, fault: Fault, origin_s: float) -> None:
        """Sets the fault's flags on its targets, holds them until the fault's end, then clears
        them. Each target that could not be told (down, paused, not answering) is `unreached`."""
        targets = self._resolve(fault)
        flags = DISK_FAULTS[fault.kind]
        value: dict[str, Any] = {"targets": list(targets), "mode": fault.mode, "faults": flags}
        with self.recorder.nemesis_op(f"{fault.kind}-start", ",".join(targets), value) as result:
            result["unreached"] = [n for n in targets if not self.cluster.set_faults(n, **flags)]
        self._sleep_until(origin_s, fault.end_s)
        cleared = {"disk_full": False, "apply_fails": False}
        value = {"targets": list(targets), "mode": fault.mode, "faults": cleared}
        with self.recorder.nemesis_op(f"{fault.kind}-stop", ",".join(targets), value) as result:
            result["unreached"] = [n for n in targets if not self.cluster.set_faults(n, **cleared)]

    def _until_all_answer(self, action: Callable[[str], bool], timeout_s: float, skip: Sequence[str] = ()) -> list[str]:
        """Calls `action(node)` for every node but `skip` until each has returned True (a node
        still starting answers once it listens). Returns the nodes that never did."""
        pending = [n for n in self.cluster.members if n not in skip]
        deadline_s = time.monotonic() + timeout_s
        while pending:
            pending = [n for n in pending if not action(n)]
            if not pending or time.monotonic() >= deadline_s:
                break
            time.sleep(HEAL_RETRY_INTERVAL_S)
        return pending

    def _unblock_all(self, timeout_s: float, skip: Sequence[str] = ()) -> list[str]:
        return self._until_all_answer(lambda n: self.cluster.block(n, []), timeout_s, skip)

    def _clear_disk_faults_all(self, timeout_s: float, skip: Sequence[str] = ()) -> list[str]:
        return self._until_all_answer(lambda n: self.cluster.set_faults(n, False, False), timeout_s, skip)

    def heal(self) -> None:
        """Resumes every paused member, starts every stopped one, unblocks every member's transport
        and, when the schedule has disk faults, clears them on every member; recorded as `heal`
        (with the nodes that could not be unblocked, or cleared). Removed nodes stay stopped."""
        self.stop()
        disk_faults = any(f.kind in DISK_FAULTS for f in self.faults)
        members = list(self.cluster.members)
        value: dict[str, Any] = {"blocked": {n: [] for n in members}}
        if disk_faults:
            value["faults"] = {"disk_full": False, "apply_fails": False}
        with self.recorder.nemesis_op("heal", "all", value) as result:
            started = []
            for node_id in members:
                self.cluster.resume(node_id)
                if self.cluster.start_if_down(node_id):
                    started.append(node_id)  # a fresh process starts unblocked
            result["started"] = started
            result["unreached"] = self._unblock_all(self.heal_unblock_timeout_s, skip=started)
            if disk_faults:  # a fresh process starts without them
                result["faults_unreached"] = self._clear_disk_faults_all(self.heal_unblock_timeout_s, skip=started)


# (kind, phase) -> the LocalCluster method applied to each target node.
_ACTIONS = {
    ("kill", "start"): "kill",
    ("kill", "stop"): "start_if_down",
    ("pause", "start"): "pause",
    ("pause", "stop"): "resume",
    ("restart", "start"): "stop",
    ("restart", "stop"): "start_if_down",
}
