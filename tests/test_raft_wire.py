"""Hostile peers at a real node's Raft port (raftchroma/wire.py): PySyncObj's own pickled frames,
a forged member, a wrong secret, non-member and read-only claims, a huge length header, a
flood of silent connections. No code runs, the term does not move, the Raft process's memory
stays bounded, and the cluster keeps serving writes."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import threading
import zlib
from pathlib import Path

import psutil
import pytest

from raftchroma import membership, wire
from raftchroma.config import load_config
from raftchroma.replication import SETTINGS_HELLO, _forwardable, _pickle_is_inert
from tests.harness import Cluster, wait_for
from tests.raft_peer import WirePeer, closed_by_node

SECRET = b"test-secret"  # tests/harness.py's cluster secret
CLOSE_TIMEOUT_S = 15.0


class Marker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.path),))


def pysyncobj_frame(message: object) -> bytes:
    """A frame of PySyncObj 0.3.17's own wire: length, then a zlib-compressed pickle."""
    data = zlib.compress(pickle.dumps(message), 3)
    return struct.pack("i", len(data)) + data


def raft_process(cluster: Cluster, node_id: str) -> psutil.Process:
    children = psutil.Process(cluster.node(node_id).process.pid).children(recursive=True)
    assert len(children) == 1, children
    return children[0]


def assert_cluster_unmoved(cluster: Cluster, term_before: int, leader_before: str) -> None:
    statuses = {n: cluster.node(n).answered_status() for n in cluster.nodes}
    assert {s["term"] for s in statuses.values()} == {term_before}, (
        {n: {k: s[k] for k in ("term", "role", "leader", "late_ticks", "longest_tick_overrun_s")}
         for n, s in statuses.items()}, cluster.log_tail())
    assert cluster.leader() == leader_before
    col = cluster.node("n1").client().get_or_create_collection("after-hostile-peer")
    col.upsert(ids=["x"], embeddings=[[1.0, 2.0]])
    assert col.get(ids=["x"])["ids"] == ["x"]


def test_pickled_frames_run_no_code_and_move_no_term(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    term, leader = cluster.node("n1").answered_status()["term"], cluster.leader()
    impersonated = f"127.0.0.1:{cluster.node('n2').raft_port}"
    forged = {"type": "append_entries", "term": 10 ** 6, "entries": [], "commit_index": 0,
              "prevLogIdx": 0, "prevLogTerm": 0, "payload": Marker(str(marker))}
    with socket.create_connection(("127.0.0.1", cluster.node("n1").raft_port), timeout=10) as conn:
        conn.sendall(pysyncobj_frame(Marker(str(marker))) + pysyncobj_frame(impersonated) + pysyncobj_frame(forged))
        assert closed_by_node(conn, CLOSE_TIMEOUT_S)
    assert not marker.exists()
    assert_cluster_unmoved(cluster, term, leader)


def fingerprint(cluster: Cluster) -> str:
    return load_config(cluster.config_path).settings_fingerprint


def raft_address(cluster: Cluster, node_id: str) -> str:
    return f"127.0.0.1:{cluster.node(node_id).raft_port}"


def followers_by_address(cluster: Cluster, leader: str) -> list[str]:
    """The two followers, lower Raft address first. PySyncObj dials by address order (the higher
    address dials the lower), and the link between two followers carries nothing between
    elections, so a test may pose as one of them without disturbing the cluster."""
    return sorted((n for n in cluster.nodes if n != leader), key=lambda n: raft_address(cluster, n))


def test_a_hello_from_a_member_this_node_dials_itself_is_refused(cluster: Cluster) -> None:
    """Even with the secret: a node dials the members with lower addresses itself, so a hello
    claiming one of them on an incoming connection is refused. Accepted, it would replace the
    node's outgoing connection in PySyncObj's table, and reconnects through that object never
    send a hello: the member would drop every one and the link would churn for good."""
    term, leader = cluster.node("n1").answered_status()["term"], cluster.leader()
    claimed, target = followers_by_address(cluster, leader)  # the target dials the claimed member
    node = cluster.node(target)
    log_size = node.log_path.stat().st_size
    peer = WirePeer(node.raft_port, SECRET)
    try:
        peer.send((SETTINGS_HELLO, raft_address(cluster, claimed), fingerprint(cluster)))
        assert closed_by_node(peer.sock, CLOSE_TIMEOUT_S)
    finally:
        peer.close()
    refused = f"refusing an incoming Raft connection that claims to be {raft_address(cluster, claimed)}".encode()
    wait_for(lambda: refused in node.log_path.read_bytes()[log_size:], 20, "the refusal to be logged")
    assert_cluster_unmoved(cluster, term, leader)


def test_a_member_cannot_smuggle_a_pickle_through_a_chunked_entry(cluster: Cluster, tmp_path: Path) -> None:
    """Even with the secret: PySyncObj unpickles the pieces of a chunked entry; we never send one and
    drop one on receipt."""
    marker = tmp_path / "pwned"
    term, leader = cluster.node("n1").answered_status()["term"], cluster.leader()
    target, claimed = followers_by_address(cluster, leader)  # the target never dials the claimed member
    node = cluster.node(target)
    log_size = node.log_path.stat().st_size
    peer = WirePeer(node.raft_port, SECRET)
    try:
        peer.send((SETTINGS_HELLO, raft_address(cluster, claimed), fingerprint(cluster)))
        for transmission in ("start", "finish"):
            peer.send({"type": "append_entries", "transmission": transmission, "data": pickle.dumps(Marker(str(marker))),
                       "term": term, "commit_index": 0, "prevLogIdx": 0, "prevLogTerm": 0})
        wait_for(lambda: b"dropping a malformed message" in node.log_path.read_bytes()[log_size:], 20,
                 "the node to drop the chunked entry")
    finally:
        peer.close()
    assert not marker.exists()
    assert_cluster_unmoved(cluster, term, leader)


def test_a_leader_appends_only_regular_entries_that_a_peer_forwards() -> None:
    """A membership change is proposed by the leader itself after membership.plan_change; a
    forwarded one (PySyncObj would append it as it is) is dropped, as are PySyncObj's other kinds."""
    assert _forwardable({"type": "apply_command", "command": b"\x00" + b"\x81\xa1v\x03"})
    assert not _forwardable({"type": "apply_command", "command": membership.encode_entry(
        membership.Membership.of([membership.Member("n9", "h:1", "h:2")]), {"op": "add", "id": "n9"})})
    assert not _forwardable({"type": "apply_command", "command": b"\x01" + pickle.dumps(7)})
    assert not _forwardable({"type": "apply_command", "command": "\x00text"})


def test_log_entries_are_only_unpickled_when_they_hold_plain_data() -> None:
    assert _pickle_is_inert(pickle.dumps((0, (b"entry",))))  # the old entry format: replays
    assert _pickle_is_inert(pickle.dumps(7))  # PySyncObj's VERSION command
    assert not _pickle_is_inert(pickle.dumps(Marker("/nonexistent/x")))
    assert not _pickle_is_inert(b"\x80\x04garbage")


def test_a_wrong_secret_is_refused_before_anything_is_read(cluster: Cluster) -> None:
    node = cluster.node("n3")
    term, leader = node.answered_status()["term"], cluster.leader()
    peer = WirePeer(node.raft_port, b"not-the-secret", verify_node=False)
    try:
        try:
            peer.send((SETTINGS_HELLO, f"127.0.0.1:{cluster.node('n1').raft_port}", fingerprint(cluster)))
            peer.send({"type": "request_vote", "term": 10 ** 6, "last_log_index": 10 ** 9, "last_log_term": 10 ** 6})
        except (BrokenPipeError, ConnectionResetError):
            pass  # already closed: the node refused the first frame
        assert closed_by_node(peer.sock, CLOSE_TIMEOUT_S)
        assert b"authentication failed" in node.log_path.read_bytes()
    finally:
        peer.close()
    assert_cluster_unmoved(cluster, term, leader)


@pytest.mark.parametrize("claim", ["127.0.0.1:1", "readonly", ["status"], ("raftchroma-hello", "127.0.0.1:1", "x")])
def test_a_peer_with_the_secret_claiming_no_member_address_is_dropped(cluster: Cluster, claim: object) -> None:
    """Non-member addresses, PySyncObj's read-only peer and its utility commands (syncobj_admin):
    dropped before the connection is tied to any node, so the leader never ticks for them."""
    node = cluster.node(cluster.leader())
    term, leader = node.answered_status()["term"], cluster.leader()
    peer = WirePeer(node.raft_port, SECRET)
    try:
        peer.send(claim)
        assert closed_by_node(peer.sock, CLOSE_TIMEOUT_S)
    finally:
        peer.close()
    assert_cluster_unmoved(cluster, term, leader)


def test_a_huge_length_header_is_refused_before_it_is_buffered(cluster: Cluster) -> None:
    node = cluster.node("n1")
    term, leader = node.answered_status()["term"], cluster.leader()
    child = raft_process(cluster, "n1")
    rss_before = child.memory_info().rss
    sent = {"bytes": 0}

    def stream(conn: socket.socket) -> None:
        block = bytes(1 << 20)
        try:
            for _ in range(512):  # up to 512 MiB, if the node kept reading
                conn.sendall(block)
                sent["bytes"] += len(block)
        except OSError:
            pass

    with socket.create_connection(("127.0.0.1", node.raft_port), timeout=10) as conn:
        conn.sendall(wire.MAGIC + os.urandom(wire.NONCE_BYTES) + (0xFFFFFFF0).to_bytes(4, "big"))
        writer = threading.Thread(target=stream, args=(conn,), daemon=True)
        writer.start()
        writer.join(60)
        assert not writer.is_alive(), "the node kept reading a frame it should have refused"
    assert sent["bytes"] < 64 << 20, f"the node accepted {sent['bytes']} bytes of a refused frame"
    assert child.memory_info().rss - rss_before < 64 << 20
    assert_cluster_unmoved(cluster, term, leader)


def test_an_authenticated_frame_above_the_largest_legal_message_is_refused(cluster: Cluster) -> None:
    node = cluster.node("n1")
    peer = WirePeer(node.raft_port, SECRET)
    try:
        peer.sock.sendall((1 << 31).to_bytes(4, "big") + bytes(1024))
        assert closed_by_node(peer.sock, CLOSE_TIMEOUT_S)
    finally:
        peer.close()


def test_a_flood_of_silent_connections_is_dropped_and_members_still_connect(cluster: Cluster) -> None:
    """The unauthenticated slots are full of silent connections; a member still gets in (the
    longest-waiting one is dropped for it), and every silent one is closed after the handshake
    timeout."""
    node = cluster.node("n1")
    term, leader = node.answered_status()["term"], cluster.leader()
    conns = [socket.create_connection(("127.0.0.1", node.raft_port), timeout=10) for _ in range(2 * wire.MAX_UNAUTHENTICATED)]
    try:
        peer = WirePeer(node.raft_port, SECRET)  # while the flood holds every slot
        peer.close()
        for conn in conns:
            assert closed_by_node(conn, wire.HANDSHAKE_TIMEOUT_S + CLOSE_TIMEOUT_S)
    finally:
        for conn in conns:
            conn.close()
    assert_cluster_unmoved(cluster, term, leader)
