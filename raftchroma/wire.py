"""The Raft wire: how two members' Raft processes talk over TCP. No pickle, nothing read before
it is authenticated, no frame larger than the largest legal message.

Owns: the connection and server classes that PySyncObj's TCP transport drives (duck-typed
replacements for `pysyncobj.tcp_connection.TcpConnection` and `pysyncobj.tcp_server.TcpServer`,
installed by `replication.RaftchromaTransport`), the handshake, the frame format and the limits.

PySyncObj 0.3.17's own wire unpickles every frame (`pickle.loads(zlib.decompress(data))`), reads a
32-bit length before any authentication and buffers that much, and without a password runs
whatever a reachable peer sends. This wire replaces it:

1. Each side sends a preamble at once: `MAGIC` (4 bytes) and a fresh random 32-byte nonce.
2. Both derive two AES-256-GCM keys (one per direction) with HKDF-SHA256 from the cluster secret,
   salted with both nonces (initiator's first). Fresh nonces on both sides make every
   connection's keys new, so nothing recorded from another connection can be replayed.
3. Every frame is `length (4 bytes, big-endian)` + `AES-GCM(key, nonce=frame counter,
   msgpack(message), aad=length)`. The counter is per direction and never repeats, so a frame
   cannot be replayed, dropped or reordered within a connection either.
4. The first frame each side sends is a small confirmation (`CONFIRM`); until the peer's has
   been verified, a length above `PREAUTH_MAX_FRAME_BYTES` drops the connection, and the
   connection counts as not connected: PySyncObj neither sends nor receives on it. After it, a
   length above `max_frame_bytes` (the largest legal entry plus overhead) drops it, before the
   frame's bytes are buffered. A frame that does not verify drops it. Only then is the
   plaintext decoded, with msgpack (arrays come back as tuples, as PySyncObj sent them).
5. A peer has `HANDSHAKE_TIMEOUT_S` from connecting to authenticate; at most
   `MAX_UNAUTHENTICATED` connections may be pending at once.

Without a secret (allowed only when every Raft address is loopback, see config.py) the keys are
derived from the empty secret: the framing, limits and no-pickle rule still hold, the
authentication does not. Members trust each other (as etcd peers do): a peer that holds the
secret is a member.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from typing import Any, Callable

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

MAGIC = b"RCW1"
NONCE_BYTES = 32
PREAMBLE_BYTES = len(MAGIC) + NONCE_BYTES
LENGTH_BYTES = 4
TAG_BYTES = 16
PREAUTH_MAX_FRAME_BYTES = 4096  # the confirmation frame is far smaller
FRAME_OVERHEAD_BYTES = 64 * 1024  # message fields around the largest payload, msgpack framing, tag
HANDSHAKE_TIMEOUT_S = 3.0
MAX_UNAUTHENTICATED = 64
CONFIRM = "raftchroma-wire-confirm"
HKDF_INFO = b"raftchroma wire v1"

# PySyncObj's connection states (pysyncobj.tcp_connection.CONNECTION_STATE)
DISCONNECTED, CONNECTING, CONNECTED = 0, 1, 2

# poller event bits (pysyncobj.poller.POLL_EVENT_TYPE)
EVENT_READ, EVENT_WRITE, EVENT_ERROR = 1, 2, 4


class WireRefused(Exception):
    """A peer broke the wire protocol or failed authentication; the connection is dropped."""


def derive_keys(secret: bytes, initiator_nonce: bytes, responder_nonce: bytes) -> tuple[bytes, bytes]:
    """(initiator-to-responder key, responder-to-initiator key) for one connection."""
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=initiator_nonce + responder_nonce,
                    info=HKDF_INFO).derive(secret)
    return material[:32], material[32:]


def frame_nonce(counter: int) -> bytes:
    return counter.to_bytes(12, "big")


def pack_message(message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpack_message(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=False)


def seal(aead: AESGCM, counter: int, message: Any) -> bytes:
    """One frame: length header + sealed msgpack of `message`."""
    plaintext = pack_message(message)
    length = (len(plaintext) + TAG_BYTES).to_bytes(LENGTH_BYTES, "big")
    return length + aead.encrypt(frame_nonce(counter), plaintext, length)


def _close(poller: Any, fileno: int | None, sock: socket.socket | None) -> None:
    if fileno is not None:
        poller.unsubscribe(fileno)
    if sock is not None:
        sock.close()


class WireConnection:
    """One Raft connection, driven by PySyncObj's poller (its tick thread); the methods and
    attributes PySyncObj's transport uses are those of its TcpConnection."""

    def __init__(self, poller: Any, secret: bytes, max_frame_bytes: int, sock: socket.socket | None = None,
                 timeout_s: float = 10.0, send_buffer_bytes: int = 2 ** 16, recv_buffer_bytes: int = 2 ** 16,
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        # PySyncObj's transport reads and writes these on TcpConnection; they stay unused here.
        self.encryptor = None
        self.sendRandKey = None  # noqa: N815 (PySyncObj's names)
        self.recvRandKey = None  # noqa: N815
        self._poller = poller
        self._secret = secret
        self._max_frame_bytes = max_frame_bytes
        self._timeout_s = timeout_s
        self._send_buffer_bytes = send_buffer_bytes
        self._recv_buffer_bytes = recv_buffer_bytes
        self._on_refused = on_refused
        self._on_message: Callable[[Any], None] | None = None
        self._on_connected: Callable[[], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._socket: socket.socket | None = None
        self._fileno: int | None = None
        self._state = DISCONNECTED
        self._generation = 0
        self._reset()
        if sock is not None:  # accepted by WireServer: this side responds
            self._initiator = False
            self._attach(sock)
            self._state = CONNECTING
            self._send_preamble()

    def _reset(self) -> None:
        self._generation += 1  # a callback may reconnect this object: older buffers then stop
        self._read_buffer = bytearray()
        self._write_buffer = bytearray()
        self._pending: list[Any] = []  # messages sent before authentication, sealed once it is done
        self._nonce = os.urandom(NONCE_BYTES)
        self._peer_nonce: bytes | None = None
        self._send_aead: AESGCM | None = None
        self._recv_aead: AESGCM | None = None
        self._send_counter = 0
        self._recv_counter = 0
        self._authenticated = False
        self._started_s = time.monotonic()
        self._last_read_s = self._started_s
        self._peer = "?"
        self._initiator = True

    # ------------------------------------------------------------ PySyncObj's interface

    @property
    def state(self) -> int:
        return self._state

    def fileno(self) -> int | None:
        return self._fileno

    def setOnConnectedCallback(self, callback: Callable[[], None]) -> None:  # noqa: N802
        self._on_connected = callback

    def setOnMessageReceivedCallback(self, callback: Callable[[Any], None]) -> None:  # noqa: N802
        self._on_message = callback

    def setOnDisconnectedCallback(self, callback: Callable[[], None]) -> None:  # noqa: N802
        self._on_disconnected = callback

    def getSendBufferSize(self) -> int:  # noqa: N802
        return len(self._write_buffer)

    @property
    def started_s(self) -> float:
        return self._started_s

    def check_handshake_timeout(self) -> None:
        """Drop the connection if its handshake has lasted too long. Called from the transport's
        tick: a peer that sends nothing causes no poller event. (An authenticated link that is
        merely idle, as between two followers, is kept, as PySyncObj keeps it.)"""
        if self._state != DISCONNECTED and self._handshake_overdue(time.monotonic()):
            self.disconnect()

    def connect(self, host: str | None, port: int) -> bool:
        if host is None:
            return False
        self._close_socket()
        self._state = DISCONNECTED
        self._reset()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        self._attach(sock)
        try:
            sock.connect((host, port))
        except OSError as exc:
            if exc.errno not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                self._close_socket()
                return False
        self._peer = f"{host}:{port}"
        self._state = CONNECTING
        self._send_preamble()
        return True

    def send(self, message: Any) -> None:
        if self._state == DISCONNECTED:
            return
        if self._timed_out():  # as PySyncObj's: a peer that sends nothing back while we send is dead
            self.disconnect()
            return
        if not self._authenticated:
            self._pending.append(message)
            return
        self._write_buffer += seal(self._send_aead, self._send_counter, message)  # type: ignore[arg-type]
        self._send_counter += 1
        self._flush()

    def disconnect(self) -> None:
        notify = self._on_disconnected is not None and self._state != DISCONNECTED
        self._close_socket()
        self._state = DISCONNECTED
        self._read_buffer = bytearray()
        self._write_buffer = bytearray()
        self._pending = []
        self._authenticated = False
        if notify:
            self._on_disconnected()  # type: ignore[misc]

    # ------------------------------------------------------------ socket plumbing

    def _attach(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer_bytes)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self._socket = sock
        self._fileno = sock.fileno()
        try:
            host, port = sock.getpeername()[:2]
            self._peer = f"{host}:{port}"
        except OSError:
            pass
        self._poller.subscribe(self._fileno, self._on_event, EVENT_READ | EVENT_WRITE | EVENT_ERROR)

    def _close_socket(self) -> None:
        _close(self._poller, self._fileno, self._socket)
        self._fileno, self._socket = None, None

    def _on_event(self, descr: int, event: int) -> None:
        if descr != self._fileno:
            self._poller.unsubscribe(descr)
            return
        if event & EVENT_ERROR or self._timed_out():
            self.disconnect()
            return
        if self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # type: ignore[union-attr]
            self.disconnect()
            return
        if event & EVENT_WRITE:
            self._flush()
            if self._state == DISCONNECTED:
                return
            wanted = EVENT_READ | EVENT_ERROR | (EVENT_WRITE if self._write_buffer else 0)
            self._poller.subscribe(descr, self._on_event, wanted)
        if event & EVENT_READ:
            self._read()

    def _timed_out(self) -> bool:
        now = time.monotonic()
        return self._handshake_overdue(now) or now - self._last_read_s > self._timeout_s

    def _handshake_overdue(self, now: float) -> bool:
        return not self._authenticated and now - self._started_s > HANDSHAKE_TIMEOUT_S

    def _flush(self) -> None:
        while self._write_buffer and self._socket is not None:
            try:
                sent = self._socket.send(self._write_buffer)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.disconnect()
                return
            if sent <= 0:
                return
            del self._write_buffer[:sent]

    def _read(self) -> None:
        while self._socket is not None:
            try:
                incoming = self._socket.recv(self._recv_buffer_bytes)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.disconnect()
                return
            if not incoming:
                self.disconnect()
                return
            self._last_read_s = time.monotonic()
            self._read_buffer += incoming
            generation = self._generation
            try:
                self._consume()
            except WireRefused as exc:
                if generation == self._generation:
                    self._refuse(str(exc))
                return
            if self._state == DISCONNECTED or generation != self._generation:
                return

    def _refuse(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(self._peer, reason)
        self.disconnect()

    # ------------------------------------------------------------ the protocol

    def _send_preamble(self) -> None:
        self._write_buffer += MAGIC + self._nonce
        self._flush()

    def _consume(self) -> None:
        """Handle every complete preamble and frame in the read buffer; raises WireRefused."""
        buffer = self._read_buffer
        generation = self._generation
        position = 0
        if self._peer_nonce is None:
            if len(buffer) < PREAMBLE_BYTES:
                if bytes(buffer[:len(MAGIC)]) != MAGIC[:len(buffer)]:
                    raise WireRefused("not a raftchroma Raft peer (bad preamble)")
                return
            if bytes(buffer[:len(MAGIC)]) != MAGIC:
                raise WireRefused("not a raftchroma Raft peer (bad preamble)")
            self._start_session(bytes(buffer[len(MAGIC):PREAMBLE_BYTES]))
            position = PREAMBLE_BYTES
        while len(buffer) - position >= LENGTH_BYTES and self._live(generation):
            header = bytes(buffer[position:position + LENGTH_BYTES])
            length = int.from_bytes(header, "big")
            limit = self._max_frame_bytes if self._authenticated else PREAUTH_MAX_FRAME_BYTES
            if length > limit or length < TAG_BYTES:
                raise WireRefused(f"frame of {length} bytes refused (limit {limit})")
            if len(buffer) - position - LENGTH_BYTES < length:
                break
            start = position + LENGTH_BYTES
            sealed = bytes(buffer[start:start + length])
            position = start + length
            self._receive(header, sealed)
        if self._live(generation):
            del buffer[:position]

    def _live(self, generation: int) -> bool:
        return self._state != DISCONNECTED and generation == self._generation

    def _start_session(self, peer_nonce: bytes) -> None:
        self._peer_nonce = peer_nonce
        if self._initiator:
            outbound, inbound = derive_keys(self._secret, self._nonce, peer_nonce)
        else:
            inbound, outbound = derive_keys(self._secret, peer_nonce, self._nonce)
        self._send_aead, self._recv_aead = AESGCM(outbound), AESGCM(inbound)
        self._write_buffer += seal(self._send_aead, 0, CONFIRM)
        self._send_counter = 1
        self._flush()

    def _receive(self, header: bytes, sealed: bytes) -> None:
        try:
            plaintext = self._recv_aead.decrypt(frame_nonce(self._recv_counter), sealed, header)  # type: ignore[union-attr]
        except InvalidTag:
            raise WireRefused("authentication failed: a different cluster secret, or not a member") from None
        self._recv_counter += 1
        try:
            message = unpack_message(plaintext)
        except Exception:  # noqa: BLE001 (any decoding error means the same: drop the peer)
            raise WireRefused("undecodable frame") from None
        if not self._authenticated:
            if message != CONFIRM:
                raise WireRefused("no confirmation frame")
            self._authenticated = True
            self._state = CONNECTED
            pending, self._pending = self._pending, []
            for queued in pending:
                self.send(queued)
            if self._initiator and self._on_connected is not None:
                self._on_connected()
            return
        if self._on_message is not None:
            self._on_message(message)


class WireServer:
    """The listening socket (PySyncObj's TcpServer interface: bind, unbind); each accepted
    socket becomes a responding WireConnection handed to `on_new_connection`."""

    def __init__(self, poller: Any, host: str, port: int, on_new_connection: Callable[[WireConnection], None],
                 make_connection: Callable[[socket.socket], WireConnection]) -> None:
        self._poller = poller
        self._host = host
        self._port = int(port)
        self._on_new_connection = on_new_connection
        self._make_connection = make_connection
        self._socket: socket.socket | None = None
        self._fileno: int | None = None

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        try:
            sock.bind((self._host, self._port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._fileno = sock.fileno()
        self._poller.subscribe(self._fileno, self._on_event, EVENT_READ | EVENT_ERROR)

    def unbind(self) -> None:
        _close(self._poller, self._fileno, self._socket)
        self._fileno, self._socket = None, None

    def _on_event(self, descr: int, event: int) -> None:
        if event & EVENT_READ and self._socket is not None:
            try:
                sock, _ = self._socket.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EMFILE):
                    self.unbind()
                return
            self._on_new_connection(self._make_connection(sock))
        if event & EVENT_ERROR:
            self.unbind()
