"""The membership nemesis: runtime membership changes of a live cluster, each step recorded.

Owns: carrying out one scheduled membership change through the cluster (its admin requests and
processes), its retries and bounds, the checks that keep the voters within base..base + 1 and
never fewer than `base` alive, and the history records of every step; and, after heal,
`settle`: the membership the leader has committed becomes the harness's (the nodes the final
reads, the digests and the convergence wait use). It must not send signals or requests itself
(the cluster does), choose changes (the schedule in nemesis.py does) nor judge.

A change is bracketed by `membership-start` and `membership-stop` (the fault window, as for the
other nemeses: stats and the elections checker read it), with its steps in between, each an
invocation and an `ok` (done), `fail` (certainly not done) or `info` (unknown) completion:
- `add` (targets (new,)): `join-node` (a fresh node, free ports, its own data dir, started with
  `--join`, until it answers its status), `add-member` (as a non-voter, asked of the leader),
  `catch-up` (until it has applied the leader's commit index of that moment), `promote-member`.
- `remove` (targets (victim,)): `transfer-leader` first if the victim leads, `remove-member`,
  then `stop-node` (SIGTERM).
- `replace` (targets (victim, new)): `kill-node` (SIGKILL), `remove-member`, then `add` of new.
- `remove-leader`, `replace-leader`: first `transfer-leader` to the victim (so that the leader is
  removed, after handing over again, or killed), then as above.
A change asked of the leader is retried (not leader, refused while another change commits,
no quorum yet) until it holds or its deadline passes; whether it holds is read from the leader's
status, and only once committed (its commit index at or past its membership index). A step that
got a reply that may mean "done" (504, a timeout) and never saw the change hold ends `info`.
A change is skipped (`membership-stop` with `skipped`) when the cluster is not as the schedule
expected (an earlier change did not complete): it would leave too many or too few voters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from jepsen_lite.history import OpType
from jepsen_lite.recorder import NEMESIS, Recorder

JOIN_TIMEOUT_S = 60.0  # a node starts in ~4 s, far longer on a loaded 2-core machine
CHANGE_TIMEOUT_S = 30.0  # one add / promote / remove, retries included
CATCH_UP_TIMEOUT_S = 60.0
TRANSFER_TIMEOUT_S = 20.0
RETRY_INTERVAL_S = 0.5
SETTLE_TIMEOUT_S = 60.0
# The longest one change can take: join, add, catch-up, promote (and for replace a remove too).
ACTION_MAX_S = JOIN_TIMEOUT_S + CATCH_UP_TIMEOUT_S + 3 * CHANGE_TIMEOUT_S + TRANSFER_TIMEOUT_S
ERRORS_KEPT = 5


class Cluster(Protocol):  # what this module needs of cluster.LocalCluster
    members: list[str]
    nodes: dict[str, Any]

    def leader(self) -> str | None: ...
    def status(self, node_id: str) -> dict[str, Any] | None: ...
    def new_node(self, node_id: str) -> Any: ...
    def start(self, node_id: str) -> None: ...
    def start_if_down(self, node_id: str) -> bool: ...
    def stop(self, node_id: str) -> bool: ...
    def kill(self, node_id: str) -> None: ...
    def admit(self, node_id: str) -> None: ...
    def retire(self, node_id: str) -> None: ...
    def change_membership(self, leader: str, op: str, node_id: str) -> tuple[int | None, Any]: ...
    def transfer_leader(self, leader: str, to: str | None = None) -> tuple[int | None, Any]: ...


def committed_members(status: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The leader's membership if it is committed (its last membership entry at or below its
    commit index), else None: an uncommitted change may still be truncated away."""
    if not status or status.get("role") != "leader":
        return None
    if int(status.get("membership_index") or 0) > int(status.get("commit_index") or 0):
        return None
    members = status.get("members")
    return list(members) if isinstance(members, list) else None


def _ids(members: list[dict[str, Any]], voters_only: bool = False) -> list[str]:
    return sorted(str(m["id"]) for m in members if m.get("voter") or not voters_only)


# What a change wants to see in the committed membership.
WANTS: dict[str, Callable[[list[dict[str, Any]], str], bool]] = {
    "add": lambda members, node: node in _ids(members),
    "promote": lambda members, node: node in _ids(members, voters_only=True),
    "remove": lambda members, node: node not in _ids(members),
}


def _indefinite(status: int | None) -> bool:
    """A reply that may mean the change was proposed and commits later."""
    return status is None or (status >= 500 and status != 503)


def _short(status: int | None, body: Any) -> str:
    if isinstance(body, dict):
        return f"{status} {body.get('error', '')}: {str(body.get('message', ''))[:200]}"
    return f"{status} {str(body)[:200]}"


class MembershipNemesis:
    """Carries out membership faults (nemesis.Fault with kind `membership`) on one cluster."""

    def __init__(self, cluster: Cluster, recorder: Recorder, base_voters: int | None = None,
                 retry_interval_s: float = RETRY_INTERVAL_S) -> None:
        self.cluster = cluster
        self.recorder = recorder
        self.base_voters = len(cluster.members) if base_voters is None else base_voters
        self.retry_interval_s = retry_interval_s

    # ------------------------------------------------------------ recording

    def _step(self, f: str, node: str, value: dict[str, Any], act: Callable[[dict[str, Any]], OpType]) -> OpType:
        """Records `f` around `act(observed)`, which fills `observed` and returns the outcome."""
        self.recorder.record(NEMESIS, node, f, None, value, "invoke")
        observed: dict[str, Any] = {}
        try:
            outcome = act(observed)
        except Exception as exc:
            self.recorder.record(NEMESIS, node, f, None, {**value, **observed}, "info",
                                 error=f"{type(exc).__name__}: {exc}")
            raise
        errors = observed.get("errors") or []
        error = errors[-1] if outcome != "ok" and errors else None
        self.recorder.record(NEMESIS, node, f, None, {**value, **observed}, outcome, error=error)
        return outcome

    def _committed(self, deadline_s: float) -> tuple[str, list[dict[str, Any]]] | None:
        """(leader, its committed membership), polled until the deadline."""
        while True:
            leader = self.cluster.leader()
            members = committed_members(self.cluster.status(leader)) if leader else None
            if leader is not None and members is not None:
                return leader, members
            if time.monotonic() >= deadline_s:
                return None
            time.sleep(self.retry_interval_s)

    # ------------------------------------------------------------ one change

    def change(self, fault: Any) -> None:
        """One scheduled change (`fault.mode` add, remove or replace; `fault.targets`)."""
        targets = list(fault.targets)
        label = ",".join(targets)
        with self.recorder.nemesis_op("membership-start", label, {"action": fault.mode, "mode": fault.mode,
                                                                   "targets": targets,
                                                                   "members": list(self.cluster.members)}):
            pass
        result: dict[str, Any] = {"action": fault.mode, "mode": fault.mode, "targets": targets}
        action, _, leader_first = str(fault.mode).partition("-")
        try:
            skipped = self._precondition(action, targets)
            if skipped:
                result["skipped"] = skipped
            else:
                if leader_first:
                    self._step("transfer-leader", targets[0], {"to": targets[0]},
                               lambda obs: self._transfer_to(targets[0], obs))
                result["completed"] = getattr(self, f"_{action}")(*targets)
        finally:
            result["members"] = list(self.cluster.members)
            with self.recorder.nemesis_op("membership-stop", label, result):
                pass

    def _precondition(self, mode: str, targets: list[str]) -> str | None:
        """Why the change must not run now (None: it may)."""
        found = self._committed(time.monotonic() + CHANGE_TIMEOUT_S)
        if found is None:
            return "no leader with a committed membership"
        voters = _ids(found[1], voters_only=True)
        if mode == "add" and len(voters) > self.base_voters:
            return f"already {len(voters)} voters ({','.join(voters)})"
        if mode in ("remove", "replace"):
            if len(voters) <= self.base_voters:
                return f"only {len(voters)} voters ({','.join(voters)}): removing one would leave too few"
            if targets[0] not in voters:
                return f"{targets[0]} is not a voter ({','.join(voters)})"
            down = self._until_all_answer(voters, time.monotonic() + CHANGE_TIMEOUT_S)
            if down:
                return f"{','.join(down)} not answering: taking {targets[0]} out could leave too few live voters"
        return None

    def _until_all_answer(self, nodes: list[str], deadline_s: float) -> list[str]:
        """The nodes that still do not answer their status at the deadline (a node restarted by
        an earlier fault may still be starting)."""
        while True:
            down = [n for n in nodes if n not in self.cluster.nodes or self.cluster.status(n) is None]
            if not down or time.monotonic() >= deadline_s:
                return down
            time.sleep(self.retry_interval_s)

    def _add(self, new: str) -> bool:
        """join-node, add-member, catch-up, promote-member; True if all four were done."""
        if self._step("join-node", new, {}, lambda obs: self._join(new, obs)) != "ok":
            self.cluster.stop(new)  # never a member: nothing else must start or wait for it
            return False
        added = self._change("add-member", "add", new)
        if added == "ok":
            self.cluster.admit(new)
        elif added == "fail":
            self.cluster.stop(new)  # certainly not a member
            return False
        else:
            return False  # unknown: `settle` admits it if the leader ends up listing it
        self._step("catch-up", new, {}, lambda obs: self._catch_up(new, obs))
        return self._change("promote-member", "promote", new) == "ok"

    def _remove(self, victim: str) -> bool:
        """transfer-leader (if the victim leads), remove-member, stop-node."""
        if self.cluster.leader() == victim:
            self._step("transfer-leader", victim, {"from": victim}, lambda obs: self._transfer(victim, obs))
        if self._change("remove-member", "remove", victim) != "ok":
            return False
        self.cluster.retire(victim)
        self._step("stop-node", victim, {}, lambda obs: self._stop_node(victim, obs))
        return True

    def _replace(self, victim: str, new: str) -> bool:
        """kill-node, remove-member, then `add` of the new node."""
        def kill(obs: dict[str, Any]) -> OpType:
            obs["was_leader"] = self.cluster.leader() == victim
            self.cluster.kill(victim)
            return "ok"
        self._step("kill-node", victim, {}, kill)
        if self._change("remove-member", "remove", victim) != "ok":
            self.cluster.start_if_down(victim)  # still a member: bring it back rather than run short
            return False
        self.cluster.retire(victim)
        return self._add(new)

    # ------------------------------------------------------------ steps

    def _join(self, new: str, obs: dict[str, Any]) -> OpType:
        node = self.cluster.new_node(new)
        obs.update(raft_port=node.raft_port, http_port=node.http_port)
        self.cluster.start(new)
        deadline_s, started_s = time.monotonic() + JOIN_TIMEOUT_S, time.monotonic()
        while (status := self.cluster.status(new)) is None:
            if time.monotonic() >= deadline_s:
                obs["errors"] = [f"no status answer within {JOIN_TIMEOUT_S:g}s"]
                return "fail"
            time.sleep(self.retry_interval_s)
        obs.update(pid=status.get("pid"), member=status.get("member"), seconds=round(time.monotonic() - started_s, 3))
        return "ok"

    def _change(self, f: str, op: str, node: str) -> OpType:
        return self._step(f, node, {"op": op}, lambda obs: self._ask_leader(op, node, obs))

    def _ask_leader(self, op: str, node: str, obs: dict[str, Any]) -> OpType:
        """Sends the change to the leader until the committed membership shows it."""
        want, errors, indefinite = WANTS[op], [], False
        deadline_s, attempts = time.monotonic() + CHANGE_TIMEOUT_S, 0
        while True:
            found = self._committed(min(deadline_s, time.monotonic() + 5.0))
            if found is not None and want(found[1], node):
                obs.update(attempts=attempts, leader=found[0], voters=_ids(found[1], voters_only=True),
                           members=_ids(found[1]))
                break
            if time.monotonic() >= deadline_s:
                obs.update(attempts=attempts, errors=errors[-ERRORS_KEPT:])
                return "info" if indefinite else "fail"
            if found is None:
                errors.append("no leader with a committed membership")
                continue
            status, body = self.cluster.change_membership(found[0], op, node)
            attempts += 1
            if status == 200 and isinstance(body, dict) and isinstance(body.get("members"), list):
                # 200 means committed (the leader waited for it). Its status may not show it yet:
                # it is a snapshot the Raft process sends now and then.
                obs.update(attempts=attempts, leader=found[0], index=body.get("index"), confirmed_by="reply",
                           voters=_ids(body["members"], voters_only=True), members=_ids(body["members"]))
                if want(body["members"], node):
                    break
            errors.append(_short(status, body))
            indefinite = indefinite or _indefinite(status)
            time.sleep(self.retry_interval_s)
        obs["errors"] = errors[-ERRORS_KEPT:]
        return "ok"

    def _catch_up(self, new: str, obs: dict[str, Any]) -> OpType:
        """Until the new node has applied the leader's commit index as it was when this began (a
        node just added may not know the leader yet, so the leader is waited for too)."""
        started_s = time.monotonic()
        found = self._committed(started_s + CATCH_UP_TIMEOUT_S)
        leader_status = self.cluster.status(found[0]) if found else None
        if leader_status is None:
            obs["errors"] = [f"no leader within {CATCH_UP_TIMEOUT_S:g}s"]
            return "fail"
        target = int(leader_status["commit_index"])
        obs["target_index"] = target
        while True:
            status = self.cluster.status(new)
            applied = int(status["raft_applied_index"]) if status else -1
            if applied >= target:
                obs.update(applied_index=applied, seconds=round(time.monotonic() - started_s, 3))
                return "ok"
            if time.monotonic() - started_s >= CATCH_UP_TIMEOUT_S:
                obs.update(applied_index=applied, errors=[f"behind after {CATCH_UP_TIMEOUT_S:g}s"])
                return "fail"
            time.sleep(self.retry_interval_s)

    def _transfer(self, victim: str, obs: dict[str, Any]) -> OpType:
        """Asks the victim to hand leadership over until another node leads."""
        deadline_s, errors = time.monotonic() + TRANSFER_TIMEOUT_S, []
        while True:
            leader = self.cluster.leader()
            if leader is not None and leader != victim:
                obs.update(to=leader, errors=errors[-ERRORS_KEPT:])
                return "ok"
            if time.monotonic() >= deadline_s:
                obs["errors"] = errors[-ERRORS_KEPT:] or ["no other leader in time"]
                return "fail"
            if leader == victim:
                status, body = self.cluster.transfer_leader(victim)
                if status != 200:
                    errors.append(_short(status, body))
            time.sleep(self.retry_interval_s)

    def _transfer_to(self, victim: str, obs: dict[str, Any]) -> OpType:
        """Asks the leader to hand leadership to the victim until the victim leads."""
        deadline_s, errors = time.monotonic() + TRANSFER_TIMEOUT_S, []
        while True:
            leader = self.cluster.leader()
            if leader == victim:
                obs.update(errors=errors[-ERRORS_KEPT:])
                return "ok"
            if time.monotonic() >= deadline_s:
                obs["errors"] = errors[-ERRORS_KEPT:] or [f"{victim} did not become the leader in time"]
                return "fail"
            if leader is not None:
                obs["from"] = leader
                status, body = self.cluster.transfer_leader(leader, to=victim)
                if status != 200:
                    errors.append(_short(status, body))
            time.sleep(self.retry_interval_s)

    def _stop_node(self, victim: str, obs: dict[str, Any]) -> OpType:
        obs["graceful"] = self.cluster.stop(victim)
        return "ok"

    # ------------------------------------------------------------ after heal

    def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> list[str]:
        """After heal: the leader's committed membership becomes the harness's. A node the
        leader lists that the harness had not admitted (an add whose outcome was unknown) is
        admitted if it runs; a node the harness held that the leader does not list is retired and
        stopped. Recorded as `members`; returns the members (the harness's view if no leader)."""
        value: dict[str, Any] = {"harness": list(self.cluster.members)}
        with self.recorder.nemesis_op("members", "all", value) as result:
            found = self._committed(time.monotonic() + timeout_s)
            if found is None:
                result["error"] = "no leader with a committed membership: the harness's view is kept"
                return list(self.cluster.members)
            leader, members = found
            listed = _ids(members)
            admitted = [n for n in listed if n not in self.cluster.members and n in self.cluster.nodes]
            retired = [n for n in self.cluster.members if n not in listed]
            for node in admitted:
                self.cluster.admit(node)
            for node in retired:
                self.cluster.retire(node)
                self.cluster.stop(node)
            result.update(leader=leader, members=listed, voters=_ids(members, voters_only=True),
                          admitted=admitted, retired=retired,
                          without_process=[n for n in listed if n not in self.cluster.nodes])
        return list(self.cluster.members)
