"""How request bytes come in: deadlines, a budget for bodies in flight, and gzip bodies.

Owns:
- the header deadline: a connection whose request headers are not complete within
  `[http] header_read_timeout_s` of their first byte is closed (a client trickling bytes cannot
  hold a connection and a handler slot for ever). aiohttp has no such timeout, so each
  connection's protocol is wrapped (`HeaderDeadline`); the middleware tells it when a request's
  handler starts (its headers are complete) and ends;
- reading a body (`read_body`): within `body_read_timeout_s` (else 408 and the connection is
  closed), at most `[cluster] max_body_bytes` (413), counted after decompression for
  `Content-Encoding: gzip` and inflated piece by piece so a gzip bomb stops at the limit;
- the budget: bytes of request bodies held by all requests of this node together stay under
  `[http] max_inflight_body_bytes` (503 `Overloaded` when full, before the body is read if its
  length is declared). A request's bytes return to the budget when its handler ends.

Must not: parse JSON or know any route (parse.py and app.py do), or decide who may do what (auth.py).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any, Callable

from aiohttp import web

from raftchroma.config import HttpLimits
from raftchroma.errors import ApiError, InvalidArgument
from raftchroma.node import Overloaded

log = logging.getLogger(__name__)

GZIP = ("gzip", "x-gzip")
IDENTITY = ("", "identity")
READ_CHUNK_BYTES = 256 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around deflate data


class BodyTooLarge(ApiError):
    status = 413
    name = "ChromaError"
    close_connection = True  # no keep-alive: aiohttp drops the rest of the body (LINGER_S), then closes

    def __init__(self) -> None:
        super().__init__("Failed to buffer the request body: length limit exceeded")


class BodyTimeout(ApiError):
    status = 408
    name = "ChromaError"
    close_connection = True


class Budget:
    """Bytes of request bodies held by this node's requests. Used on the event loop only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_flight_bytes = 0

    def take(self, n: int) -> None:
        if self.in_flight_bytes + n > self.max_bytes:
            exc = Overloaded(f"Request bodies in flight on this node would reach {self.in_flight_bytes + n} bytes, "
                             f"above [http] max_inflight_body_bytes = {self.max_bytes}; retry later")
            exc.close_connection = True
            raise exc
        self.in_flight_bytes += n

    def give_back(self, n: int) -> None:
        self.in_flight_bytes -= n
        assert self.in_flight_bytes >= 0, "the body budget went negative"


class Lease:
    """What one request took from the budget; returned when its handler ends."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.bytes = 0

    def take(self, n: int) -> None:
        self.budget.take(n)
        self.bytes += n

    def close(self) -> None:
        self.budget.give_back(self.bytes)
        self.bytes = 0


class Inflater:
    """gzip bytes in, at most `limit_bytes` inflated bytes out (else BodyTooLarge); several
    gzip members in a row are one body, as `gzip.decompress` reads them."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.out_bytes = 0
        self._z = zlib.decompressobj(_GZIP_WBITS)

    def feed(self, data: bytes) -> bytes:
        pieces = []
        try:
            while data:
                if self._z.eof:
                    self._z = zlib.decompressobj(_GZIP_WBITS)
                # max_length bounds what one call may inflate: never more than one byte past the limit
                piece = self._z.decompress(data, self.limit_bytes - self.out_bytes + 1)
                self.out_bytes += len(piece)
                if self.out_bytes > self.limit_bytes:
                    raise BodyTooLarge()
                pieces.append(piece)
                data = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
        except zlib.error as exc:
            raise InvalidArgument(f"Failed to decompress the gzip request body: {exc}") from None
        return b"".join(pieces)

    def finish(self) -> None:
        if not self._z.eof:
            raise InvalidArgument("Failed to decompress the gzip request body: it ends before the gzip stream does")


class Intake:
    """This node's request limits and body budget; one per app (`INTAKE_KEY`)."""

    def __init__(self, limits: HttpLimits, max_body_bytes: int) -> None:
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.budget = Budget(limits.max_inflight_body_bytes)

    def protocol_factory(self, make_protocol: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's per-connection protocol factory (`AppRunner.server`) with the header deadline."""
        timeout_s = self.limits.header_read_timeout_s
        return lambda: HeaderDeadline(make_protocol(), timeout_s)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        connection = request.transport.get_protocol() if request.transport is not None else None
        if isinstance(connection, HeaderDeadline):
            connection.request_started()
        lease = Lease(self.budget)
        request[LEASE_KEY] = lease
        try:
            return await handler(request)
        finally:
            lease.close()
            if isinstance(connection, HeaderDeadline):
                connection.request_finished()


LEASE_KEY = "raftchroma.lease"
INTAKE_KEY = web.AppKey("intake", Intake)


async def read_body(request: web.Request) -> bytes:
    """The whole body, decompressed, within the deadline, the size limit and the budget."""
    intake = request.app[INTAKE_KEY]
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in GZIP + IDENTITY:
        raise ApiError(f"Unsupported Content-Encoding {encoding!r}: send the body as is or gzip it",
                       status=415, name="ChromaError")
    try:
        async with asyncio.timeout(intake.limits.body_read_timeout_s):
            return await _read(request, intake.max_body_bytes, request[LEASE_KEY], encoding in GZIP)
    except TimeoutError:
        raise BodyTimeout(f"The request body did not arrive within {intake.limits.body_read_timeout_s:g} s "
                          "([http] body_read_timeout_s)") from None


async def _read(request: web.Request, max_bytes: int, lease: Lease, gzipped: bool) -> bytes:
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge()
    if declared is not None and not gzipped:
        lease.take(declared)  # the whole body at once: refused before a byte of it is read
    inflater = Inflater(max_bytes) if gzipped else None
    parts, size, raw = [], 0, 0
    while chunk := await request.content.read(READ_CHUNK_BYTES):
        raw += len(chunk)
        if raw > max_bytes:  # also as sent: endless empty gzip members inflate to nothing
            raise BodyTooLarge()
        if inflater is not None:
            chunk = inflater.feed(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge()
        if declared is None or gzipped:
            lease.take(len(chunk))
        parts.append(chunk)
    if inflater is not None:
        inflater.finish()
    return b"".join(parts)


class HeaderDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, plus a deadline: from the first byte that arrives
    while no request is being handled until a handler starts (its headers are complete)."""

    def __init__(self, inner: Any, timeout_s: float) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handling = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._handling and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expired)
        self.inner.data_received(data)

    def request_started(self) -> None:
        self._handling += 1
        self._cancel()

    def request_finished(self) -> None:
        self._handling -= 1

    def _expired(self) -> None:
        self._timer = None
        log.info("closing a connection whose request headers did not arrive within %g s", self.timeout_s)
        if self.transport is not None:
            self.transport.abort()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
