"""The applier takes the committed entries already queued behind the first one in one pass, so a
run of record writes spanning entries is one Chroma call; each write still gets its own entry's
index and its own answer, and a queued snapshot, install or call still runs exactly between the
entries around it. A real Node's applier loop on a real embedded store; nothing else is started."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from raftchroma import node as node_module
from raftchroma import state_machine
from raftchroma.command import Proposal, encode_entry
from raftchroma.config import parse_config
from raftchroma.node import Node
from raftchroma.result import Result
from tests.test_merged_apply import COLLECTION_ID, DATABASE, TENANT, read_all, store_with_collections, write


def make_node(tmp_path: Path) -> Node:
    raw = {"node": [{"id": "n1", "raft": "127.0.0.1:1", "http": "127.0.0.1:2", "data_dir": "d"}]}
    config = parse_config(raw, base_dir=tmp_path, environ={})
    node = Node(config, config.node("n1"))
    node.store = store_with_collections(tmp_path / "store")  # entry 1 made the collections
    node.applied_index = 1
    node._loop = asyncio.new_event_loop()
    return node


def run_applier(node: Node, items: list[tuple[Any, ...]]) -> None:
    """Queue `items` (all of them before the applier looks), then the stop, and run the applier
    loop in this thread until it stops; then deliver what it handed to the event loop."""
    for item in items:
        node._apply_queue.put(item)
    node._apply_queue.put(None)
    node._apply_items()
    node._loop.run_until_complete(asyncio.sleep(0))


def waiting(node: Node, proposal: Proposal) -> asyncio.Future[tuple[int, Result]]:
    future: asyncio.Future[tuple[int, Result]] = node._loop.create_future()
    node._waiters[proposal.rid] = future
    return future


def entry(index: int, *proposals: Proposal) -> tuple[Any, ...]:
    return ("entry", index, encode_entry(list(proposals)))


@pytest.mark.parametrize("max_entries, passes", [(64, 2), (1, 6)])
def test_queued_entries_are_applied_in_one_pass_each_write_with_its_own_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_entries: int, passes: int) -> None:
    monkeypatch.setattr(node_module, "MAX_ENTRIES_PER_APPLY", max_entries)
    node = make_node(tmp_path)
    writes = [write("upsert", [f"r{i}"], seed=i) for i in range(6)]
    answers = [waiting(node, p) for p in writes]
    seen_between: list[tuple[int, list[str]]] = []
    call_done = node._loop.create_future()

    def between(store: Any, applied_index: int) -> None:  # a backup's copy runs so, between two entries
        seen_between.append((applied_index, store.count(TENANT, DATABASE, COLLECTION_ID).body))

    # entries 2-4 carry one write each, 5 two, 6 is PySyncObj's empty no-op; a call; then entry 7
    items = [entry(2, writes[0]), entry(3, writes[1]), entry(4, writes[2]), entry(5, writes[3], writes[4]),
             ("entry", 6, b""), ("call", between, call_done), entry(7, writes[5])]
    run_applier(node, items)

    assert [a.result() for a in answers] == [(2, Result(200, {})), (3, Result(200, {})), (4, Result(200, {})),
                                             (5, Result(200, {})), (5, Result(200, {})), (7, Result(200, {}))]
    assert seen_between == [(6, 5)]  # after entry 6 (five records), before entry 7
    assert node.applied_index == 7
    steps = 2 if max_entries > 1 else 5  # without taking queued entries, a Chroma call per non-empty entry
    assert node.apply_counts == {"passes": passes, "entries": 6, "proposals": 6, "steps": steps}
    assert node._apply_queue.empty()


def test_a_pass_keeps_each_writes_own_outcome_and_cuts_runs_where_the_log_does(tmp_path: Path) -> None:
    """A refused write, a write with a request id and a write to another collection inside one pass:
    each is answered as if applied alone, and the store holds what one-by-one apply would."""
    node = make_node(tmp_path)
    proposals = [write("add", ["a"], seed=1), write("add", ["b"], seed=2, metadatas=[{"k": {"nested": 1}}]),
                 write("add", ["c"], seed=3), write("add", ["d"], seed=4, request_id="req-1"),
                 write("add", ["e"], seed=5), write("add", ["f"], seed=6)]
    answers = [waiting(node, p) for p in proposals]
    run_applier(node, [entry(2, proposals[0]), entry(3, proposals[1], proposals[2]), entry(4, proposals[3]),
                       entry(5, proposals[4]), entry(6, proposals[5])])
    assert [(i, r.status) for i, r in (a.result() for a in answers)] == \
           [(2, 201), (3, 400), (3, 201), (4, 201), (5, 201), (6, 201)]
    assert node.apply_counts["passes"] == 1 and node.apply_counts["steps"] == 3  # a-c | d (request id) | e-f
    assert node.store.recall("req-1").index == 4

    alone = store_with_collections(tmp_path / "alone")
    for index, p in zip((2, 3, 3, 4, 5, 6), proposals):
        state_machine.apply(alone, p, index)
    alone.close(), node.store.close()
    assert read_all(tmp_path / "alone") == read_all(tmp_path / "store")


def test_a_snapshot_queued_behind_entries_is_written_exactly_after_them(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    taken = [entry(2, write("upsert", ["x"])), entry(3, write("upsert", ["y"], seed=1))]
    snapshot_item = ("snapshot", tmp_path / "raft.snapshot", {"index": 3}, node._install_generation)
    for item in taken[1:] + [snapshot_item, entry(4, write("upsert", ["z"], seed=2))]:
        node._apply_queue.put(item)
    batch = [(2, taken[0][2])]
    held = node._take_queued_entries(batch)
    assert [i for i, _ in batch] == [2, 3] and held == [snapshot_item]  # stops at the snapshot, keeps it
    assert node._apply_queue.get_nowait()[1] == 4  # entry 4 stays queued, behind the snapshot


def test_a_busy_applier_waits_for_entries_committed_just_after_its_pass_began(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry 3 is queued only after the applier took entry 2 (the applier tells the test when it
    waits); a busy applier waits for it and applies both with one Chroma call."""
    monkeypatch.setattr(node_module, "APPLY_GATHER_S", 60.0)  # bounded by the test's own queue items
    node = make_node(tmp_path)
    node._last_pass_end, node._last_pass_entries = time.monotonic(), 2  # a pass of several entries just ended: busy
    first, second = write("upsert", ["a"]), write("upsert", ["b"], seed=1)
    answers = [waiting(node, first), waiting(node, second)]
    node._apply_queue.put(entry(2, first))
    waiting_for_more = threading.Event()
    real_get = node._apply_queue.get

    def get(block: bool = True, timeout: float | None = None) -> Any:
        if timeout is not None and timeout > node_module._CLEAN_AFTER_IDLE_S:  # the gather wait, not the idle one
            waiting_for_more.set()
        return real_get(block, timeout)

    monkeypatch.setattr(node._apply_queue, "get", get)
    applier = threading.Thread(target=node._apply_items)
    applier.start()
    assert waiting_for_more.wait(timeout=30)
    node._apply_queue.put(entry(3, second))
    node._apply_queue.put(None)
    applier.join(timeout=30)
    assert not applier.is_alive()
    node._loop.run_until_complete(asyncio.sleep(0))
    assert [a.result() for a in answers] == [(2, Result(200, {})), (3, Result(200, {}))]
    assert node.apply_counts == {"passes": 1, "entries": 2, "proposals": 2, "steps": 1}


def test_an_idle_applier_does_not_wait_for_more_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "APPLY_GATHER_S", 60.0)
    node = make_node(tmp_path)  # no pass yet: idle
    batch = [(2, encode_entry([write("upsert", ["a"])]))]
    started = time.monotonic()
    assert node._take_queued_entries(batch) == [] and len(batch) == 1
    assert time.monotonic() - started < 30  # it returned at once instead of gathering for 60 s


def test_a_sequential_writer_does_not_wait_for_more_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass just ended, but it took a single entry: one writer waiting for each answer before it
    sends the next. Gathering would only add the wait to every write."""
    monkeypatch.setattr(node_module, "APPLY_GATHER_S", 60.0)
    node = make_node(tmp_path)
    node._last_pass_end, node._last_pass_entries = time.monotonic(), 1
    batch = [(2, encode_entry([write("upsert", ["a"])]))]
    started = time.monotonic()
    assert node._take_queued_entries(batch) == [] and len(batch) == 1
    assert time.monotonic() - started < 30  # it returned at once instead of gathering for 60 s
    assert node._last_pass_entries == 1


def test_a_busy_applier_holding_a_large_batch_does_not_wait_for_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large batch is one Chroma call already, and its client waits for the answer before it
    sends the next: gathering would only delay it."""
    monkeypatch.setattr(node_module, "APPLY_GATHER_S", 60.0)
    monkeypatch.setattr(node_module, "APPLY_GATHER_MAX_BYTES", 1)  # any entry is "large"
    node = make_node(tmp_path)
    node._last_pass_end, node._last_pass_entries = time.monotonic(), 2  # a pass of several entries just ended
    batch = [(2, encode_entry([write("upsert", ["a"])]))]
    started = time.monotonic()
    assert node._take_queued_entries(batch) == [] and len(batch) == 1
    assert time.monotonic() - started < 30  # it returned at once instead of gathering for 60 s
