"""Runtime membership on real clusters (membership.py, POST/DELETE /raftchroma/members): a node
added under write load, caught up and promoted; promotion refused while a member is behind; a
follower and then the (former) leader removed; a dead node replaced; the membership surviving a
restart of every node; a non-voting read replica that serves reads and forwards writes but never
counts toward a quorum nor leads; and the API's validation."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import Cluster, NodeProcess, http, make_cluster, start_cluster, wait_for

# Elections of 1.5-3 s: a spurious election under CI load would move leadership in the middle of a
# membership change (and turn the next request into a NotLeader) without exercising anything here.
RAFT_KEYS = "election_timeout_min_s = 1.5\nelection_timeout_max_s = 3.0"
CLUSTER_KEYS = "write_timeout_s = 20.0\nread_timeout_s = 20.0"
LIN = {"X-Raftchroma-Read-Consistency": "linearizable"}
STALE = {"X-Raftchroma-Read-Consistency": "stale"}
SCOPE = "/api/v2/tenants/default_tenant/databases/default_database"
CHANGE_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 60.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(tmp_path, cluster_keys=CLUSTER_KEYS, raft_keys=RAFT_KEYS)
    try:
        start_cluster(c)
        yield c
    finally:
        c.stop_all()


# ------------------------------------------------------------------ helpers


def address(node: NodeProcess) -> dict[str, str]:
    return {"id": node.node_id, "raft": f"127.0.0.1:{node.raft_port}", "http": f"127.0.0.1:{node.http_port}"}


def change(node: NodeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One membership request; retried only while a new leader has not yet committed in its term
    (the one refusal the API says to retry in a moment)."""
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while True:
        status, _, reply = http(method, node.url + path, body, timeout_s=CHANGE_TIMEOUT_S)
        early = status == 409 and "not yet committed an entry of its term" in str(reply)
        if not early or time.monotonic() > deadline:
            return status, reply
        time.sleep(0.1)


def add(cluster: Cluster, leader: str, node_id: str) -> dict[str, Any]:
    status, reply = change(cluster.node(leader), "POST", "/raftchroma/members", address(cluster.node(node_id)))
    assert status == 200, reply
    return reply


def promote(cluster: Cluster, leader: str, node_id: str) -> dict[str, Any]:
    status, reply = change(cluster.node(leader), "POST", f"/raftchroma/members/{node_id}/promote")
    assert status == 200, reply
    return reply


def remove(cluster: Cluster, leader: str, node_id: str) -> dict[str, Any]:
    status, reply = change(cluster.node(leader), "DELETE", f"/raftchroma/members/{node_id}")
    assert status == 200, reply
    return reply


def members(node: NodeProcess) -> dict[str, Any]:
    status, _, body = http("GET", node.url + "/raftchroma/members", timeout_s=5)
    assert status == 200, body
    return body


def voters_and_others(node: NodeProcess) -> tuple[list[str], list[str]]:
    listed = members(node)["members"]
    return sorted(m["id"] for m in listed if m["voter"]), sorted(m["id"] for m in listed if not m["voter"])


def wait_members(cluster: Cluster, among: list[str], voters: list[str], non_voters: list[str] = ()) -> None:
    """Every node in `among` has exactly this membership in force."""
    expected = (sorted(voters), sorted(non_voters))
    wait_for(lambda: all(voters_and_others(cluster.node(n)) == expected for n in among), CHANGE_TIMEOUT_S,
             f"{among} to list voters {voters} and non-voters {list(non_voters)}: "
             f"{ {n: voters_and_others(cluster.node(n)) for n in among} }")


def wait_caught_up(cluster: Cluster, leader: str, node_id: str) -> None:
    """`node_id` has applied everything the leader had committed when we started waiting, and the
    leader's match index for it is at least that (what promotion checks)."""
    target = cluster.node(leader).answered_status()["commit_index"]

    def caught_up() -> bool:
        mine, lead = cluster.node(node_id).status(), cluster.node(leader).status()
        return (mine is not None and lead is not None and mine["applied_index"] >= target
                and lead["match_index"].get(node_id, 0) >= target)
    wait_for(caught_up, CATCH_UP_TIMEOUT_S, f"{node_id} to catch up to index {target}")


def create_collection(node: NodeProcess, name: str) -> str:
    status, _, body = http("POST", node.url + SCOPE + "/collections", {"name": name}, timeout_s=30)
    assert status == 200, body
    return body["id"]


def add_record(node: NodeProcess, collection_id: str, record_id: str, timeout_s: float = 30.0) -> tuple[int, dict, Any]:
    body = {"ids": [record_id], "embeddings": [[1.0, float(len(record_id))]]}
    return http("POST", node.url + f"{SCOPE}/collections/{collection_id}/add", body, timeout_s=timeout_s,
                headers={"X-Raftchroma-Request-Id": f"{record_id}-{uuid.uuid4().hex}"})


def write(node: NodeProcess, collection_id: str, record_id: str) -> int:
    """An acknowledged write; its log index."""
    status, headers, body = add_record(node, collection_id, record_id)
    assert status == 201, body  # Chroma's answer to an add
    return int(headers["X-Raftchroma-Index"])


def get_ids(node: NodeProcess, collection_id: str, ids: list[str], headers: dict[str, str]) -> list[str]:
    status, _, body = http("POST", node.url + f"{SCOPE}/collections/{collection_id}/get",
                           {"ids": ids, "include": []}, headers=headers, timeout_s=30)
    assert status == 200, body
    return sorted(body["ids"])


def digests(cluster: Cluster, among: list[str], min_index: int) -> dict[str, Any]:
    """Each node's digest once it has applied `min_index` (collections and names, not the index)."""
    views = {}
    for node_id in among:
        status, _, body = http("GET", cluster.node(node_id).url + "/raftchroma/digest",
                               headers={**STALE, "X-Raftchroma-Min-Index": str(min_index)}, timeout_s=60)
        assert status == 200, body
        views[node_id] = (body["collections"], body["names"])
    return views


def assert_converged(cluster: Cluster, among: list[str], collection_id: str, acked: list[str], leader: str) -> None:
    """A last write through the leader, then on every node of `among` at that index: every
    acknowledged record present and the same digest."""
    index = write(cluster.node(leader), collection_id, f"last-{uuid.uuid4().hex[:6]}")
    for node_id in among:
        held = get_ids(cluster.node(node_id), collection_id, acked, {**STALE, "X-Raftchroma-Min-Index": str(index)})
        assert held == sorted(acked), f"{node_id} lacks {sorted(set(acked) - set(held))}"
    views = digests(cluster, among, index)
    assert views[among[0]][0], "the digest lists no collection"
    assert all(v == views[among[0]] for v in views.values()), views


class Writer(threading.Thread):
    """Single-record adds through one node, one after another, each with its own request id;
    records every acknowledged id. Failures (a change in flight, a timeout) are counted, not
    retried: only acknowledged writes are promised."""

    def __init__(self, node: NodeProcess, collection_id: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.node, self.collection_id, self.prefix = node, collection_id, prefix
        self.acked: list[str] = []
        self.errors: list[Any] = []
        self._halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._halt.is_set():
            record_id = f"{self.prefix}{i}"
            i += 1
            try:
                status, _, body = add_record(self.node, self.collection_id, record_id)
            except OSError as exc:
                self.errors.append(repr(exc))
                continue
            if status == 201:
                self.acked.append(record_id)
            else:
                self.errors.append((status, body))
            self._halt.wait(0.02)  # pacing only: a steady load, not a CPU hog on a shared CI box

    def acked_count_beyond(self, count: int, timeout_s: float = 60.0) -> None:
        wait_for(lambda: len(self.acked) > count, timeout_s, f"writes acknowledged beyond {count}")

    def stop(self) -> list[str]:
        self._halt.set()
        self.join(timeout=60)
        assert not self.is_alive()
        return list(self.acked)


def start_joiner(cluster: Cluster, node_id: str) -> NodeProcess:
    """Start `node_id` with --join and wait until its Raft process reports: on its every status
    until then, it is neither a member nor a voter (it has not been added)."""
    node = cluster.new_node(node_id)
    cluster.start(node_id, args=("--join",))

    def reported() -> bool:
        status = node.status()
        if status is None:
            return False
        assert (status["member"], status["voter"]) == (False, False), status
        return status["role"] != "unknown"
    wait_for(reported, 60, f"{node_id}'s Raft process to report")
    status = node.answered_status()
    assert (status["role"], status["leader"]) == ("follower", None), status
    # Until it is added, its bootstrap: cluster.toml's nodes but itself (as of its first start).
    assert sorted(m["id"] for m in status["members"]) == sorted(n for n in cluster.nodes if n != node_id), status
    return node


# ------------------------------------------------------------------ the scenarios


@pytest.mark.slow
def test_a_node_added_under_write_load_catches_up_is_promoted_and_holds_every_acknowledged_write(
        cluster: Cluster) -> None:
    leader = cluster.leader()
    collection_id = create_collection(cluster.node(leader), "load")
    writer = Writer(cluster.node(leader), collection_id, "w")
    writer.start()
    try:
        writer.acked_count_beyond(20)
        start_joiner(cluster, "n4")
        reply = add(cluster, leader, "n4")
        assert {m["id"]: m["voter"] for m in reply["members"]} == {"n1": True, "n2": True, "n3": True, "n4": False}
        assert reply["index"] > 0
        wait_members(cluster, list(cluster.nodes), ["n1", "n2", "n3"], ["n4"])
        wait_caught_up(cluster, leader, "n4")
        acked_at_promotion = len(writer.acked)
        promoted = promote(cluster, leader, "n4")
        assert promoted["index"] > reply["index"]
        wait_members(cluster, list(cluster.nodes), ["n1", "n2", "n3", "n4"])
        writer.acked_count_beyond(acked_at_promotion + 20)  # writes go on, now committed by 3 of 4 voters
    finally:
        acked = writer.stop()
    assert writer.errors == [], f"writes through a stable leader failed during the changes: {writer.errors[:5]}"
    assert cluster.leader() == leader, "leadership moved during the test: the scenario was not the one intended"
    status = cluster.node("n4").answered_status()
    assert (status["member"], status["voter"], status["role"]) == (True, True, "follower"), status
    assert {members(cluster.node(n))["membership_index"] for n in cluster.nodes} == {promoted["index"]}
    assert_converged(cluster, list(cluster.nodes), collection_id, acked, leader)


@pytest.fixture(scope="module")
def api_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that only ask; each leaves the membership as it found it."""
    c = make_cluster(Path(tmp_path_factory.mktemp("api")), cluster_keys=CLUSTER_KEYS, raft_keys=RAFT_KEYS)
    try:
        start_cluster(c)
        yield c
    finally:
        c.stop_all()


@pytest.mark.slow
def test_promotion_is_refused_while_the_new_member_cannot_catch_up(api_cluster: Cluster) -> None:
    cluster = api_cluster
    leader = cluster.leader()
    node = cluster.new_node("n4")  # written into cluster.toml, never started: it cannot catch up
    try:
        promotion_refused(cluster, leader)
    finally:
        del cluster.nodes[node.node_id]  # the module's other test looks at the three members only


def promotion_refused(cluster: Cluster, leader: str) -> None:
    added = add(cluster, leader, "n4")
    wait_members(cluster, ["n1", "n2", "n3"], ["n1", "n2", "n3"], ["n4"])
    status, reply = change(cluster.node(leader), "POST", "/raftchroma/members/n4/promote")
    assert (status, reply) == (409, {"error": "MembershipChangeRefused",
                                     "message": "n4 is not connected to the leader; it cannot be promoted"})
    for node_id in ("n1", "n2", "n3"):
        assert voters_and_others(cluster.node(node_id)) == (["n1", "n2", "n3"], ["n4"])
        assert members(cluster.node(node_id))["membership_index"] == added["index"]
    assert cluster.node(leader).answered_status()["match_index"]["n4"] == 0
    removed = remove(cluster, leader, "n4")  # a non-voter goes as it came
    assert [m["id"] for m in removed["members"]] == ["n1", "n2", "n3"]
    wait_members(cluster, ["n1", "n2", "n3"], ["n1", "n2", "n3"])


@pytest.mark.slow
def test_membership_requests_are_validated_and_only_the_leader_takes_them(api_cluster: Cluster) -> None:
    cluster = api_cluster
    leader = cluster.leader()
    follower = next(n for n in sorted(cluster.nodes) if n != leader)
    before = members(cluster.node(leader))
    url = cluster.node(leader).url + "/raftchroma/members"
    n2 = address(cluster.node("n2"))
    refusals = [
        ({**n2, "raft": "127.0.0.1:1", "http": "127.0.0.1:2"}, "n2 is already a member"),
        ({**n2, "id": "n9", "http": "127.0.0.1:2"}, "n2 already uses that address"),
        ({**n2, "id": "n9", "raft": "127.0.0.1:1"}, "n2 already uses that address"),
        ({"id": "n9", "raft": "nowhere", "http": "127.0.0.1:2"}, "a new member needs its Raft and HTTP addresses "
                                                                  "as host:port"),
    ]
    for body, message in refusals:
        status, reply = change(cluster.node(leader), "POST", "/raftchroma/members", body)
        assert (status, reply) == (409, {"error": "MembershipChangeRefused", "message": message}), body
    expected_400 = 'expected {"id": "<node id>", "raft": "<host:port>", "http": "<host:port>"}'
    for body in ({"id": "n9", "raft": "127.0.0.1:1"}, {**n2, "id": "n9", "voter": True}, {**n2, "id": 9}, ["n9"]):
        status, _, reply = http("POST", url, body)
        assert (status, reply) == (400, {"error": "InvalidArgumentError", "message": expected_400}), body
    status, _, reply = http("POST", url, raw=b"{not json")
    assert (status, reply["error"]) == (400, "InvalidArgumentError"), reply
    for status, reply in (change(cluster.node(leader), "DELETE", "/raftchroma/members/n9"),
                          change(cluster.node(leader), "POST", "/raftchroma/members/n9/promote"),
                          change(cluster.node(leader), "POST", "/raftchroma/members/n2/promote")):
        assert (status, reply["error"]) == (409, "MembershipChangeRefused"), reply
    new_member = {"id": "n9", "raft": "127.0.0.1:1", "http": "127.0.0.1:2"}
    for method, path, body in (("POST", "/raftchroma/members", new_member),
                               ("POST", "/raftchroma/members/n2/promote", None),
                               ("DELETE", f"/raftchroma/members/{leader}", None)):
        status, _, reply = http(method, cluster.node(follower).url + path, body)
        assert (status, reply["error"]) == (409, "NotLeader"), reply
        assert reply["message"] == f"{follower} is not the leader (the leader is {leader}); ask the leader"
    for node_id in cluster.nodes:
        assert members(cluster.node(node_id))["members"] == before["members"]
        assert members(cluster.node(node_id))["membership_index"] == before["membership_index"]


@pytest.mark.slow
def test_a_removed_follower_is_gone_and_the_leader_is_removed_only_after_handing_over(cluster: Cluster) -> None:
    leader = cluster.leader()
    # PySyncObj lets a node campaign only while it is connected to someone, and only the node with
    # the greater address dials: the removed node must be one that dials a survivor (which then
    # drops it), else it would never campaign and the check below would prove nothing.
    follower = max((n for n in cluster.nodes if n != leader), key=lambda n: f"127.0.0.1:{cluster.node(n).raft_port}")
    other = next(n for n in cluster.nodes if n not in (leader, follower))
    term = cluster.node(leader).answered_status()["term"]
    collection_id = create_collection(cluster.node(leader), "removal")
    acked = [f"a{i}" for i in range(5)]
    for record_id in acked:
        write(cluster.node(leader), collection_id, record_id)
    removed = remove(cluster, leader, follower)
    assert sorted(m["id"] for m in removed["members"]) == sorted([leader, other])
    survivors = [leader, other]
    wait_members(cluster, survivors, survivors)
    # The removed node is still running and never hears of its removal (the leader stopped
    # replicating to it when the entry entered its log): it campaigns, and the survivors ignore it
    # (they drop its connections, and would not count its vote), so their leader and term stay.
    wait_for(lambda: (cluster.node(follower).status() or {}).get("term", 0) > term + 1, 60,
             f"the removed {follower} to campaign (twice)")
    for i in range(10):
        via = cluster.node(survivors[i % 2])
        write(via, collection_id, f"b{i}")
        acked.append(f"b{i}")
    assert cluster.leader(among=survivors) == leader
    assert {cluster.node(n).answered_status()["term"] for n in survivors} == {term}
    assert_converged(cluster, survivors, collection_id, acked, leader)

    status, reply = change(cluster.node(leader), "DELETE", f"/raftchroma/members/{leader}")
    assert (status, reply) == (409, {"error": "MembershipChangeRefused",
                                     "message": f"{leader} is the leader; transfer leadership first, then remove it"})
    assert voters_and_others(cluster.node(leader)) == (sorted(survivors), [])
    status, _, reply = http("POST", cluster.node(leader).url + "/raftchroma/transfer-leader", {"to": other})
    assert (status, reply) == (200, {"leader": other})
    assert cluster.leader(among=survivors) == other
    remove(cluster, other, leader)
    wait_members(cluster, [other], [other])
    write(cluster.node(other), collection_id, "c0")  # a cluster of one voter commits alone
    acked.append("c0")
    assert_converged(cluster, [other], collection_id, acked, other)


@pytest.mark.slow
def test_a_dead_node_is_replaced_while_writes_go_on(cluster: Cluster) -> None:
    leader = cluster.leader()
    dead, other = sorted(n for n in cluster.nodes if n != leader)
    collection_id = create_collection(cluster.node(leader), "replace")
    writer = Writer(cluster.node(leader), collection_id, "w")
    writer.start()
    try:
        writer.acked_count_beyond(10)
        cluster.kill(dead)
        acked_at_kill = len(writer.acked)
        writer.acked_count_beyond(acked_at_kill + 10)  # two of three voters still commit
        remove(cluster, leader, dead)
        wait_members(cluster, [leader, other], [leader, other])
        start_joiner(cluster, "n4")
        add(cluster, leader, "n4")
        wait_caught_up(cluster, leader, "n4")
        promote(cluster, leader, "n4")
        members_now = sorted([leader, other, "n4"])
        wait_members(cluster, members_now, members_now)
        acked_at_promotion = len(writer.acked)
        writer.acked_count_beyond(acked_at_promotion + 10)
    finally:
        acked = writer.stop()
    assert writer.errors == [], f"writes through a stable leader failed: {writer.errors[:5]}"
    assert cluster.leader(among=members_now) == leader
    assert_converged(cluster, members_now, collection_id, acked, leader)
    # n4 now counts: with `other` gone too, the leader and n4 are 2 of 3 voters and still commit.
    cluster.kill(other)
    write(cluster.node(leader), collection_id, "after-other-died")
    assert_converged(cluster, [leader, "n4"], collection_id, [*acked, "after-other-died"], leader)


def restart_all(cluster: Cluster, joiner_args: tuple[str, ...]) -> str:
    """SIGKILL every node, start them again (the joiner with `joiner_args`), return the leader."""
    for node_id in cluster.nodes:
        cluster.kill(node_id)
    for node_id in cluster.nodes:
        cluster.start(node_id, args=joiner_args if node_id == "n4" else ())
    return cluster.leader(timeout_s=90)


SNAPSHOT_MIN_ENTRIES = 30


@pytest.fixture
def compacting_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(tmp_path, cluster_keys=CLUSTER_KEYS,
                     raft_keys=f"{RAFT_KEYS}\nsnapshot_min_entries = {SNAPSHOT_MIN_ENTRIES}")
    try:
        start_cluster(c)
        yield c
    finally:
        c.stop_all()


def write_many(cluster: Cluster, leader: str, collection_id: str, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(count)]
    for record_id in ids:
        write(cluster.node(leader), collection_id, record_id)
    return ids


@pytest.mark.slow
def test_the_membership_survives_a_restart_of_every_node(compacting_cluster: Cluster) -> None:
    """From the log, and from the snapshots once the log is compacted past the changes; the
    joiner catches up by a snapshot taken before it was added."""
    cluster = compacting_cluster
    leader = cluster.leader()
    collection_id = create_collection(cluster.node(leader), "restart")
    acked = write_many(cluster, leader, collection_id, "a", 2 * SNAPSHOT_MIN_ENTRIES + 10)
    wait_for(lambda: cluster.node(leader).answered_status()["snapshot_index"] > 0, 60, "the leader to compact its log")
    start_joiner(cluster, "n4")
    add(cluster, leader, "n4")
    wait_caught_up(cluster, leader, "n4")
    assert cluster.node("n4").answered_status()["snapshot_installs"] == 1
    promoted = promote(cluster, leader, "n4")
    everyone = ["n1", "n2", "n3", "n4"]
    wait_members(cluster, everyone, everyone)

    def membership_restored() -> None:
        wait_members(cluster, everyone, everyone)
        for node_id in everyone:
            status = cluster.node(node_id).answered_status()
            # The index of the promotion, from the log or, once compacted, from the snapshot's record.
            assert (status["member"], status["voter"], status["membership_index"]) == \
                (True, True, promoted["index"]), (node_id, status)

    # Again with --join (as a service unit would), then without: either way membership.json, the
    # log and the snapshot decide, not the flag.
    leader = restart_all(cluster, ("--join",))
    assert leader in everyone
    membership_restored()
    acked += write_many(cluster, leader, collection_id, "b", 2 * SNAPSHOT_MIN_ENTRIES + 10)
    wait_for(lambda: all(cluster.node(n).answered_status()["snapshot_index"] > promoted["index"] for n in everyone), 60,
             "every node to compact its log past the promotion")
    leader = restart_all(cluster, ())
    membership_restored()
    assert {cluster.node(n).answered_status()["membership_index"] for n in everyone} == {promoted["index"]}  # snapshots
    acked += write_many(cluster, leader, collection_id, "c", 3)
    assert_converged(cluster, everyone, collection_id, acked, leader)


@pytest.fixture
def replica_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """n1 and n2 voters, n3 a non-voting read replica from its first start (`voter = false`).
    Two voters, not three: with one voter down, the survivor and the replica would be 2 of 3 if
    the replica counted (a quorum) and are 1 of 2 voters as it must be (none); with three voters
    and two down, 2 of 4 is no quorum either way and would prove nothing. Writes give up after
    3 s, so that a write without a quorum is answered quickly."""
    c = make_cluster(tmp_path, size=3, non_voters=("n3",), raft_keys=RAFT_KEYS,
                     cluster_keys="write_timeout_s = 3.0\nread_timeout_s = 20.0")
    try:
        start_cluster(c)
        yield c
    finally:
        c.stop_all()


def replica_follows(replica: NodeProcess, term: int) -> None:
    """The replica is a follower that never led nor campaigned: its term is the last leader's."""
    status = replica.answered_status()
    assert (status["role"], status["voter"], status["member"], status["term"]) == \
        ("follower", False, True, term), status


def not_acknowledged(cluster: Cluster, via: str, collection_id: str, record_id: str, expected: tuple[int, str]) -> None:
    status, _, body = add_record(cluster.node(via), collection_id, record_id)
    assert (status, body["error"]) == expected, (via, status, body)


@pytest.mark.slow
def test_a_non_voting_replica_serves_reads_forwards_writes_and_never_counts_toward_a_quorum(
        replica_cluster: Cluster) -> None:
    cluster = replica_cluster
    replica = cluster.node("n3")
    leader = cluster.leader()
    assert leader in ("n1", "n2")
    follower = "n2" if leader == "n1" else "n1"
    wait_members(cluster, list(cluster.nodes), ["n1", "n2"], ["n3"])
    assert {members(cluster.node(n))["membership_index"] for n in cluster.nodes} == {0}  # the bootstrap's
    term = cluster.node(leader).answered_status()["term"]
    replica_follows(replica, term)

    collection_id = create_collection(replica, "replica")  # forwarded to the leader
    index = write(replica, collection_id, "via-replica")
    assert get_ids(cluster.node(leader), collection_id, ["via-replica"], LIN) == ["via-replica"]
    write(cluster.node(leader), collection_id, "via-leader")
    acked = ["via-leader", "via-replica"]
    assert get_ids(replica, collection_id, acked, {}) == acked  # cluster.toml's default: linearizable
    assert get_ids(replica, collection_id, acked, LIN) == acked
    after = write(cluster.node(leader), collection_id, "min-index")
    acked.append("min-index")
    assert after > index
    assert get_ids(replica, collection_id, ["min-index"], {**STALE, "X-Raftchroma-Min-Index": str(after)}) == \
        ["min-index"]
    wait_for(lambda: get_ids(replica, collection_id, acked, STALE) == sorted(acked), 30, "a stale read on the replica")
    replica_follows(replica, term)

    # The other voter dies: the leader is connected to the replica, which does not make a quorum.
    cluster.kill(follower)
    wait_for(lambda: not cluster.node(leader).answered_status()["has_quorum"], 30, f"{leader} to see it has no quorum")
    # Through the replica: forwarded to the leader, which appends it and cannot commit it (it may
    # commit once the voter is back: indefinite). Through the leader: not proposed (definite).
    not_acknowledged(cluster, "n3", collection_id, "maybe-a", (504, "WriteOutcomeUnknown"))
    not_acknowledged(cluster, leader, collection_id, "never-a", (503, "NoQuorum"))
    replica_follows(replica, term)

    cluster.start(follower)
    leader = cluster.leader(timeout_s=60)
    assert leader in ("n1", "n2")
    write(replica, collection_id, "quorum-again")
    acked.append("quorum-again")
    term = cluster.node(leader).answered_status()["term"]
    replica_follows(replica, term)

    # The leader dies: the surviving voter campaigns and, with no vote from the replica, cannot win.
    survivor = "n2" if leader == "n1" else "n1"
    cluster.kill(leader)
    # A non-voter never reaches an election timeout, so it may go on naming the last leader it
    # heard from (as etcd's learners do); what matters is that it knows it is not connected to it.
    wait_for(lambda: cluster.node(survivor).answered_status()["term"] > term + 1, 60, f"{survivor} to campaign (twice)")
    assert cluster.node(survivor).answered_status()["role"] == "candidate"
    assert not replica.answered_status()["leader_connected"]
    not_acknowledged(cluster, "n3", collection_id, "never-b1", (503, "NoQuorum"))
    not_acknowledged(cluster, survivor, collection_id, "never-b2", (503, "NoQuorum"))
    replica_follows(replica, term)

    cluster.start(leader)
    leader = cluster.leader(timeout_s=60)
    write(replica, collection_id, "back")
    acked.append("back")
    held = get_ids(replica, collection_id, [*acked, "never-a", "never-b1", "never-b2", "maybe-a"], LIN)
    assert [i for i in held if i != "maybe-a"] == sorted(acked)
    assert_converged(cluster, list(cluster.nodes), collection_id, acked, leader)
    status = replica.answered_status()
    assert (status["role"], status["voter"], status["member"]) == ("follower", False, True), status
    for node in cluster.nodes.values():  # "raft leader changed: ... -> n3 (...)" on no node, ever
        assert " -> n3 (" not in node.log_path.read_text(errors="replace"), node.node_id
