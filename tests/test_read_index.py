"""Linearizable reads through a read index (raftchroma/read_index.py): the rules as a pure state
machine against a scripted Raft view, then on a real cluster: no log entry per read, and a
follower's read sees a write acknowledged elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raftchroma.read_index import FORWARD, PROBE, PROBE_ACK, REPLY, ReadIndex
from tests.harness import Cluster, http, wait_for


@dataclass
class FakeRaft:
    leader_: bool = True
    term_: int = 3
    commit: int = 10
    in_term: bool = True
    leader_node: Any = "L"
    others: list[str] = field(default_factory=lambda: ["b", "c"])
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def is_leader(self) -> bool:
        return self.leader_

    def term(self) -> int:
        return self.term_

    def commit_index(self) -> int:
        return self.commit

    def committed_in_term(self) -> bool:
        return self.in_term

    def leader(self) -> Any:
        return self.leader_node

    def members(self) -> list[str]:
        return self.others

    def send(self, node: str, message: dict[str, Any]) -> None:
        self.sent.append((node, message))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def probes(raft: FakeRaft) -> list[tuple[str, dict[str, Any]]]:
    return [(n, m) for n, m in raft.sent if m["type"] == PROBE]


def test_a_leader_answers_its_commit_index_after_a_quorum_acknowledges_a_later_probe() -> None:
    raft, reads, answers = FakeRaft(), ReadIndex(1.0), []
    reads.request(answers.append)
    reads.tick(raft)
    sent = probes(raft)
    assert [n for n, _ in sent] == ["b", "c"] and answers == []
    raft.commit = 12  # commits after the round started do not change its answer
    reads.on_message(raft, "b", {"type": PROBE_ACK, "seq": sent[0][1]["seq"], "term": 3})
    assert answers == [10]


def test_an_acknowledgement_of_an_earlier_probe_or_another_term_does_not_count() -> None:
    raft, reads, answers = FakeRaft(), ReadIndex(1.0), []
    reads.request(answers.append)
    reads.tick(raft)
    seq = probes(raft)[0][1]["seq"]
    reads.on_message(raft, "b", {"type": PROBE_ACK, "seq": seq - 1, "term": 3})
    reads.on_message(raft, "c", {"type": PROBE_ACK, "seq": seq, "term": 4})
    assert answers == []


def test_a_leader_without_a_quorum_answers_nothing_and_fails_at_the_round_timeout() -> None:
    clock = Clock()
    raft, reads, answers = FakeRaft(), ReadIndex(1.0, clock=clock), []
    reads.request(answers.append)
    reads.tick(raft)
    clock.now = 0.9
    reads.tick(raft)
    assert answers == []
    clock.now = 1.1
    reads.tick(raft)
    assert answers == [None]


def test_a_new_leader_waits_until_it_has_committed_an_entry_of_its_term() -> None:
    raft, reads, answers = FakeRaft(in_term=False), ReadIndex(1.0), []
    reads.request(answers.append)
    reads.tick(raft)
    assert probes(raft) == [] and answers == []
    raft.in_term = True
    reads.tick(raft)
    assert len(probes(raft)) == 2


def test_reads_arriving_during_a_round_share_the_next_one() -> None:
    raft, reads, answers = FakeRaft(), ReadIndex(1.0), []
    reads.request(lambda i: answers.append(("first", i)))
    reads.tick(raft)
    reads.request(lambda i: answers.append(("second", i)))
    reads.request(lambda i: answers.append(("third", i)))
    reads.tick(raft)
    assert len(probes(raft)) == 2  # still one round
    first_seq = probes(raft)[0][1]["seq"]
    raft.commit = 11
    reads.on_message(raft, "c", {"type": PROBE_ACK, "seq": first_seq, "term": 3})
    assert answers == [("first", 10)]
    second = probes(raft)[2:]
    assert len(second) == 2  # one round for both waiting reads
    reads.on_message(raft, "b", {"type": PROBE_ACK, "seq": second[0][1]["seq"], "term": 3})
    assert answers[1:] == [("second", 11), ("third", 11)]


def test_losing_leadership_fails_the_round() -> None:
    raft, reads, answers = FakeRaft(), ReadIndex(1.0), []
    reads.request(answers.append)
    reads.tick(raft)
    raft.leader_, raft.leader_node = False, "b"
    reads.tick(raft)
    assert answers == [None]


def test_a_follower_forwards_to_the_leader_and_answers_the_leaders_index() -> None:
    raft, reads, answers = FakeRaft(leader_=False), ReadIndex(1.0), []
    reads.request(answers.append)
    reads.tick(raft)
    [(to, forwarded)] = raft.sent
    assert to == "L" and forwarded["type"] == FORWARD and isinstance(forwarded["id"], int)
    reads.on_message(raft, "b", {"type": REPLY, "id": forwarded["id"], "index": 99})  # not the leader it asked
    reads.on_message(raft, "L", {"type": REPLY, "id": forwarded["id"] + 1, "index": 98})  # another request
    assert answers == []
    reads.on_message(raft, "L", {"type": REPLY, "id": forwarded["id"], "index": 42})
    assert answers == [42]


def test_request_ids_differ_between_runs_of_a_follower() -> None:
    """A leader's reply to a request of the follower's previous run must not answer a new one."""
    ids = set()
    for _ in range(5):
        raft, reads = FakeRaft(leader_=False), ReadIndex(1.0)
        reads.request(lambda index: None)
        reads.tick(raft)
        ids.add(raft.sent[0][1]["id"])
    assert len(ids) == 5


def test_a_follower_with_no_leader_answers_none_at_once() -> None:
    raft, reads, answers = FakeRaft(leader_=False, leader_node=None), ReadIndex(1.0), []
    reads.request(answers.append)
    reads.tick(raft)
    assert answers == [None] and raft.sent == []


def test_the_leader_answers_a_forwarded_request_after_its_round() -> None:
    raft, reads = FakeRaft(), ReadIndex(1.0)
    reads.on_message(raft, "b", {"type": FORWARD, "id": 7})
    seq = probes(raft)[0][1]["seq"]
    reads.on_message(raft, "c", {"type": PROBE_ACK, "seq": seq, "term": 3})
    assert raft.sent[-1] == ("b", {"type": REPLY, "id": 7, "index": 10})


def test_a_member_acknowledges_a_probe_with_the_higher_of_the_terms() -> None:
    raft, reads = FakeRaft(leader_=False, term_=5), ReadIndex(1.0)
    reads.on_message(raft, "L", {"type": PROBE, "seq": 9, "term": 4})
    reads.on_message(raft, "L", {"type": PROBE, "seq": 10, "term": 6})
    assert raft.sent == [("L", {"type": PROBE_ACK, "seq": 9, "term": 5}),
                         ("L", {"type": PROBE_ACK, "seq": 10, "term": 6})]


# ---------------------------------------------------------------- a real cluster

SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}


def test_linearizable_reads_write_nothing_to_the_log(cluster: Cluster) -> None:
    col = cluster.node("n1").client().get_or_create_collection("read-index")
    col.upsert(ids=["a"], embeddings=[[1.0, 2.0]])
    wait_for(lambda: len({cluster.node(n).answered_status()["commit_index"] for n in cluster.nodes}) == 1, 30, "agreement")
    before = {n: cluster.node(n).answered_status()["commit_index"] for n in cluster.nodes}
    for node_id in cluster.nodes:
        for _ in range(30):
            status, _, body = http("POST", f"{cluster.node(node_id).url}{SCOPE}/collections/{col.id}/get",
                                   {"ids": ["a"]}, headers=LIN)
            assert status == 200 and body["ids"] == ["a"]
    after = {n: cluster.node(n).answered_status()["commit_index"] for n in cluster.nodes}
    assert after == before


def test_a_follower_linearizable_read_sees_a_write_the_leader_just_acknowledged(cluster: Cluster) -> None:
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n != leader]
    col = cluster.node(leader).client().get_or_create_collection("read-index-follower")
    lin_reader = cluster.node(followers[0]).client(**LIN).get_collection("read-index-follower")
    for i in range(25):
        col.upsert(ids=["reg"], embeddings=[[float(i), 0.0]], metadatas=[{"v": i}])
        assert lin_reader.get(ids=["reg"])["metadatas"] == [{"v": i}]
