"""A raftchroma node: the store, the Raft replica and the applier, joined for asyncio.

Owns: the write path (propose, wait until applied here, return Chroma's result), the read
path (min-index waits, shared read barriers for linearizable reads), and the applier
thread that applies committed entries to Chroma in log order, outside PySyncObj's
heartbeat thread. It imports neither chromadb nor pysyncobj directly.

Write: choose ids -> encode -> propose -> PySyncObj commits -> apply_entry enqueues
(index, bytes) -> the applier decodes it and runs state_machine.apply on the store -> the
waiting request gets (index, result). Read: a typed `reads.Read` -> wait for its consistency
-> run its query on the read pool.

Raft runs in a child process (raft_process.py), so Chroma's GIL-bound work here never stalls
heartbeats. Which thread owns what: the event loop owns the waiter maps and barriers; the Raft
proxy's reader thread only calls `enqueue_entry`, `request_snapshot` and `queue_install` (which
queue work; PySyncObj's own entries arrive as empty entries, so `applied_index` follows the commit
index exactly); the applier thread owns `applied_index` (written there, read anywhere), the store's
changes and snapshots, and runs what `run_in_applier` hands it (a backup's copy); the read pool only
reads the store, inside `Store.reading()`. `metrics` is written by all of them (prometheus_client is
thread-safe) and read by the event loop at scrape time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from raftchroma import snapshot, state_machine
from raftchroma.command import Barrier, CorruptEntry, Op, Proposal, decode_entry, encode_entry, request_digest
from raftchroma.config import ClusterConfig, FaultKnobs, NodeConfig
from raftchroma.errors import (
    EXIT_APPLY_FAULT, EXIT_CORRUPT_LOG, EXIT_INSTALL_FAILED, EXIT_INTERNAL, ApiError, InvalidArgument, NoQuorum,
    MembershipChangeRefused, NotLeader, NotReady, TransferRefused, WriteOutcomeUnknown, exit_now,
)
from raftchroma.group_commit import GroupCommit
from raftchroma.metrics import NodeMetrics, RaftSample
from raftchroma.reads import LINEARIZABLE, Read
from raftchroma.raft_process import RaftProcess
from raftchroma.replication import DEFINITE_FAILURES, FAIL_REASON_NAMES, SNAPSHOT_FILE_NAME, SUCCESS
from raftchroma.result import Result, StoreFault, StoreUnavailable
from raftchroma.store import Store

log = logging.getLogger(__name__)

_LEADER_POLL_S = 0.02
SHUTDOWN_TRANSFER_TIMEOUT_S = 2.0  # how long a stopping leader waits for a successor
_APPLY_RETRY_MIN_S = 0.05
_APPLY_RETRY_MAX_S = 2.0
_CLEAN_AFTER_IDLE_S = 1.0  # the applier marks the store clean after this long without entries


RETRY_ADVICE = ("Retry with the same X-Raftchroma-Request-Id header to apply it at most once "
                "(a write sent without one may apply twice if retried).")


GROUP_MAX_BYTES = 1024 * 1024  # group commit: encoded writes per entry (at most half of max_entry_bytes)
MAX_PENDING_WRITES = 10_000  # writes proposed and not yet answered, per node
MAX_PENDING_READS = 10_000  # reads waiting for a barrier, an index or the read pool, per node
MAX_APPLY_BACKLOG = 10_000  # committed entries not yet applied here; past it, new writes are refused
MAX_ENTRIES_PER_APPLY = 64  # queued committed entries the applier takes together when it is behind...
MAX_BYTES_PER_APPLY = 8 * 1024 * 1024  # ...and their encoded bytes (decoded at once)
APPLY_GATHER_S = 0.025  # a busy applier waits up to this long for more entries before a pass...
APPLY_GATHER_MAX_BYTES = 64 * 1024  # ...when what it holds is smaller than this (a call's fixed cost dominates)
READY_MAX_APPLY_LAG_ENTRIES = 100  # /readyz: applied may trail the known commit index by this much


class Overloaded(ApiError):
    """Definite: a bound was reached; the request was not proposed (or the read not started)."""

    status = 503
    name = "Overloaded"


class EntryTooLarge(ApiError):
    status = 413
    name = "ChromaError"


class Node:
    """One replica. Create it inside a running event loop, then `await start()`."""

    def __init__(self, config: ClusterConfig, node: NodeConfig, unsafe_local_reads: bool = False,
                 fault_injection: bool = False, faults: FaultKnobs = FaultKnobs(), join: bool = False) -> None:
        self.config = config
        self.node = node
        self.join = join  # a new node for a running cluster (membership.py): not a member until added
        self.unsafe_local_reads = unsafe_local_reads  # test-only: linearizable reads without a barrier
        self.fault_injection = fault_injection  # test-only: /raftchroma/test/partition drops peer traffic
        self.faults = faults  # test-only, with fault_injection
        self.store: Store | None = None
        self.replication: RaftProcess | None = None
        self.applied_index = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._apply_queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._applier: threading.Thread | None = None
        self._waiters: dict[bytes, asyncio.Future[tuple[int, Result]]] = {}
        self._index_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._index_seq = itertools.count()
        self._barrier_waiters: list[asyncio.Future[int]] = []
        self._barrier_running = False
        self._pending_reads = 0
        self.injected_faults = {"disk_full": False, "apply_fails": False}
        self._install_generation = 0
        self.snapshot_index = 0
        self.snapshot_installs = 0
        self.apply_error: str | None = None
        self._log_bytes_since_snapshot = 0
        self._skip_through = 0
        self._snapshot_forced = False
        self._group_commit: GroupCommit | None = None
        # applier thread: passes (entries taken at once), entries and proposals applied, and steps
        # (one Chroma call each for a merged run): how much merging saves shows in status
        self.apply_counts = {"passes": 0, "entries": 0, "proposals": 0, "steps": 0}
        self._last_pass_end = 0.0  # applier thread: time.monotonic() when its last pass ended
        self._last_pass_entries = 0  # applier thread: the entries its last pass took
        self._read_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="read")
        self.metrics = NodeMetrics(self.metrics_sample)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        os.makedirs(self.node.data_dir, exist_ok=True)
        self.store = await self._loop.run_in_executor(
            None, Store, self.node.data_dir, _local_snapshot_index(self.node.data_dir))
        self.applied_index = self._skip_through = self.store.recovered_index
        if self._skip_through:
            log.info("kept the store left clean at index %d; entries up to it are skipped", self._skip_through)
        self._applier = threading.Thread(target=self._apply_loop, name="applier", daemon=True)
        self._applier.start()
        self.replication = await self._loop.run_in_executor(
            None, RaftProcess, self.config, self.node, self, self.fault_injection, self.faults, self.join)
        self._group_commit = GroupCommit(self._loop, self.replication.propose, self._call_in_loop,
                                         max_bytes=min(GROUP_MAX_BYTES, self.config.raft.max_entry_bytes // 2))

    async def stop(self) -> None:
        if self.replication is not None:
            await self._hand_over_leadership()
            await asyncio.get_running_loop().run_in_executor(None, self.replication.stop)
        self._apply_queue.put(None)
        if self._applier is not None:
            self._applier.join(timeout=10)
        self._read_pool.shutdown(wait=False, cancel_futures=True)

    async def _hand_over_leadership(self) -> None:
        """A leader that shuts down gracefully hands leadership to its most caught-up peer first,
        so writes pause for one message round instead of an election timeout."""
        status = self.replication.status()
        if status.role != "leader" or not [m for m in status.members if m["voter"] and m["id"] != self.node.id]:
            return
        try:
            new_leader = await self.transfer_leadership(None, SHUTDOWN_TRANSFER_TIMEOUT_S)
            log.info("leadership handed to %s before stopping", new_leader)
        except ApiError as exc:
            log.warning("could not hand leadership over before stopping: %s", exc.message)

    async def transfer_leadership(self, target_id: str | None, timeout_s: float) -> str:
        """Hand leadership to `target_id` (None: the most caught-up connected peer) with Raft's
        TimeoutNow, and wait until another node leads; return its id."""
        status = self.replication.status()
        if status.role != "leader":
            leader = self.replication.node_id_of(status.leader)
            raise NotLeader(f"{self.node.id} is not the leader (the leader is {leader}); ask the leader")
        if target_id is not None and target_id not in {m["id"] for m in status.members
                                                       if m["voter"] and m["id"] != self.node.id}:
            raise TransferRefused(f"{target_id!r} is not another voting member of the cluster")
        future: asyncio.Future[int] = self._loop.create_future()
        self.replication.transfer_leadership(target_id, lambda err: self._call_in_loop(_settle, future, err))
        try:
            err = await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise NoQuorum(f"the Raft process did not answer the transfer within {timeout_s:g}s") from None
        if err != SUCCESS:
            raise TransferRefused(f"the leader did not hand over (raft: {_reason(err)}; a target must be "
                                  "connected and hold the leader's whole log)")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.replication.status()
            if status.role != "leader" and status.leader is not None:
                return self.replication.node_id_of(status.leader) or str(status.leader)
            await asyncio.sleep(_LEADER_POLL_S)  # polling Raft's status, not synchronisation
        raise NoQuorum(f"leadership did not move within {timeout_s:g}s; {self.node.id} may still lead")

    async def change_membership(self, change: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Have the leader (this node) propose a membership change and wait until it commits;
        return {"index", "members"}. Refused changes change nothing (membership.plan_change)."""
        status = self.replication.status()
        if status.role != "leader":
            raise NotLeader(f"{self.node.id} is not the leader (the leader is "
                            f"{self.replication.node_id_of(status.leader)}); ask the leader")
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self.replication.change_membership(change, lambda result: self._call_in_loop(_settle, future, result))
        try:
            result = await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise WriteOutcomeUnknown(f"the membership change did not commit within {timeout_s:g}s; it may still "
                                      "commit: check `raftchroma status`") from None
        outcome = result["outcome"]
        if outcome == "committed":
            await self._status_shows_membership(result["index"], timeout_s)
            return {"index": result["index"], "members": result["members"]}
        if outcome == "not_leader":
            raise NotLeader(f"{self.node.id} is not the leader; ask the leader")
        if outcome == "refused":
            raise MembershipChangeRefused(result["message"])
        if result.get("reason") in DEFINITE_FAILURES:
            raise NoQuorum(f"the membership change was not proposed (raft: {result['message']})")
        raise WriteOutcomeUnknown(f"the membership change may or may not have committed (raft: {result['message']}); "
                                  "check `raftchroma status`")

    async def _status_shows_membership(self, index: int, timeout_s: float) -> None:
        """Wait (bounded) until this node's published Raft status shows the membership entry at
        `index`, so that /raftchroma/members and status read after the answer show the change."""
        deadline = time.monotonic() + timeout_s
        while self.replication.status().membership_index < index and time.monotonic() < deadline:
            await asyncio.sleep(_LEADER_POLL_S)  # the Raft process publishes its status every 20 ms

    # ------------------------------------------------------------ apply thread

    # The four hooks below are called by the Raft proxy's reader thread, in the order PySyncObj
    # produced them (raft_process.py), so the apply queue is in log order.

    def enqueue_entry(self, index: int, data: bytes) -> None:
        """A committed entry; must stay cheap."""
        self._apply_queue.put(("entry", index, data))

    def request_snapshot(self, final_path: Path, raft_meta: dict[str, Any]) -> None:
        """Snapshot after everything queued so far, i.e. exactly at raft_meta["index"]."""
        self._apply_queue.put(("snapshot", final_path, raft_meta, self._install_generation))

    def queue_install(self, pinned: Path, header: dict[str, Any]) -> None:
        """Install a verified snapshot (received, or the local one at start) pinned at `pinned`."""
        self._install_generation += 1
        self._apply_queue.put(("install", pinned, header, self._install_generation))

    def run_in_applier(self, fn: Callable[[Store, int], Any]) -> asyncio.Future[Any]:
        """Run `fn(store, applied_index)` in the applier thread after everything queued so far, i.e.
        between two entries, while no change is in flight (backup.py copies the store so). Entries
        wait while it runs: keep it short. Its result or exception resolves the returned future."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._apply_queue.put(("call", fn, future))
        return future

    def _apply_loop(self) -> None:
        """Crash, don't limp: an applier that died would leave a node that answers heartbeats
        but never applies, so any unexpected exception stops the process."""
        try:
            self._apply_items()
        except BaseException:
            log.critical("the applier failed unexpectedly at applied index %d; stopping the node",
                         self.applied_index, exc_info=True)
            exit_now(EXIT_INTERNAL)

    def _apply_items(self) -> None:
        held: list[tuple[Any, ...] | None] = []  # taken from the queue after entries, handled next
        while True:
            if held:
                item = held.pop()
            else:
                try:
                    item = self._apply_queue.get(timeout=_CLEAN_AFTER_IDLE_S)
                except queue.Empty:
                    self._mark_clean()
                    continue
            if item is None:
                return
            if item[0] == "entry":
                entries = [(item[1], item[2])]
                held += self._take_queued_entries(entries)
                self._apply_entries(entries)
            elif item[0] == "snapshot":
                self._write_snapshot(*item[1:])
            elif item[0] == "call":
                self._call_between_entries(*item[1:])
            else:
                self._install(*item[1:])

    def _call_between_entries(self, fn: Callable[[Store, int], Any], future: asyncio.Future[Any]) -> None:
        try:
            outcome, failed = fn(self.store, self.applied_index), False
        except Exception as exc:  # the caller's failure (e.g. disk full while copying), not the applier's
            outcome, failed = exc, True
        self._call_in_loop(_settle, future, outcome, failed)

    def _mark_clean(self) -> None:
        """Idle: record that a crash now may keep the store. Failing (disk full) only costs a
        rebuild after a crash, so it is logged and tried again at the next idle moment."""
        try:
            self.store.mark_clean(self.applied_index)
        except OSError as exc:
            log.warning("could not mark the store clean at index %d (will retry): %s", self.applied_index, exc)

    def _mark_dirty(self, index: int) -> None:
        """Before the first change after a clean point; retried like an apply while the disk fails,
        because a change made without it could be kept, wrongly, after a crash."""
        delay_s = _APPLY_RETRY_MIN_S
        while True:
            try:
                self.store.mark_dirty()
                return
            except OSError as exc:
                log.error("cannot mark the store dirty before entry %d, will retry: %s", index, exc)
                self.apply_error = f"marking the store dirty: {exc}"
                time.sleep(delay_s)  # backoff while the disk is full, not synchronisation
                delay_s = min(delay_s * 2, _APPLY_RETRY_MAX_S)

    def _take_queued_entries(self, entries: list[tuple[int, bytes]]) -> list[tuple[Any, ...] | None]:
        """Add to `entries` the committed entries queued behind them, up to MAX_ENTRIES_PER_APPLY or
        MAX_BYTES_PER_APPLY, so that their record writes are merged into fewer Chroma calls. Stops
        at anything else (a snapshot, an install, a call, the stop), which is returned to be handled
        right after these entries, so the queue's order holds.

        An idle applier takes only what is already queued (a lone write waits for nothing). A busy
        one (its last pass took more than one entry and ended less than APPLY_GATHER_S before this
        one began) holding less than APPLY_GATHER_MAX_BYTES also waits up to APPLY_GATHER_S for
        more: a Chroma call holds this process's GIL for its whole duration, so back-to-back calls
        starve the event loop and the Raft proxy's threads, and writes then reach the applier a few
        at a time, each paying a Chroma call's fixed cost (~5 ms of CPU for one record, ~0.5 ms
        more per record). Measured with 16 single-record upserters on 2 cores (bench/, ops/s):
        ~160 with a 10 ms wait, ~185 with 25 ms, ~178 with 40 ms. A sequential writer's passes take
        one entry each, so it never waits (p50 latency of one-record upserts 20-25 ms, was 27-31 ms
        when the wait depended on the time alone). A large batch is one call already, and its
        client waits for the answer before sending the next: it would only wait for nothing."""
        taken_bytes = sum(len(data) for _, data in entries)
        now = time.monotonic()
        busy = (now - self._last_pass_end < APPLY_GATHER_S and self._last_pass_entries > 1
                and taken_bytes < APPLY_GATHER_MAX_BYTES)
        deadline = now + APPLY_GATHER_S if busy else now
        try:
            while len(entries) < MAX_ENTRIES_PER_APPLY and taken_bytes < MAX_BYTES_PER_APPLY:
                try:
                    wait_s = deadline - time.monotonic()
                    item = self._apply_queue.get(timeout=wait_s) if wait_s > 0 else self._apply_queue.get_nowait()
                except queue.Empty:
                    return []
                if item is None or item[0] != "entry":
                    return [item]
                entries.append((item[1], item[2]))
                taken_bytes += len(item[2])
                if taken_bytes >= APPLY_GATHER_MAX_BYTES:
                    deadline = time.monotonic()  # enough to make the call worth it: take only what is queued
            return []
        finally:
            self._last_pass_entries = len(entries)

    def _apply_entries(self, entries: list[tuple[int, bytes]]) -> None:
        """Apply consecutive committed entries in log order. Every proposal keeps its own outcome
        and its entry's index; the runs that `state_machine.steps` merges may span entries."""
        # Entries up to _skip_through are already in the store kept from the last run. PySyncObj's
        # own entries (a new leader's no-op) are empty: nothing to apply, but a read index may name them.
        entries = [(index, data) for index, data in entries if index > self._skip_through]
        if not entries:
            return
        proposals: list[Proposal] = []
        indexes: list[int] = []
        for index, data in entries:
            for proposal in self._decoded(index, data) if data else ():
                proposals.append(proposal)
                indexes.append(index)
        started = time.monotonic()
        if any(not isinstance(p.op, Barrier) for p in proposals):  # read barriers change nothing
            self._mark_dirty(indexes[0])
        done = 0
        cut = state_machine.steps(proposals)  # one proposal, or a run merged into one Chroma call
        self._count_pass(len(entries), len(proposals), len(cut))
        for step in cut:
            at = indexes[done:done + len(step)]
            done += len(step)
            outcomes = self._apply_until_done(step, at)
            self._resolve([(p.rid, o.index, o.result) for p, o in zip(step, outcomes) if p.rid is not None])
        applied = [len(data) for _, data in entries if data]
        elapsed_s = time.monotonic() - started
        for _ in applied:  # one observation per entry: the entries applied together share their time
            self.metrics.applied(elapsed_s / len(applied))
        self._set_applied(entries[-1][0])
        self._count_log_bytes(sum(applied))
        self._last_pass_end = time.monotonic()

    def _count_pass(self, entries: int, proposals: int, steps: int) -> None:
        counts = self.apply_counts
        counts["passes"] += 1
        counts["entries"] += entries
        counts["proposals"] += proposals
        counts["steps"] += steps

    @staticmethod
    def _decoded(index: int, data: bytes) -> list[Proposal]:
        try:
            return decode_entry(data)
        except CorruptEntry as exc:
            log.critical("log entry %d is corrupt (%s); stopping the node", index, exc)
            exit_now(EXIT_CORRUPT_LOG)

    def _count_log_bytes(self, entry_bytes: int) -> None:
        """Bound the log by bytes too: a few big batches must not keep gigabytes in the journal
        (and in PySyncObj's memory), nor make a restart replay them."""
        self._log_bytes_since_snapshot += entry_bytes
        if self._log_bytes_since_snapshot > self.config.raft.snapshot_max_log_bytes and not self._snapshot_forced:
            self._snapshot_forced = True
            self.replication.force_snapshot()

    def _apply_until_done(self, step: list[Proposal], indexes: list[int]) -> list[state_machine.Outcome]:
        """A committed op must be applied here eventually: retry environmental failures
        (disk full...) with backoff instead of recording a result the other replicas lack;
        stop on a failure that cannot be classified (see docs/OPERATIONS.md)."""
        delay_s = _APPLY_RETRY_MIN_S
        while True:
            try:
                outcomes = state_machine.apply_step(self.store, step, indexes)
                self.apply_error = None
                return outcomes
            except StoreUnavailable as exc:
                if self.apply_error != str(exc):
                    log.error("cannot apply entry %s, will retry until it succeeds: %s", _span(indexes), exc)
                self.apply_error = str(exc)
                time.sleep(delay_s)  # backoff while the disk is full, not synchronisation
                delay_s = min(delay_s * 2, _APPLY_RETRY_MAX_S)
            except StoreFault as exc:
                log.critical("entry %s (%s) failed in Chroma with a healthy disk, an outcome that cannot be "
                             "classified; stopping the node rather than record it: %s",
                             _span(indexes), "+".join(sorted({type(p.op).__name__ for p in step})), exc)
                exit_now(EXIT_APPLY_FAULT)

    def _set_applied(self, index: int) -> None:
        self.applied_index = index
        self._call_in_loop(self._wake_index_waiters, index)

    def _write_snapshot(self, final_path: Path, raft_meta: dict[str, Any], generation: int) -> None:
        stale = generation != self._install_generation  # a newer snapshot was installed meanwhile
        ahead = raft_meta["index"] < self._skip_through  # the kept store is newer than this index
        if stale or ahead:
            self._snapshot_forced = False  # a later snapshot may be forced again
            self.replication.snapshot_done(False)
            return
        try:
            started = time.monotonic()
            if self.faults.snapshot_write_delay_s:
                time.sleep(self.faults.snapshot_write_delay_s)  # test-only stand-in for a large store
            local_path = final_path.with_name(final_path.name + ".local")  # Raft's thread moves it into place
            self.store.write_snapshot(local_path, {"index": raft_meta["index"], "raft": raft_meta})
            self.snapshot_index = raft_meta["index"]
            self._log_bytes_since_snapshot, self._snapshot_forced = 0, False
            log.info("snapshot at index %d written in %.2fs", raft_meta["index"], time.monotonic() - started)
            self.metrics.snapshot("write", time.monotonic() - started)
            self.replication.snapshot_done(True, local_path)
        except OSError:
            log.exception("writing the snapshot at index %d failed", raft_meta["index"])
            self.replication.snapshot_done(False)

    def _install(self, pinned: Path, header: dict[str, Any], generation: int) -> None:
        if header["index"] <= self._skip_through:  # the kept store is at least this new
            pinned.unlink(missing_ok=True)
            return
        started = time.monotonic()
        self._mark_dirty(header["index"])
        try:
            self.store.install_snapshot(pinned, header)
        except OSError as exc:  # e.g. disk full: the store is gone; restart and install again
            log.critical("installing the snapshot at index %d failed (%s); stopping the node", header["index"], exc)
            exit_now(EXIT_INSTALL_FAILED)
        pinned.unlink(missing_ok=True)
        self.snapshot_index = header["index"]
        self.snapshot_installs += 1
        self._log_bytes_since_snapshot, self._snapshot_forced = 0, False
        log.info("installed snapshot at index %d in %.2fs", header["index"], time.monotonic() - started)
        self.metrics.snapshot("install", time.monotonic() - started)
        self._set_applied(header["index"])

    def _resolve(self, answers: list[tuple[bytes, int, Result]]) -> None:
        """Answer a step's waiting writes: (waiter id, index, result) each, one hop to the loop."""
        if answers:
            self._call_in_loop(self._finish_requests, answers)

    def _call_in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _finish_requests(self, answers: list[tuple[bytes, int, Result]]) -> None:
        for rid, index, result in answers:
            future = self._waiters.get(rid)
            if future is not None and not future.done():
                future.set_result((index, result))

    # ------------------------------------------------------------------ writes

    async def write(self, op: Op, request_id: str | None = None) -> tuple[int, Result]:
        """Commit `op` through the log; return (log index, result as applied on this node).
        With a client `request_id` already applied here, answer its first outcome at once."""
        if request_id is not None:  # already applied here: answer without proposing
            remembered = self.store.recall(request_id)
            if remembered is not None and remembered.collection is None and remembered.digest == request_digest(op):
                return remembered.index, Result(remembered.status, remembered.body)
        if len(self._waiters) >= MAX_PENDING_WRITES or self._apply_queue.qsize() >= MAX_APPLY_BACKLOG:
            raise Overloaded(f"This node has {len(self._waiters)} writes in flight and {self._apply_queue.qsize()} "
                             "entries to apply; nothing was written, retry later")
        proposal = Proposal(op, request_id=request_id)
        try:
            entry = encode_entry([proposal])
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate, an int past 64 bits
            raise InvalidArgument(f"The request holds a value that cannot be stored: {exc}") from None
        if len(entry) > self.config.raft.max_entry_bytes:
            raise EntryTooLarge(f"Log entry of {len(entry)} bytes exceeds the limit of {self.config.raft.max_entry_bytes}")
        return await self._propose(proposal, entry, self.config.write_timeout_s)

    async def _propose(self, proposal: Proposal, entry: bytes, timeout_s: float) -> tuple[int, Result]:
        """Propose and wait until applied here; counted in the metrics."""
        try:
            answer = await self._propose_and_wait(proposal, entry, timeout_s)
        except ApiError as exc:
            self.metrics.proposal_failed("write", exc.name)
            raise
        self.metrics.proposal_committed("write")
        return answer

    async def _propose_and_wait(self, proposal: Proposal, entry: bytes, timeout_s: float) -> tuple[int, Result]:
        """Propose through group commit (group_commit.py) and wait until applied here."""
        rid = proposal.rid
        deadline = time.monotonic() + timeout_s
        await self._await_leader(deadline)
        future: asyncio.Future[tuple[int, Result]] = self._loop.create_future()
        self._waiters[rid] = future
        try:
            self._group_commit.submit(proposal, entry, lambda err: self._on_proposed(rid, err))
            remaining_s = max(0.0, deadline - time.monotonic())
            try:
                return await asyncio.wait_for(asyncio.shield(future), remaining_s)
            except asyncio.TimeoutError:
                raise WriteOutcomeUnknown(
                    f"The write was proposed but not confirmed within {timeout_s:g}s; it may still commit. "
                    f"{RETRY_ADVICE}") from None
        finally:
            self._waiters.pop(rid, None)

    def _on_proposed(self, rid: bytes, err: int) -> None:
        future = self._waiters.get(rid)
        if future is None or future.done() or err == SUCCESS:
            return
        if err in DEFINITE_FAILURES:
            future.set_exception(NoQuorum(f"The write was not committed (raft: {_reason(err)}); retry"))
        else:
            future.set_exception(WriteOutcomeUnknown(
                f"The write may or may not have committed (raft: {_reason(err)}). {RETRY_ADVICE}"))

    async def _await_leader(self, deadline: float) -> None:
        """Wait for a usable leader; no proposal is made without one (so the failure is definite)."""
        while True:
            status = self.replication.status()
            if status.leader is not None and _leader_usable(status):
                return
            if time.monotonic() >= deadline:
                raise NoQuorum("No leader with a quorum is reachable from this node; nothing was written")
            await asyncio.sleep(_LEADER_POLL_S)

    # ------------------------------------------------------------------- reads

    async def read(self, read: Read) -> Result:
        """Answer a typed read at its consistency."""
        if self._pending_reads >= MAX_PENDING_READS:
            raise Overloaded(f"This node has {self._pending_reads} reads in flight; retry later")
        self._pending_reads += 1
        try:
            timeout_s = self.config.read_timeout_s
            if read.min_index:
                await self.wait_applied(read.min_index, timeout_s)
            if read.consistency == LINEARIZABLE and not self.unsafe_local_reads:
                await self.read_barrier(timeout_s)
            return await self._loop.run_in_executor(self._read_pool, self._guarded_read, read)
        finally:
            self._pending_reads -= 1

    def _guarded_read(self, read: Read) -> Result:
        with self.store.reading():
            return read.query.run(self.store, self.applied_index)

    async def read_barrier(self, timeout_s: float) -> int:
        """Wait until this node has applied everything committed before this call began: a read
        index from the leader (read_index.py: one heartbeat round to a quorum, no log entry),
        then this node's applier catching up to it. Reads that arrive while a round is in flight
        share the next one."""
        deadline = time.monotonic() + timeout_s
        future: asyncio.Future[int] = self._loop.create_future()
        self._barrier_waiters.append(future)
        if not self._barrier_running:
            self._start_barrier()
        started = time.monotonic()
        try:
            index = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.TimeoutError:
            raise NoQuorum(f"Could not confirm a linearizable read within {timeout_s:g}s") from None
        else:
            await self.wait_applied(index, max(0.0, deadline - time.monotonic()))
            return index
        finally:
            self.metrics.barrier_waited(time.monotonic() - started)

    def _start_barrier(self) -> None:
        self._barrier_running = True
        waiters, self._barrier_waiters = self._barrier_waiters, []
        asyncio.ensure_future(self._run_barrier(waiters))

    async def _run_barrier(self, waiters: list[asyncio.Future[int]]) -> None:
        outcome: Any = NoQuorum("Could not confirm a linearizable read")
        try:
            outcome = await self._read_index(time.monotonic() + self.config.read_timeout_s)
        except ApiError as exc:
            outcome = exc
        finally:  # whatever happened, the waiters are answered and the next round can start
            for future in waiters:
                if not future.done():
                    future.set_exception(outcome) if isinstance(outcome, Exception) else future.set_result(outcome)
            self._barrier_running = False
            if self._barrier_waiters:
                self._start_barrier()

    async def _read_index(self, deadline: float) -> int:
        """The leader's read index, asked again (no leader yet, a round that failed) until `deadline`."""
        while True:
            future: asyncio.Future[int | None] = self._loop.create_future()
            self.replication.read_index(lambda index: self._call_in_loop(_settle, future, index))
            try:
                index = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                index = None
            if index is not None:
                return index
            if time.monotonic() >= deadline:
                raise NoQuorum("No leader with a quorum confirmed a linearizable read in time; retry")
            await asyncio.sleep(_LEADER_POLL_S)  # backoff until a leader is known, not synchronisation

    async def wait_applied(self, index: int, timeout_s: float) -> None:
        if self.applied_index >= index:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        waiter = (index, next(self._index_seq), future)
        heapq.heappush(self._index_waiters, waiter)
        try:
            await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise NotReady(f"This node has not applied index {index} within {timeout_s:g}s "
                           f"(applied: {self.applied_index})") from None
        finally:
            if not future.done() or future.cancelled():  # timed out or the client went away
                self._forget_index_waiter(waiter)

    def _forget_index_waiter(self, waiter: tuple[int, int, asyncio.Future[None]]) -> None:
        try:
            self._index_waiters.remove(waiter)
        except ValueError:
            return
        heapq.heapify(self._index_waiters)

    def _wake_index_waiters(self, applied: int) -> None:
        while self._index_waiters and self._index_waiters[0][0] <= applied:
            _, _, future = heapq.heappop(self._index_waiters)
            if not future.done():
                future.set_result(None)

    # ------------------------------------------------------------- test faults

    def inject_faults(self, disk_full: bool, apply_fails: bool) -> dict[str, bool]:
        """TEST ONLY (fault injection): `disk_full` makes the Raft journal's appends and every store
        change fail with ENOSPC; `apply_fails` makes every store change fail (I/O error). The node
        must retry, never record a result, and go on by itself once they are turned off."""
        if not self.fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        self.replication.inject_disk_full(disk_full)
        failure = None
        if disk_full:
            failure = OSError(errno.ENOSPC, "No space left on device (injected)")
        elif apply_fails:
            failure = OSError(errno.EIO, "Input/output error (injected)")
        self.store.injected_failure = failure
        self.injected_faults = {"disk_full": disk_full, "apply_fails": apply_fails}
        return dict(self.injected_faults)

    # ------------------------------------------------------------------ status

    def metrics_sample(self) -> RaftSample:
        """The state `GET /metrics` reports (metrics.py); before start, an empty one."""
        if self.replication is None:
            return RaftSample(False, False, 0, 0, 0, self.applied_index, 0, 0, 0)
        raft = self.replication.status()
        return RaftSample(
            has_leader=raft.leader is not None, is_leader=raft.role == "leader", leader_changes=raft.leader_changes,
            term=raft.term, commit_index=raft.commit_index, applied_index=self.applied_index,
            apply_backlog=self._apply_queue.qsize(), proposals_pending=len(self._waiters),
            snapshot_bytes=_size(self.replication.snapshot_path), peer_match_index=dict(raft.peer_match_index),
            journal_fsync=self.replication.journal_fsync_seconds(), is_voter=raft.voter,
            voters=sum(1 for m in raft.members if m["voter"]), non_voters=sum(1 for m in raft.members if not m["voter"]),
            late_ticks=raft.late_ticks)

    def readiness(self) -> str | None:
        """Why this node should not take client traffic now (None: ready). Ready means: started,
        a usable leader is known (as for a write), the store is applying, and applied is within
        READY_MAX_APPLY_LAG_ENTRIES of the commit index this node knows."""
        if self.replication is None or self.store is None:
            return "starting"
        raft = self.replication.status()
        if raft.role == "unknown":
            return "starting (no Raft status yet)"
        if not raft.member:
            return "not a member of the cluster (not yet added with `raftchroma cluster add`, or removed)"
        if raft.leader is None:
            return f"no leader known (role {raft.role}, term {raft.term})"
        if not _leader_usable(raft):
            return f"leader {self.replication.node_id_of(raft.leader)} is not reachable with a quorum"
        if self.apply_error is not None:
            return f"cannot apply: {self.apply_error}"
        lag = raft.commit_index - self.applied_index
        if lag > READY_MAX_APPLY_LAG_ENTRIES:
            return f"applied index {self.applied_index} is {lag} entries behind the commit index {raft.commit_index}"
        return None

    def liveness(self) -> str | None:
        """Why this process is not working (None: alive): the applier or the Raft process stopped."""
        if self._applier is not None and not self._applier.is_alive():
            return "the applier thread has stopped"
        if self.replication is not None and not self.replication.alive():
            return "the Raft process has stopped or sends no status"
        return None

    def status(self) -> dict[str, Any]:
        raft = self.replication.status()
        return {
            "id": self.node.id,
            "pid": os.getpid(),
            "role": raft.role,
            "term": raft.term,
            "leader": self.replication.node_id_of(raft.leader),
            "commit_index": raft.commit_index,
            "applied_index": self.applied_index,
            "raft_applied_index": raft.last_applied,
            "log_len": raft.log_len,
            "journal_bytes": self.replication.journal_bytes,
            "snapshot_index": self.snapshot_index,
            "snapshot_installs": self.snapshot_installs,
            "snapshot_bytes": _size(self.replication.snapshot_path),
            "has_quorum": raft.has_quorum,
            "leader_changes": raft.leader_changes,
            "late_ticks": raft.late_ticks,
            "longest_tick_overrun_s": raft.longest_tick_overrun_s,
            "log_truncations": raft.log_truncations,
            "truncated_entries": raft.truncated_entries,
            "truncated_applied_entries": raft.truncated_applied_entries,
            "leader_connected": raft.leader_connected,
            "apply_queue": self._apply_queue.qsize(),
            "pending_writes": len(self._waiters),
            "group_commit": {"entries": getattr(self._group_commit, "entries_proposed", 0),
                             "writes": getattr(self._group_commit, "writes_proposed", 0)},
            "applier": dict(self.apply_counts),
            "pending_reads": self._pending_reads,
            "index_waiters": len(self._index_waiters),
            "apply_error": self.apply_error,
            "store_clean": self.store.clean,
            "store_kept_index": self._skip_through,
            "blocked_peers": self.replication.blocked_peers(),
            "injected_faults": self.injected_faults if self.fault_injection else {},
            "snapshot_sends": self.replication.snapshot_sends(),
            "settings_fingerprint": self.config.settings_fingerprint,
            "settings_mismatches": self.replication.settings_mismatches(),
            "match_index": dict(raft.peer_match_index),
            "members": list(raft.members),
            "voter": raft.voter,
            "member": raft.member,
            "membership_index": raft.membership_index,
        }


def _local_snapshot_index(data_dir: Path) -> int:
    """The index of the node's own snapshot file (its header only; Replication verifies it)."""
    path = Path(data_dir) / SNAPSHOT_FILE_NAME
    if not path.exists():
        return 0
    try:
        return int(snapshot.read_header(path, verify=False)["index"])
    except snapshot.SnapshotCorrupt:
        return 0


def _leader_usable(status: Any) -> bool:
    """A leader this node can write through: itself with a quorum, or a leader it is connected to."""
    return status.has_quorum if status.role == "leader" else status.leader_connected


def _settle(future: asyncio.Future[Any], outcome: Any, failed: bool = False) -> None:
    if not future.done():  # the caller may have gone away
        future.set_exception(outcome) if failed else future.set_result(outcome)


def _span(indexes: list[int]) -> str:
    return str(indexes[0]) if indexes[0] == indexes[-1] else f"{indexes[0]}-{indexes[-1]}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _reason(err: int) -> str:
    return FAIL_REASON_NAMES.get(err, str(err))
