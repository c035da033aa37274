"""A test's end of a Raft connection: a blocking client of raftchroma's wire (raftchroma/wire.py),
so a test can play a leader, an impostor or a hostile peer against a real node's Raft port."""

from __future__ import annotations

import os
import socket
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from raftchroma import wire


class PeerClosed(AssertionError):
    """The node closed the connection."""


class WirePeer:
    def __init__(self, port: int, secret: bytes, timeout_s: float = 20.0, host: str = "127.0.0.1",
                 verify_node: bool = True) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        nonce = os.urandom(wire.NONCE_BYTES)
        self.sock.sendall(wire.MAGIC + nonce)
        preamble = self._read_exactly(wire.PREAMBLE_BYTES)
        if preamble[:len(wire.MAGIC)] != wire.MAGIC:
            raise AssertionError(f"not a raftchroma Raft port: {preamble!r}")
        outbound, inbound = wire.derive_keys(secret, nonce, preamble[len(wire.MAGIC):])
        self._send_aead, self._recv_aead = AESGCM(outbound), AESGCM(inbound)
        self._send_counter = 0
        self._recv_counter = 0
        self.send(wire.CONFIRM)
        if not verify_node:  # a peer with another secret: the node's confirmation would not verify
            return
        confirm = self.receive()
        if confirm != wire.CONFIRM:
            raise AssertionError(f"expected the node's confirmation, got {confirm!r}")

    def _read_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise PeerClosed("the node closed the Raft connection")
            data += chunk
        return data

    def send(self, message: Any) -> None:
        self.sock.sendall(wire.seal(self._send_aead, self._send_counter, message))
        self._send_counter += 1

    def receive(self) -> Any:
        header = self._read_exactly(wire.LENGTH_BYTES)
        sealed = self._read_exactly(int.from_bytes(header, "big"))
        plaintext = self._recv_aead.decrypt(wire.frame_nonce(self._recv_counter), sealed, header)
        self._recv_counter += 1
        return wire.unpack_message(plaintext)

    def close(self) -> None:
        self.sock.close()


def closed_by_node(sock: socket.socket, timeout_s: float) -> bool:
    """Read until the node closes `sock` (True) or `timeout_s` passes with it still open (False)."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
