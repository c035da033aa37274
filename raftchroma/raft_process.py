"""Raft in a process of its own, so that Chroma's work never stalls heartbeats.

Owns: the child process that runs `replication.Replication` (`raft_main`), the parent-side proxy
`RaftProcess` that the node uses in its place, and the framed msgpack channel between them.

Why a process: Chroma's bindings hold the GIL while they work (a 500-record add of 384-d vectors:
~0.35 s; a full 5,461-record batch: seconds), and PySyncObj's tick thread, which sends heartbeats
and votes, needs the GIL too. In one process, no chunking of Chroma calls kept elections away
under sustained ingest; in its own process the tick thread only ever competes with two small I/O
threads. The price is one local socket hop per proposal and per committed entry.

The child must never block on the parent (whose GIL Chroma may hold for seconds): everything it
sends goes through an unbounded outbox drained by a sender thread, so PySyncObj's tick thread
only appends to a queue. The parent likewise sends through an outbox. Messages keep their order:
entries, snapshot requests and installs reach the node exactly in the order PySyncObj made them.

Lifetimes: the child exits when its parent is gone (EOF on the channel) and ignores SIGINT/SIGTERM (the parent stops it with a `stop` message). If the child dies while the node runs,
the parent stops with EXIT_RAFT_PROCESS: a node without Raft must not go on serving.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import msgpack

from raftchroma import logs, snapshot
from raftchroma.config import ClusterConfig, FaultKnobs, NodeConfig
from raftchroma.errors import EXIT_CORRUPT, EXIT_INTERNAL, EXIT_RAFT_PROCESS, exit_now
from raftchroma.journal import JournalCorrupt
from raftchroma.replication import SNAPSHOT_FILE_NAME, RaftStatus

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 0.02  # how often the child publishes its Raft status to the parent
STATUS_STALE_S = 30.0  # no status for this long: the child is wedged (/livez fails); far above a GIL hold by Chroma
START_TIMEOUT_S = 600.0  # loading a large journal takes a while; a hung child must not hang the node
STOP_TIMEOUT_S = 15.0
_FRAME = struct.Struct("<I")


# Before the child's first status (it is published after "ready"): claims nothing, in particular
# not that this node is a voting member (a node started with --join is not a member at all).
UNKNOWN_STATUS = RaftStatus("unknown", 0, None, 0, 0, 0, False, False, voter=False, member=False)


# ------------------------------------------------------------------ the channel


class Channel:
    """Length-prefixed msgpack messages (lists) over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, message: list[Any]) -> None:
        data = msgpack.packb(message, use_bin_type=True)
        self._sock.sendall(_FRAME.pack(len(data)))
        self._sock.sendall(data)

    def recv(self) -> list[Any] | None:
        """The next message, or None once the other side has gone."""
        head = self._exactly(_FRAME.size)
        if head is None:
            return None
        body = self._exactly(_FRAME.unpack(head)[0])
        return None if body is None else msgpack.unpackb(body, raw=False)

    def _exactly(self, count: int) -> bytes | None:
        chunks, missing = [], count
        while missing:
            try:
                chunk = self._sock.recv(min(missing, 1 << 20))
            except OSError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def start_thread(target: Callable[..., None], name: str, *args: Any) -> threading.Thread:
    """A daemon thread that takes the process down if it dies of anything: a channel thread that
    died quietly would leave a node that looks alive but never applies or never hears from Raft."""
    def run() -> None:
        try:
            target(*args)
        except BaseException:
            log.critical("thread %s failed unexpectedly; stopping the process", name, exc_info=True)
            exit_now(EXIT_INTERNAL)
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


class Outbox:
    """Messages queued by any thread and sent in order by one sender thread, so that a sender
    never blocks on the other process. `on_broken` runs once if the channel fails."""

    def __init__(self, channel: Channel, name: str, on_broken: Callable[[], None]) -> None:
        self._channel = channel
        self._queue: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self._on_broken = on_broken
        self._thread = start_thread(self._run, name)

    def put(self, *message: Any) -> None:
        self._queue.put(list(message))

    def close(self, timeout_s: float = 5.0) -> None:
        """Send everything queued so far, then stop the sender."""
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            try:
                self._channel.send(message)
            except OSError:
                self._on_broken()
                return


# ------------------------------------------------------------------ the child


class _ChildSnapshots:
    """Replication's snapshot hooks in the child: verify and pin here (PySyncObj may replace the
    file at once), let the parent's applier do the work."""

    def __init__(self, outbox: Outbox, data_dir: Path) -> None:
        self._outbox = outbox
        self._pins = itertools.count(1)
        for leftover in (*data_dir.glob(f"{SNAPSHOT_FILE_NAME}.install-*"), data_dir / f"{SNAPSHOT_FILE_NAME}.local"):
            leftover.unlink(missing_ok=True)  # from a run that stopped before installing or promoting them

    def request_snapshot(self, final_path: Path, raft_meta: dict[str, Any]) -> None:
        self._outbox.put("snapshot", str(final_path), raft_meta)

    def install_snapshot(self, path: Path) -> dict[str, Any]:
        header = snapshot.read_header(path, verify=True)
        pinned = path.with_name(f"{path.name}.install-{next(self._pins)}")
        pinned.unlink(missing_ok=True)
        os.link(path, pinned)
        self._outbox.put("install", str(pinned), header)
        return header["raft"]


def raft_main(fd: int) -> None:
    """The child: run Replication and serve the parent over the socket `fd` until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when Raft stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=fd))
    init = channel.recv()
    if init is None:
        os._exit(0)
    config, node_id, fault_injection, faults, log_level, log_format, join = pickle.loads(init[1])  # our parent's bytes
    logs.configure(log_level, node_id, log_format, process="raft")
    outbox = Outbox(channel, "raft-sender", lambda: os._exit(0))
    replication = _start_replication(config, config.node(node_id), outbox, fault_injection, faults, join)
    outbox.put("ready")
    start_thread(_publish_status, "raft-status", replication, outbox)
    _serve_parent(channel, replication, outbox)


def _stop_raft(reason: str) -> None:
    """Crash, don't limp: the node's parent sees this process die and stops too (exit 74)."""
    log.critical("Raft failed unexpectedly (%s); stopping this node's Raft process", reason)
    exit_now(EXIT_INTERNAL)


def _start_replication(config: ClusterConfig, node: NodeConfig, outbox: Outbox, fault_injection: bool,
                       faults: FaultKnobs, join: bool) -> Any:
    from raftchroma.replication import Replication
    try:
        return Replication(config, node, lambda index, data: outbox.put("entry", index, data),
                           fault_injection, _ChildSnapshots(outbox, Path(node.data_dir)), faults, on_fatal=_stop_raft,
                           join=join)
    except (JournalCorrupt, snapshot.SnapshotCorrupt) as exc:
        kind = "journal" if isinstance(exc, JournalCorrupt) else "snapshot"
        outbox.put("fatal", kind, str(exc))
        outbox.close()
        os._exit(EXIT_CORRUPT)


def _publish_status(replication: Any, outbox: Outbox) -> None:
    stopped = threading.Event()
    while not stopped.wait(STATUS_PERIOD_S):
        outbox.put("status", _status_of(replication))


def _status_of(replication: Any) -> dict[str, Any]:
    return {
        "raft": dict(vars(replication.status())),  # a shallow copy: asdict's deep copy cost more than the rest
        "journal_bytes": replication.journal_bytes,
        "snapshot_sends": replication.snapshot_sends(),
        "blocked_peers": replication.blocked_peers(),
        "settings_mismatches": replication.settings_mismatches(),
        "journal_fsync": replication.journal_fsync_seconds(),
    }


def _serve_parent(channel: Channel, replication: Any, outbox: Outbox) -> None:
    while True:
        message = channel.recv()
        if message is None:  # the parent is gone: nothing may run on without it
            os._exit(0)
        kind = message[0]
        if kind == "propose":
            token = message[1]
            replication.propose(message[2], lambda _result, err, token=token: outbox.put("proposed", token, err))
        elif kind == "read_index":
            token = message[1]
            replication.read_index(lambda index, token=token: outbox.put("read_index", token, index))
        elif kind == "transfer":
            token = message[1]
            replication.transfer_leadership(message[2], lambda err, token=token: outbox.put("transferred", token, err))
        elif kind == "membership":
            token = message[1]
            replication.change_membership(message[2], lambda result, token=token: outbox.put("membership", token, result))
        elif kind == "snapshot_done":
            replication.snapshot_done(message[1], None if message[2] is None else Path(message[2]))
        elif kind == "force_snapshot":
            replication.force_snapshot()
        elif kind == "block":
            replication.block_peers(message[1], message[2])
        elif kind == "disk_full":
            replication.inject_disk_full(message[1])
        elif kind == "stall":
            replication.stall(message[1], message[2])
        elif kind == "stop":
            replication.stop()
            outbox.put("stopped")
            outbox.close()
            os._exit(0)


# ------------------------------------------------------------------ the parent


class NodeHooks(Protocol):
    """What the node provides: entries, snapshot requests and installs, in log order."""

    def enqueue_entry(self, index: int, data: bytes) -> None: ...
    def request_snapshot(self, final_path: Path, raft_meta: dict[str, Any]) -> None: ...
    def queue_install(self, pinned: Path, header: dict[str, Any]) -> None: ...


class RaftProcess:
    """The node's Raft participant, running in a child process; the same surface as Replication."""

    def __init__(self, config: ClusterConfig, node: NodeConfig, hooks: NodeHooks, fault_injection: bool = False,
                 faults: FaultKnobs = FaultKnobs(), join: bool = False) -> None:
        self._hooks = hooks
        self._fault_injection = fault_injection
        self._config_ids = {n.id: n.raft_address for n in config.nodes}
        self._id_to_address = dict(self._config_ids)  # then the membership in force (see _dispatch "status")
        self._address_to_id = {n.raft_address: n.id for n in config.nodes}
        self.snapshot_path = Path(node.data_dir) / SNAPSHOT_FILE_NAME
        self._callbacks: dict[int, Callable[[Any, int], None]] = {}
        self._answer_callbacks: dict[int, Callable[[Any], None]] = {}
        self._tokens = itertools.count(1)
        self._status: dict[str, Any] = {}
        self._status_at = time.monotonic()
        self._raft = UNKNOWN_STATUS
        self._blocked: list[str] = []
        self._stopping = False
        self._started = threading.Event()
        self._fatal: tuple[str, str] | None = None
        parent_sock, child_sock = socket.socketpair()
        self._process = _spawn_child(child_sock)
        lower_own_priority(config.raft.store_niceness)  # the child keeps the priority it started with
        child_sock.close()
        self._channel = Channel(parent_sock)
        self._outbox = Outbox(self._channel, "raft-proxy-sender", self._child_gone)
        init = pickle.dumps((config, node.id, fault_injection, faults, logging.getLogger().level, logs.current_format(),
                             join))
        self._outbox.put("init", init)
        self._reader = start_thread(self._read_loop, "raft-proxy-reader")
        self._wait_started()

    def _wait_started(self) -> None:
        if not self._started.wait(START_TIMEOUT_S) or self._fatal is None and self._process.poll() is not None:
            raise RuntimeError(f"the Raft process did not start (exit code {self._process.poll()})")
        if self._fatal is not None:
            kind, message = self._fatal
            self._process.wait(timeout=STOP_TIMEOUT_S)
            raise JournalCorrupt(message) if kind == "journal" else snapshot.SnapshotCorrupt(message)

    def _read_loop(self) -> None:
        while True:
            message = self._channel.recv()
            if message is None:
                self._child_gone()
                return
            self._dispatch(message)

    def _dispatch(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == "entry":
            self._hooks.enqueue_entry(message[1], message[2])
        elif kind == "status":
            self._status, self._status_at = message[1], time.monotonic()
            raft = RaftStatus(**message[1]["raft"])
            if raft.members != self._raft.members:
                self._id_to_address = {**self._config_ids, **{m["id"]: m["raft"] for m in raft.members}}
                self._address_to_id = {address: node_id for node_id, address in self._id_to_address.items()}
            self._raft = raft
        elif kind == "proposed":
            callback = self._callbacks.pop(message[1], None)
            if callback is not None:
                callback(None, message[2])
        elif kind == "transferred":
            transfer_callback = self._answer_callbacks.pop(message[1], None)
            if transfer_callback is not None:
                transfer_callback(message[2])
        elif kind in ("read_index", "membership"):
            answer_callback = self._answer_callbacks.pop(message[1], None)
            if answer_callback is not None:
                answer_callback(message[2])
        elif kind == "snapshot":
            self._hooks.request_snapshot(Path(message[1]), message[2])
        elif kind == "install":
            self._hooks.queue_install(Path(message[1]), message[2])
        elif kind == "ready":
            self._started.set()
        elif kind == "fatal":
            self._fatal = (message[1], message[2])
            self._started.set()
        elif kind == "stopped":
            self._stopping = True

    def _child_gone(self) -> None:
        if self._stopping or self._fatal is not None:
            self._started.set()
            return
        code = self._process.poll()
        log.critical("the Raft process of this node stopped (exit code %s); stopping the node", code)
        exit_now(EXIT_RAFT_PROCESS)

    # ------------------------------------------------------- Replication's surface

    def propose(self, entry: bytes, callback: Callable[[Any, int], None]) -> None:
        token = next(self._tokens)
        self._callbacks[token] = callback
        self._outbox.put("propose", token, entry)

    def transfer_leadership(self, target_id: str | None, callback: Callable[[int], None]) -> None:
        token = next(self._tokens)
        self._answer_callbacks[token] = callback
        self._outbox.put("transfer", token, target_id)

    def read_index(self, callback: Callable[[int | None], None]) -> None:
        token = next(self._tokens)
        self._answer_callbacks[token] = callback
        self._outbox.put("read_index", token)

    def change_membership(self, change: dict[str, Any], callback: Callable[[dict[str, Any]], None]) -> None:
        """See replication._StateMachine.request_membership_change; `callback` on the reader thread."""
        token = next(self._tokens)
        self._answer_callbacks[token] = callback
        self._outbox.put("membership", token, change)

    def snapshot_done(self, ok: bool, written: Path | None = None) -> None:
        self._outbox.put("snapshot_done", ok, None if written is None else str(written))

    def force_snapshot(self) -> None:
        self._outbox.put("force_snapshot")

    def status(self) -> RaftStatus:
        return self._raft

    @property
    def journal_bytes(self) -> int:
        return int(self._status.get("journal_bytes", 0))

    def journal_fsync_seconds(self) -> dict[str, Any]:
        return dict(self._status.get("journal_fsync") or {})

    def alive(self) -> bool:
        """The child runs and has sent its status within `STATUS_STALE_S`."""
        return self._process.poll() is None and time.monotonic() - self._status_at < STATUS_STALE_S

    def snapshot_sends(self) -> dict[str, int]:
        return dict(self._status.get("snapshot_sends") or {})

    def settings_mismatches(self) -> dict[str, str]:
        return dict(self._status.get("settings_mismatches") or {})

    def block_peers(self, node_ids: list[str], inbound_only: bool = False) -> None:
        """TEST ONLY: see Replication.block_peers; checked here so that errors reach the caller."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        unknown = [n for n in node_ids if n not in self._id_to_address]
        if unknown:
            raise ValueError(f"unknown node ids: {unknown}")
        self._blocked = sorted(node_ids)
        self._outbox.put("block", list(node_ids), inbound_only)

    def blocked_peers(self) -> list[str]:
        return list(self._blocked) if self._fault_injection else []

    def inject_disk_full(self, on: bool) -> None:
        """TEST ONLY: the Raft journal's appends fail with ENOSPC while `on`."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        self._outbox.put("disk_full", on)

    def stall(self, seconds: float, at: str) -> None:
        """TEST ONLY: hold the Raft tick thread up once (see Replication.stall)."""
        if not self._fault_injection:
            raise RuntimeError("fault injection is not enabled on this node")
        self._outbox.put("stall", seconds, at)

    def node_id_of(self, raft_address: str | None) -> str | None:
        return self._address_to_id.get(raft_address) if raft_address else None

    def stop(self) -> None:
        self._stopping = True
        self._outbox.put("stop")
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._outbox.close(timeout_s=1.0)
        self._channel.close()


def lower_own_priority(increment: int) -> None:
    """Lower every thread of this process by `increment` nice levels (Linux keeps a nice value
    per thread, and a new thread starts with its creator's), so Chroma's threads, the HTTP loop
    and the applier yield the CPU to the Raft process. Anyone may lower their own priority."""
    if increment <= 0:
        return
    try:
        thread_ids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the call below applies to the whole process
        thread_ids = [0]
    for thread_id in thread_ids:
        try:
            current = os.getpriority(os.PRIO_PROCESS, thread_id)
            os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + increment))
        except OSError:  # the thread has ended
            continue


def _spawn_child(child_sock: socket.socket) -> subprocess.Popen[bytes]:
    fd = child_sock.fileno()
    cmd = [sys.executable, "-c", f"from raftchroma.raft_process import raft_main; raft_main({fd})"]
    return subprocess.Popen(cmd, pass_fds=(fd,), close_fds=True)
