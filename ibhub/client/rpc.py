"""Request/reply over one DEALER socket: one Future per request id.

A DEALER (not REQ) lets many requests be in flight at once (heartbeats keep going
while a slow historical-bars request waits) and survives a hub restart: REQ would
be stuck in its send/receive lock-step after a lost reply. The reply's ``id`` is
the only thing that matches it to its request; a reply nobody waits for any more
(its request timed out) is logged and handed to ``on_unmatched``.

``IMMEDIATE`` is set so a request is never queued on a connection that is not up:
a request sent while the hub is down waits for it (bounded by the timeout) instead
of being delivered minutes later to a hub that restarted.

The socket is driven from the loop without ``zmq.asyncio`` (by ``wire.EdgeReader``,
as the SUB socket in ``stream.py``): requests go out with a NOBLOCK
send, replies are drained when the socket's ZMQ_FD signals, and each resolves its
request's future directly: no awaited send, no reader task to wake between the
reply and the caller (the SDK's order ack). The FD is edge-triggered, so a
drain reads until ``zmq.Again``, and a send (which can take the edge of a waiting
reply) looks at ``EVENTS`` afterwards. A send refused with ``zmq.Again`` (no
connection up yet, or the queue is full) waits for the FD to report the socket
writable, retrying at least every ``SEND_RETRY`` seconds (on a loop without
``add_reader`` the reader polls instead, and the retry bound is what wakes a send).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.client.curve import ClientCurve, HandshakeWatch
from ibhub.client.errors import HubError, HubTimeout
from ibhub.protocol import Error, Reply, Request

log = logging.getLogger(__name__)

DRAIN_BATCH = 256  # replies handled per loop turn before the loop's other work runs
SEND_RETRY = 0.05  # seconds: the longest a send waits for a writable signal it missed


class RpcChannel:
    """Sends requests to the hub's ROUTER and matches replies by id."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        *,
        timeout: float = 10.0,
        on_unmatched: Callable[[Reply], None] | None = None,
        curve: ClientCurve | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.curve = curve  # CURVE client keys for a hub that requires them (client/curve.py)
        self.timeout = timeout
        self.on_unmatched = on_unmatched
        self._context = context
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._socket: zmq.asyncio.Socket | None = None
        self._handshake: HandshakeWatch | None = None
        self._reader: wire.EdgeReader | None = None  # drains replies into _on_reply
        self._writable: list[asyncio.Future[None]] = []  # sends waiting for room

    @property
    def auth_failure(self) -> str | None:
        """Why the last CURVE handshake failed (None: no CURVE, or it succeeded)."""
        return self._handshake.failure if self._handshake is not None else None

    def open(self) -> None:
        """Create the socket and start the reply reader (needs a running loop)."""
        if self._socket is not None:
            return
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        # The hub binds a lease to the routing identity of the connection that opened it
        # (docs/security.md). An explicit random one survives the socket's reconnects (a
        # hub restart, a network blip), where ZeroMQ would assign a new one per
        # connection; the first byte is never 0 (ZeroMQ reserves those).
        sock.setsockopt(zmq.ROUTING_ID, b"\x01" + secrets.token_bytes(16))
        if self.curve is not None:
            self.curve.apply(sock)
            self._handshake = HandshakeWatch(sock, self.curve)
        sock.connect(self.endpoint)
        self._socket = sock
        self._reader = wire.EdgeReader(
            sock, self._on_reply, batch=DRAIN_BATCH, name=f"rpc-reader {self.endpoint}",
            after_drain=self._wake_writers,
        )
        self._reader.start()

    async def close(self) -> None:
        """Stop the reader, fail pending requests and close the socket."""
        reader, self._reader = self._reader, None
        for waiter in self._writable:
            if not waiter.done():
                waiter.set_result(None)  # its request then finds the channel closed
        self._writable.clear()
        if reader is not None:
            await reader.stop()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HubError("cancelled", "the SDK was closed"))
        self._pending.clear()
        handshake, self._handshake = self._handshake, None
        if handshake is not None:
            await handshake.close()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    async def request(self, request: Request, timeout: float | None = None) -> Reply:
        """Send ``request`` with a fresh id and return its reply.

        Raises ``HubTimeout`` when no reply arrives in ``timeout`` seconds (default:
        the channel's), and ``HubError`` when the hub answers with an ``Error``.
        """
        sock = self._socket
        if sock is None:
            raise HubError("closed", "the request channel is closed: connect() first")
        rid = next(self._ids)
        message = msgspec.structs.replace(request, id=rid)
        limit = self.timeout if timeout is None else timeout
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            async with asyncio.timeout(limit):
                await self._send(wire.encode(message))
                reply = await future
        except TimeoutError:
            tag = type(request).__struct_config__.tag
            raise HubTimeout(
                f"no reply to {tag!r} request #{rid} from the hub at {self.endpoint} "
                f"within {limit:.1f}s ({self.auth_failure or 'is `ibhub run` running there?'})"
            ) from None
        finally:
            self._pending.pop(rid, None)
        if isinstance(reply, Error):
            raise HubError(reply.code, reply.message, reply.ib_code)
        return reply

    async def _send(self, payload: bytes) -> None:
        """NOBLOCK send on the plain socket; on ``zmq.Again`` wait until writable."""
        while True:
            reader = self._reader
            if reader is None:
                raise HubError("closed", "the request channel was closed")
            try:
                reader.plain.send_multipart([b"", payload], flags=zmq.NOBLOCK)
                break
            except zmq.Again:  # no connection up (IMMEDIATE), or the queue is full
                waiter = asyncio.get_running_loop().create_future()
                self._writable.append(waiter)
                try:
                    await asyncio.wait((waiter,), timeout=SEND_RETRY)
                finally:
                    if waiter in self._writable:
                        self._writable.remove(waiter)
        # The send processed the socket's commands and may have taken the FD's edge
        # while a reply waits: look, and drain on the next turn if so.
        reader.after_send()

    def _wake_writers(self) -> None:
        """After a drain (the FD signalled): wake the sends waiting for room."""
        reader = self._reader
        if self._writable and reader is not None and (
            int(reader.plain.getsockopt(zmq.EVENTS)) & zmq.POLLOUT
        ):
            waiters, self._writable = self._writable, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _on_reply(self, frames: list[bytes]) -> None:
        try:
            reply = wire.decode_reply(frames[-1])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring an undecodable reply from %s: %s", self.endpoint, exc)
            return
        future = self._pending.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply)
            return
        if isinstance(reply, Error):
            log.warning(
                "unmatched error reply (request #%d): %s: %s",
                reply.id, reply.code, reply.message,
            )
        else:
            log.debug("reply #%d arrived after its request gave up: %r", reply.id, reply)
        if self.on_unmatched is not None:
            try:
                self.on_unmatched(reply)
            except Exception:
                log.exception("on_unmatched handler failed")
