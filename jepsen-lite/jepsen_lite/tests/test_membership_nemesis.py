"""The membership nemesis without a cluster: its seeded schedule (pure), and its steps against a
fake cluster that keeps a membership the way a raftchroma leader does (committed changes only,
the leader cannot remove itself, a joining node is no member until added)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from jepsen_lite.elections_checker import check_elections
from jepsen_lite.history import nemesis_ops
from jepsen_lite.membership_nemesis import MembershipNemesis, committed_members
from jepsen_lite.nemesis import Fault, schedule
from jepsen_lite.recorder import Recorder

NODES = ["n1", "n2", "n3"]


# ------------------------------------------------------------------ schedule (pure)


def _replay_voters(faults: list[Fault], nodes: list[str]) -> list[list[str]]:
    """The voters before each fault, replaying the membership changes of a schedule."""
    voters, before = set(nodes), []
    for fault in faults:
        before.append(sorted(voters))
        if fault.kind != "membership":
            continue
        if fault.mode != "add":
            voters.remove(fault.targets[0])
        if fault.mode.startswith(("add", "replace")):
            voters.add(fault.targets[-1])
    return before


@pytest.mark.parametrize("kinds", [("membership",), ("membership", "kill"), ("membership", "partition", "pause")])
def test_schedule_is_a_pure_function_of_its_inputs(kinds: tuple[str, ...]) -> None:
    for seed in range(20):
        assert schedule(seed, kinds, 60.0, NODES) == schedule(seed, kinds, 60.0, list(reversed(NODES)))
    assert any(schedule(s, kinds, 60.0, NODES) != schedule(s + 1, kinds, 60.0, NODES) for s in range(5))


@pytest.mark.parametrize("nodes", [NODES, ["n1", "n2", "n3", "n4", "n5"]])
def test_voters_stay_within_base_and_base_plus_one_and_new_ids_are_fresh(nodes: list[str]) -> None:
    modes = set()
    for seed in range(40):
        faults = schedule(seed, ("membership", "kill", "partition"), 120.0, nodes)
        before = _replay_voters(faults, nodes)
        added = [f.targets[-1] for f in faults if f.kind == "membership" and f.mode.startswith(("add", "replace"))]
        assert len(added) == len(set(added)) and not set(added) & set(nodes)  # never reused
        assert added == [f"n{len(nodes) + i + 1}" for i in range(len(added))]
        for fault, voters in zip(faults, before):
            assert len(nodes) <= len(voters) <= len(nodes) + 1
            if fault.kind == "membership":
                modes.add(fault.mode)
                expected = {"add"} if len(voters) == len(nodes) else {"remove", "replace", "remove-leader",
                                                                       "replace-leader"}
                assert fault.mode in expected
                if fault.mode != "add":
                    assert fault.targets[0] in voters  # a voter at that moment
            elif fault.kind == "partition":
                assert sorted(fault.targets) == voters  # every current voter, none removed
            else:
                assert set(fault.targets) <= set(voters)
    assert modes == {"add", "remove", "replace", "remove-leader", "replace-leader"}


def test_schedules_without_membership_are_unchanged() -> None:
    """The draws of the other kinds are as before membership existed (recorded seeds replay)."""
    assert schedule(5, ("partition",), 12.0, NODES) == [
        Fault("partition", "leader", ("n2", "n1", "n3"), 2.246, 6.949),
        Fault("partition", "halves", ("n2", "n1", "n3"), 9.175, 11.214)]


# ------------------------------------------------------------------ steps, against a fake cluster


class FakeCluster:
    """A leader with a membership; every change commits at once unless `refuse` says otherwise."""

    def __init__(self, nodes: list[str], leader: str = "n1") -> None:
        self.nodes: dict[str, Any] = {n: SimpleNamespace(raft_port=1, http_port=2) for n in nodes}
        self.members = list(nodes)  # the harness's view
        self.raft = {n: True for n in nodes}  # the committed membership: id -> voter
        self.running = set(nodes)
        self.current_leader = leader
        self.calls: list[tuple[str, ...]] = []
        self.refuse: dict[str, int] = {}  # op -> how many times to refuse it first
        self.leaderless_after_add = False  # leader() calls 2-4 after an add answer None
        self._calls_since_add = 0

    def leader(self) -> str | None:
        if self.leaderless_after_add and any(not voter for voter in self.raft.values()):
            self._calls_since_add += 1
            if 2 <= self._calls_since_add <= 4:
                return None  # the node just added does not know the leader yet (the 1st call confirms the add)
        return self.current_leader

    def status(self, node_id: str) -> dict[str, Any] | None:
        if node_id not in self.running:
            return None
        members = [{"id": n, "voter": v} for n, v in sorted(self.raft.items())]
        role = "leader" if node_id == self.current_leader else "follower"
        return {"role": role, "members": members, "membership_index": 5, "commit_index": 9,
                "raft_applied_index": 9, "pid": 100, "member": node_id in self.raft}

    def new_node(self, node_id: str) -> Any:
        self.calls.append(("new_node", node_id))
        self.nodes[node_id] = SimpleNamespace(raft_port=3, http_port=4)
        return self.nodes[node_id]

    def start(self, node_id: str) -> None:
        self.calls.append(("start", node_id))
        self.running.add(node_id)

    def start_if_down(self, node_id: str) -> bool:
        self.calls.append(("start_if_down", node_id))
        self.running.add(node_id)
        return True

    def stop(self, node_id: str) -> bool:
        self.calls.append(("stop", node_id))
        self.running.discard(node_id)
        return True

    def kill(self, node_id: str) -> None:
        self.calls.append(("kill", node_id))
        self.running.discard(node_id)
        if node_id == self.current_leader:
            self.current_leader = sorted(self.running & set(self.raft))[0]

    def admit(self, node_id: str) -> None:
        self.members = [*self.members, node_id]

    def retire(self, node_id: str) -> None:
        self.members = [n for n in self.members if n != node_id]

    def change_membership(self, leader: str, op: str, node_id: str) -> tuple[int | None, Any]:
        self.calls.append((op, node_id))
        if self.refuse.get(op, 0) > 0:
            self.refuse[op] -= 1
            return 409, {"error": "MembershipChangeRefused", "message": "another change is not yet committed"}
        if op == "add":
            self.raft[node_id] = False
        elif op == "promote":
            self.raft[node_id] = True
        elif node_id == leader:
            return 409, {"error": "MembershipChangeRefused", "message": f"{node_id} is the leader"}
        else:
            del self.raft[node_id]
        return 200, {"index": 10, "members": [{"id": n, "voter": v} for n, v in sorted(self.raft.items())]}

    def transfer_leader(self, leader: str, to: str | None = None) -> tuple[int | None, Any]:
        self.calls.append(("transfer", leader, to or ""))
        self.current_leader = to or next(n for n in sorted(self.raft) if n != leader and self.raft[n])
        return 200, {"leader": self.current_leader}


def _nemesis(cluster: FakeCluster) -> tuple[MembershipNemesis, Recorder]:
    recorder = Recorder()
    nemesis = MembershipNemesis(cluster, recorder, base_voters=3, retry_interval_s=0.001)  # type: ignore[arg-type]
    return nemesis, recorder


def _steps(recorder: Recorder) -> list[tuple[str, str, str]]:
    """Each nemesis record's completion: (f, node, outcome); every one follows its invocation."""
    ops = recorder.ops()
    assert [op.type == "invoke" for op in ops] == [i % 2 == 0 for i in range(len(ops))]
    return [(op.f, op.node, op.type) for op in ops if op.type != "invoke"]


def test_add_joins_adds_catches_up_and_promotes_a_fresh_node() -> None:
    cluster = FakeCluster(NODES)
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(Fault("membership", "add", ("n4",), 0.0, 1.0))
    assert _steps(recorder) == [("membership-start", "n4", "ok"), ("join-node", "n4", "ok"),
                                ("add-member", "n4", "ok"), ("catch-up", "n4", "ok"),
                                ("promote-member", "n4", "ok"), ("membership-stop", "n4", "ok")]
    assert cluster.raft == {"n1": True, "n2": True, "n3": True, "n4": True}
    assert cluster.members == ["n1", "n2", "n3", "n4"]
    assert ("new_node", "n4") in cluster.calls and ("start", "n4") in cluster.calls
    stop = recorder.ops()[-1]
    assert stop.value["completed"] is True and stop.value["members"] == ["n1", "n2", "n3", "n4"]


def test_a_refused_change_is_retried_until_it_commits() -> None:
    cluster = FakeCluster(NODES)
    cluster.refuse = {"add": 2, "promote": 1}
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(Fault("membership", "add", ("n4",), 0.0, 1.0))
    add = next(op for op in recorder.ops() if op.f == "add-member" and op.type == "ok")
    assert add.value["attempts"] == 3 and len(add.value["errors"]) == 2
    assert cluster.raft["n4"] is True


def test_catch_up_waits_for_a_leader_the_new_node_agrees_on() -> None:
    cluster = FakeCluster(NODES)
    cluster.leaderless_after_add = True
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(Fault("membership", "add", ("n4",), 0.0, 1.0))
    assert ("catch-up", "n4", "ok") in _steps(recorder) and cluster.raft["n4"] is True


def test_removing_the_leader_transfers_leadership_first_then_stops_it() -> None:
    cluster = FakeCluster([*NODES, "n4"], leader="n2")
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(Fault("membership", "remove", ("n2",), 0.0, 1.0))
    assert [s[0] for s in _steps(recorder)] == ["membership-start", "transfer-leader", "remove-member", "stop-node",
                                                "membership-stop"]
    assert all(outcome == "ok" for _, _, outcome in _steps(recorder))
    assert "n2" not in cluster.raft and cluster.members == ["n1", "n3", "n4"] and "n2" not in cluster.running
    assert cluster.calls.index(("transfer", "n2", "")) < cluster.calls.index(("remove", "n2"))


def test_remove_leader_makes_the_victim_lead_then_hands_over_and_removes_it() -> None:
    cluster = FakeCluster([*NODES, "n4"], leader="n1")
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(Fault("membership", "remove-leader", ("n3",), 0.0, 1.0))
    assert [s[0] for s in _steps(recorder)] == ["membership-start", "transfer-leader", "transfer-leader",
                                                "remove-member", "stop-node", "membership-stop"]
    assert [c for c in cluster.calls if c[0] == "transfer"] == [("transfer", "n1", "n3"), ("transfer", "n3", "")]
    assert "n3" not in cluster.raft and cluster.current_leader != "n3"


def test_replace_leader_kills_the_leader_it_made() -> None:
    cluster = FakeCluster([*NODES, "n4"], leader="n1")
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(Fault("membership", "replace-leader", ("n4", "n5"), 0.0, 1.0))
    kill = next(op for op in recorder.ops() if op.f == "kill-node" and op.type == "ok")
    assert kill.value["was_leader"] is True
    assert cluster.raft == {"n1": True, "n2": True, "n3": True, "n5": True}


def test_replace_kills_removes_then_adds_and_promotes_a_new_node() -> None:
    cluster = FakeCluster([*NODES, "n4"])
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(Fault("membership", "replace", ("n1", "n5"), 0.0, 1.0))
    assert [s[0] for s in _steps(recorder)] == ["membership-start", "kill-node", "remove-member", "join-node",
                                                "add-member", "catch-up", "promote-member", "membership-stop"]
    assert cluster.raft == {"n2": True, "n3": True, "n4": True, "n5": True}
    assert cluster.members == ["n2", "n3", "n4", "n5"]


@pytest.mark.parametrize(("nodes", "fault", "reason"), [
    (NODES, Fault("membership", "remove", ("n2",), 0.0, 1.0), "only 3 voters"),
    (NODES, Fault("membership", "replace", ("n2", "n5"), 0.0, 1.0), "only 3 voters"),
    ([*NODES, "n4"], Fault("membership", "add", ("n5",), 0.0, 1.0), "already 4 voters"),
    ([*NODES, "n4"], Fault("membership", "remove", ("n7",), 0.0, 1.0), "n7 is not a voter"),
])
def test_a_change_the_cluster_is_not_ready_for_is_skipped(nodes: list[str], fault: Fault, reason: str) -> None:
    """E.g. an earlier add did not complete: the schedule's remove would leave 2 voters."""
    cluster = FakeCluster(nodes)
    nemesis, recorder = _nemesis(cluster)
    nemesis.change(fault)
    assert [s[0] for s in _steps(recorder)] == ["membership-start", "membership-stop"]
    assert reason in recorder.ops()[-1].value["skipped"]
    assert cluster.raft == {n: True for n in nodes} and not [c for c in cluster.calls if c[0] != "transfer"]


def test_settle_takes_the_leaders_committed_membership() -> None:
    cluster = FakeCluster([*NODES, "n4"])
    cluster.members = ["n1", "n2", "n3"]  # the add of n4 ended `info`: the harness did not admit it
    nemesis, recorder = _nemesis(cluster)
    assert nemesis.settle(timeout_s=0.1) == ["n1", "n2", "n3", "n4"]
    record = recorder.ops()[-1]
    assert record.f == "members" and record.value["admitted"] == ["n4"] and record.value["retired"] == []


def test_an_uncommitted_membership_is_not_trusted() -> None:
    status = {"role": "leader", "members": [{"id": "n1", "voter": True}], "membership_index": 12, "commit_index": 11}
    assert committed_members(status) is None
    assert committed_members({**status, "commit_index": 12}) == [{"id": "n1", "voter": True}]
    assert committed_members({**status, "role": "follower", "commit_index": 12}) is None


def test_a_joined_node_does_not_stretch_the_elections_baseline() -> None:
    """n4 first answers at 20 s; an election at 10 s, outside any window, must still count."""
    recorder = Recorder()
    recorder.record("nemesis", "n4", "join-node", None, {}, "invoke")
    recorder.record("nemesis", "n4", "join-node", None, {}, "ok")
    s = 1_000_000_000

    def sample(node: str, t: int, term: int) -> dict[str, Any]:
        return {"node": node, "sent_ns": t * s, "time_ns": t * s + 1, "pid": 1, "term": term,
                "leader_changes": 1, "role": "follower", "leader": "n1"}
    samples = [sample(n, t, 1 if t < 10 else 2) for n in NODES for t in range(1, 15)] + [sample("n4", 20, 2)]
    # The nemesis records are dated after the samples: no window covers the election.
    result = check_elections(samples, nemesis_ops(recorder.ops()), origin_ns=0)
    assert result["elections_outside_windows"] == 1 and result["verdict"] == "invalid"
