"""Fast tests of the harness pieces, without a cluster: the nemesis against a fake cluster (signals,
partitions, disk faults), the status monitor, phase stats, the client's definite / indefinite
split, the rate limiter."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jepsen_lite.client import ClientError, NodeClient
from jepsen_lite.history import pair_ops
from jepsen_lite.nemesis import Fault, Nemesis, schedule
from jepsen_lite.recorder import Recorder
from jepsen_lite.runner import RateLimiter
from jepsen_lite.stats import fault_intervals_ns, phase_stats
from jepsen_lite.status_monitor import StatusMonitor, load_samples


class FakeCluster:
    """Records the signals a nemesis would send; `leader` is whatever the test sets."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = {n: None for n in nodes}
        self.members = list(nodes)
        self.calls: list[tuple[str, str]] = []
        self.blocks: list[tuple[str, list[str]]] = []
        self.disk_faults: list[tuple[str, bool, bool]] = []
        self.unreachable: set[str] = set()
        self.current_leader: str | None = "n2"

    def leader(self) -> str | None:
        return self.current_leader

    def block(self, node_id: str, peers: list[str]) -> bool:
        self.blocks.append((node_id, sorted(peers)))
        return node_id not in self.unreachable

    def set_faults(self, node_id: str, disk_full: bool, apply_fails: bool) -> bool:
        self.disk_faults.append((node_id, disk_full, apply_fails))
        return node_id not in self.unreachable

    def __getattr__(self, name: str):  # kill, pause, resume, stop, start_if_down
        return lambda node_id: self.calls.append((name, node_id))


def _run(faults: list[Fault], cluster: FakeCluster, recorder: Recorder) -> Nemesis:
    nemesis = Nemesis(cluster, recorder, faults, heal_unblock_timeout_s=0.3)  # type: ignore[arg-type]
    nemesis.start(time.monotonic())
    time.sleep(faults[-1].end_s + 0.3)  # the fake acts at once; let the schedule play out
    nemesis.heal()
    return nemesis


def test_nemesis_applies_and_undoes_each_fault_and_records_it() -> None:
    cluster, recorder = FakeCluster(["n1", "n2", "n3"]), Recorder()
    faults = [Fault("pause", "leader", ("n1",), 0.0, 0.05), Fault("kill", "majority", ("n1", "n3"), 0.06, 0.1)]
    nemesis = _run(faults, cluster, recorder)
    assert nemesis.error is None
    assert cluster.calls[:6] == [("pause", "n2"), ("resume", "n2"), ("kill", "n1"), ("kill", "n3"),
                                 ("start_if_down", "n1"), ("start_if_down", "n3")]
    heal = cluster.calls[6:]
    assert sorted(heal) == sorted([(f, n) for n in ("n1", "n2", "n3") for f in ("resume", "start_if_down")])
    fs = [(op.f, op.type) for op in recorder.ops()]
    assert fs == [("pause-start", "invoke"), ("pause-start", "ok"), ("pause-stop", "invoke"), ("pause-stop", "ok"),
                  ("kill-start", "invoke"), ("kill-start", "ok"), ("kill-stop", "invoke"), ("kill-stop", "ok"),
                  ("heal", "invoke"), ("heal", "ok")]


def test_leader_fault_falls_back_to_the_seeded_node_without_a_leader() -> None:
    cluster, recorder = FakeCluster(["n1", "n2", "n3"]), Recorder()
    cluster.current_leader = None
    _run([Fault("restart", "leader", ("n3",), 0.0, 0.02)], cluster, recorder)
    assert cluster.calls[:2] == [("stop", "n3"), ("start_if_down", "n3")]


def test_partition_blocks_both_sides_of_each_cut_link_then_unblocks_and_records_the_map() -> None:
    cluster, recorder = FakeCluster(["n1", "n2", "n3"]), Recorder()
    cluster.unreachable = {"n3"}  # e.g. down: recorded, not fatal
    faults = [Fault("partition", "leader", ("n1", "n2", "n3"), 0.0, 0.05),
              Fault("partition", "bridge", ("n3", "n1", "n2"), 0.06, 0.1)]
    nemesis = _run(faults, cluster, recorder)
    assert nemesis.error is None
    assert cluster.calls == [(f, n) for n in ("n1", "n2", "n3") for f in ("resume", "start_if_down")]
    assert cluster.blocks[:3] == [("n1", ["n2"]), ("n2", ["n1", "n3"]), ("n3", ["n2"])]  # n2 leads
    assert cluster.blocks[3:6] == [("n1", []), ("n2", []), ("n3", [])]
    assert cluster.blocks[6:9] == [("n1", []), ("n2", ["n3"]), ("n3", ["n2"])]  # n1 bridges
    assert cluster.blocks[9:12] == [("n1", []), ("n2", []), ("n3", [])]
    assert ("n1", []) in cluster.blocks[12:] and ("n2", []) in cluster.blocks[12:], "heal unblocks every node"
    records = recorder.ops()
    assert [(op.f, op.type) for op in records][:4] == [("partition-start", "invoke"), ("partition-start", "ok"),
                                                       ("partition-stop", "invoke"), ("partition-stop", "ok")]
    start = records[1].value
    assert (start["mode"], start["leader"], start["unreached"]) == ("leader", "n2", ["n3"])
    assert start["blocked"] == {"n1": ["n2"], "n2": ["n1", "n3"], "n3": ["n2"]}
    assert records[1].node == "n1-n2,n2-n3"
    heal = [op for op in records if op.f == "heal" and op.type == "ok"][0]
    assert heal.value["unreached"] == ["n3"] and heal.value["blocked"] == {"n1": [], "n2": [], "n3": []}


def test_disk_faults_are_set_on_their_targets_lifted_at_the_end_and_cleared_everywhere_at_heal() -> None:
    cluster, recorder = FakeCluster(["n1", "n2", "n3"]), Recorder()
    cluster.unreachable = {"n3"}
    faults = [Fault("disk-full", "leader", ("n1",), 0.0, 0.05),
              Fault("apply-fail", "majority", ("n1", "n3"), 0.06, 0.1)]
    nemesis = _run(faults, cluster, recorder)
    assert nemesis.error is None
    assert cluster.disk_faults[:6] == [("n2", True, False), ("n2", False, False),  # n2 leads
                                       ("n1", False, True), ("n3", False, True), ("n1", False, False), ("n3", False, False)]
    assert {n for n, full, fails in cluster.disk_faults[6:] if not full and not fails} == {"n1", "n2", "n3"}, \
        "heal clears every node"
    records = [op for op in recorder.ops() if op.type == "ok"]
    assert [op.f for op in records] == ["disk-full-start", "disk-full-stop", "apply-fail-start", "apply-fail-stop", "heal"]
    assert records[0].value == {"targets": ["n2"], "mode": "leader", "unreached": [],
                                "faults": {"disk_full": True, "apply_fails": False}}
    assert records[2].node == "n1,n3" and records[2].value["unreached"] == ["n3"]
    assert records[4].value["faults_unreached"] == ["n3"]
    assert len(fault_intervals_ns(recorder.ops())) == 2


def test_heal_leaves_disk_faults_alone_when_the_schedule_has_none() -> None:
    cluster, recorder = FakeCluster(["n1", "n2", "n3"]), Recorder()
    _run([Fault("pause", "one", ("n1",), 0.0, 0.02)], cluster, recorder)
    assert cluster.disk_faults == []
    heal = [op for op in recorder.ops() if op.f == "heal" and op.type == "ok"][0]
    assert "faults_unreached" not in heal.value and "faults" not in heal.value


def test_disk_fault_schedules_are_seeded_and_size_their_targets() -> None:
    nodes = ["n1", "n2", "n3", "n4", "n5"]
    first = schedule(11, ["disk-full", "apply-fail"], 120.0, nodes)
    assert first == schedule(11, ["apply-fail", "disk-full"], 120.0, nodes)
    assert {f.kind for f in first} == {"disk-full", "apply-fail"}
    assert {f.mode for f in first} == {"one", "leader", "majority"}
    assert all(len(f.targets) == (3 if f.mode == "majority" else 1) for f in first)
    assert schedule(11, ["kill", "pause"], 60.0, nodes) == schedule(11, ("pause", "kill"), 60.0, nodes)


def test_the_status_monitor_polls_every_node_and_counts_the_silent_ones(tmp_path: Path) -> None:
    answers = {"n1": {"pid": 1, "term": 2, "leader_changes": 1, "role": "leader", "leader": "n1", "x": 0},
               "n2": {"pid": 2, "term": 2, "leader_changes": 1, "role": "follower", "leader": "n1"}, "n3": None}
    monitor = StatusMonitor(["n1", "n2", "n3"], answers.get, interval_s=0.02)
    monitor.start()
    time.sleep(0.2)
    monitor.stop()
    samples = monitor.samples()
    assert {s["node"] for s in samples} == {"n1", "n2"} and monitor.unanswered["n3"] >= 3
    assert all(s["sent_ns"] <= s["time_ns"] for s in samples) and "x" not in samples[0]
    assert [s["time_ns"] for s in samples] == sorted(s["time_ns"] for s in samples)
    monitor.write(tmp_path)
    assert load_samples(tmp_path) == samples
    assert load_samples(tmp_path / "nowhere") is None


def test_phase_stats_split_ops_by_fault_intervals() -> None:
    recorder = Recorder()
    recorder.record(0, "n1", "add", None, "e1", "invoke")
    recorder.record(0, "n1", "add", None, "e1", "ok")
    with recorder.nemesis_op("kill-start", "n2"):
        pass
    recorder.record(1, "n2", "add", None, "e2", "invoke")
    recorder.record(1, "n2", "add", None, None, "fail", error="connection-refused")
    with recorder.nemesis_op("kill-stop", "n2"):
        pass
    recorder.record("final-n1", "n1", "final-read", None, None, "invoke")
    recorder.record("final-n1", "n1", "final-read", None, ["e1"], "ok")
    history = recorder.ops()
    nemesis = [op for op in history if op.process == "nemesis"]
    assert len(fault_intervals_ns(nemesis)) == 1
    stats = phase_stats(pair_ops(history), nemesis)
    assert (stats["quiet"]["ok"], stats["fault"]["fail"], stats["final"]["ok"]) == (1, 1, 1)
    assert stats["fault"]["availability"] == 0.0


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_refused_connection_is_a_definite_failure() -> None:
    client = NodeClient({"n1": _closed_port()}, timeout_s=1.0)
    with pytest.raises(ClientError) as err:
        client.post("n1", "/collections", {"name": "x"})
    assert (err.value.outcome, err.value.error) == ("fail", "connection-refused")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers, like a paused node."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_timeout_is_indefinite(silent_server: int) -> None:
    client = NodeClient({"n1": silent_server}, timeout_s=0.2)
    with pytest.raises(ClientError) as err:
        client.post("n1", "/collections", {"name": "x"})
    assert (err.value.outcome, err.value.error) == ("info", "timeout")


class _Reply504(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": "WriteOutcomeUnknown", "message": "maybe"}'
        self.send_response(504)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_write_outcome_unknown_is_indefinite() -> None:
    from jepsen_lite.workloads import Invocation, SetWorkload

    server = http.server.HTTPServer(("127.0.0.1", 0), _Reply504)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = NodeClient({"n1": server.server_address[1]}, timeout_s=2.0)
        workload = SetWorkload()
        workload.collection_id = "00000000-0000-0000-0000-000000000000"
        done = workload.invoke(client, "n1", Invocation("add", None, "e1"))
    finally:
        server.shutdown()
        server.server_close()
    assert (done.outcome, done.error) == ("info", "WriteOutcomeUnknown")


def test_rate_limiter_spaces_slots_and_stops_at_the_end() -> None:
    start = time.monotonic()
    limiter = RateLimiter(rate=100.0, end_s=start + 0.1)
    slots = []
    while (slot := limiter.next_slot()) is not None:
        slots.append(slot)
    assert 9 <= len(slots) <= 11
    assert all(b - a == pytest.approx(0.01) for a, b in zip(slots, slots[1:]))
