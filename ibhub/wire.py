"""The only code that knows ibhub's ZeroMQ frame layout.

PUB/SUB: two frames ``[topic (utf-8), payload (msgpack Event)]``.
Request/reply: the client sends ``[b"", payload]`` (a REQ socket adds the empty
delimiter itself; a DEALER must send it); the ROUTER side sees
``[identity, b"", payload]`` and answers ``[identity, b"", reply]``.

Hot-path facts measured on this machine (see the performance issue) shape
:class:`Publisher`: a plain (not ``zmq.asyncio``) socket, two ``send()`` calls with
``SNDMORE`` instead of ``send_multipart`` (0.5 us vs 1.6 us per publish), one reused
encoder.

:class:`EdgeReader` drives a socket from the event loop through its edge-triggered
``ZMQ_FD`` (the SDK's SUB and DEALER, the hub's ROUTER): it lives here, beside
:func:`fast_receiver` and :func:`drain`, because the SDK may import only the shared
contract (``protocol``, ``wire``, ``keys``) and the hub reads its requests the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import zmq
import zmq.asyncio

from ibhub.protocol import AnyEvent, AnyReply, AnyRequest, Bundle, Event, Reply, Request, Ticks

DEFAULT_PUB: Final = "tcp://127.0.0.1:5570"
DEFAULT_RPC: Final = "tcp://127.0.0.1:5571"
ENV_PUB: Final = "IBHUB_PUB"
ENV_RPC: Final = "IBHUB_RPC"

MAX_REQUEST_BYTES: Final = 1 << 20  # a request frame larger than this is refused unread
MAX_REQUEST_FRAMES: Final = 8  # identity + delimiter + payload, with room for proxies
POLL_FALLBACK_MS: Final = 50  # loops without add_reader: the longest a lost edge delays a read

log = logging.getLogger(__name__)


def pub_endpoint(explicit: str | None = None) -> str:
    """The PUB endpoint: the argument, else ``$IBHUB_PUB``, else the default."""
    return explicit or os.environ.get(ENV_PUB) or DEFAULT_PUB


def rpc_endpoint(explicit: str | None = None) -> str:
    """The request endpoint: the argument, else ``$IBHUB_RPC``, else the default."""
    return explicit or os.environ.get(ENV_RPC) or DEFAULT_RPC


# One encoder and one decoder per type family, reused for every message.
_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(AnyRequest)
_reply_decoder = msgspec.msgpack.Decoder(AnyReply)
_event_decoder = msgspec.msgpack.Decoder(AnyEvent)

encode = _encoder.encode


def decode_request(payload: bytes) -> Request:
    """Decode a request; raises ``msgspec.DecodeError``/``ValidationError`` with the reason."""
    return _request_decoder.decode(payload)


def decode_reply(payload: bytes) -> Reply:
    return _reply_decoder.decode(payload)


def decode_event(payload: bytes) -> Event:
    return _event_decoder.decode(payload)


def unbatch(event: Event) -> Sequence[Event]:
    """The events one PUB message carries: a ``Ticks`` batch's ticks, else the event itself."""
    return event.ticks if type(event) is Ticks else (event,)


def events_of(topic: str, message: Event) -> list[tuple[str, Event]]:
    """(topic, event) of every event one PUB message on ``topic`` carries: a batch's
    ticks, a bundle's ticks under their own topics, else the event itself."""
    if type(message) is Bundle:
        return [(name, event) for name, inner in message.messages
                for event in unbatch(inner)]
    return [(topic, event) for event in unbatch(message)]


def request_id_of(payload: bytes) -> int:
    """Best effort: the ``id`` of a request that failed to decode, else 0.

    Lets the hub echo the id in its error reply when only part of a request is bad.
    """

    class _IdOnly(msgspec.Struct):
        id: int = 0

    try:
        return msgspec.msgpack.decode(payload, type=_IdOnly).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0


def split_envelope(frames: Sequence[bytes]) -> tuple[list[bytes], bytes]:
    """Split ROUTER frames into (envelope up to and including the delimiter, payload).

    The payload is the last frame. Raises ``ValueError`` when the frames cannot be a
    request (no payload, or more frames than any well-formed client sends).
    """
    if len(frames) < 2:
        raise ValueError(f"expected identity and payload frames, got {len(frames)} frame(s)")
    if len(frames) > MAX_REQUEST_FRAMES:
        raise ValueError(f"too many frames: {len(frames)} (at most {MAX_REQUEST_FRAMES})")
    return list(frames[:-1]), frames[-1]


def fast_receiver(sock: zmq.Socket[bytes]) -> Callable[[], list[bytes]]:
    """``sock.recv_multipart(zmq.NOBLOCK)`` at a quarter of the cost (raises ``zmq.Again``).

    pyzmq's ``recv_multipart`` asks for ``RCVMORE`` through its Python option layer
    after every frame (~0.9 us a call); the backend's ``recv`` with ``copy=False``
    returns a Frame whose ``more`` flag is free. Measured on a two-frame event:
    4.9 us -> 1.75 us per message. The frames of a message arrive together, so
    only the first receive can find nothing queued.
    """
    recv = zmq.backend.Socket.recv.__get__(sock)  # skips the sugar wrapper too
    noblock = int(zmq.NOBLOCK)

    def receive() -> list[bytes]:
        frame = recv(noblock, False)
        frames = [frame.bytes]
        while frame.more:
            frame = recv(noblock, False)
            frames.append(frame.bytes)
        return frames

    return receive


def drain(
    receive: Callable[[], list[bytes]], handle: Callable[[list[bytes]], None], limit: int
) -> bool:
    """Receive (NOBLOCK, e.g. :func:`fast_receiver`) and handle up to ``limit`` messages.

    Returns True when it stopped at ``limit`` (more may be queued: drain again on a
    later loop turn, since an edge-triggered ZMQ_FD will not signal them again), False
    when nothing is left. ``zmq.ZMQError`` other than ``Again`` (a closed socket)
    reaches the caller.
    """
    for _ in range(limit):
        try:
            frames = receive()
        except zmq.Again:
            return False
        handle(frames)
    return True


class EdgeReader:
    """Hands every message a socket receives to ``handle``, woken by the socket's ZMQ_FD.

    Waking through ``loop.add_reader`` costs one callback; an awaited ``zmq.asyncio``
    receive costs ~30 us (a Future and a poller update) per wake-up. The FD is
    edge-triggered: it signals that the socket's state *changed*, so

    * a wake-up drains until ``zmq.Again`` (:func:`drain`), at most ``batch`` messages
      per loop turn, the rest on the next turn (the FD would not signal them again);
    * any other operation on the socket (a send, a subscribe) may take the edge of a
      message that is waiting: after one, the owner calls :meth:`after_send`, which looks
      at ``EVENTS`` and drains on the next turn if input is queued (a send made inside
      ``handle`` needs nothing: the drain reads until ``zmq.Again`` anyway), or
      :meth:`schedule`, which drains on the next turn unconditionally.

    ``after_drain`` (optional) runs after every drain that found the socket open (the
    DEALER wakes its sends waiting for room there). A loop without ``add_reader``
    (Windows' proactor) gets a task that waits with pyzmq's poller instead, bounded by
    ``POLL_FALLBACK_MS`` should a send have taken an edge. ``handle`` must not raise;
    a ``zmq.ZMQError`` while receiving (the socket closed under the loop) ends that
    drain and is logged at ``failure_level``.
    """

    __slots__ = (
        "_after_drain", "_batch", "_fd", "_handle", "_loop", "_scheduled", "_socket",
        "_task", "draining", "failure_level", "name", "plain", "receive",
    )  # fmt: skip

    def __init__(
        self,
        socket: zmq.Socket[Any],
        handle: Callable[[list[bytes]], None],
        *,
        batch: int,
        name: str,
        receive: Callable[[], list[bytes]] | None = None,
        after_drain: Callable[[], None] | None = None,
        failure_level: int = logging.DEBUG,
    ) -> None:
        self._socket = socket
        # A plain view of the same socket (a zmq.asyncio socket is read the same way:
        # its own machinery stays idle because nothing awaits on it).
        self.plain: zmq.Socket[bytes] = zmq.Socket.shadow(socket.underlying)
        self.receive = receive if receive is not None else fast_receiver(self.plain)
        self.name = name
        self.failure_level = failure_level
        self.draining = False  # inside handle: a send there needs no EVENTS check
        self._handle = handle
        self._batch = batch
        self._after_drain = after_drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._scheduled = False

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Watch the socket from the running loop; drain what is already queued."""
        if self._loop is not None:
            return
        loop = asyncio.get_running_loop()
        fd = int(self.plain.getsockopt(zmq.FD))
        try:
            loop.add_reader(fd, self._drain)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            self._task = loop.create_task(self._poll_forever(), name=f"ibhub {self.name}")
        else:
            self._fd = fd
        self._loop = loop
        self.schedule()  # messages queued before the reader was registered

    async def stop(self) -> None:
        """Stop watching (the socket stays open: its owner closes it)."""
        loop, self._loop = self._loop, None
        fd, self._fd = self._fd, None
        if fd is not None and loop is not None:
            loop.remove_reader(fd)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def schedule(self) -> None:
        """Drain on the next loop turn (once, however often it is asked)."""
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def after_send(self) -> None:
        """After an operation on the socket outside a drain: drain on the next turn if
        input waits (the operation may have taken the FD's edge)."""
        if self.draining or self._loop is None:
            return
        try:
            if int(self.plain.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                self.schedule()
        except zmq.ZMQError:  # closed during shutdown
            pass

    def _drain(self) -> None:
        self._scheduled = False
        if self._loop is None:
            return  # stopped meanwhile
        self.draining = True
        try:
            more = drain(self.receive, self._handle, self._batch)
        except zmq.ZMQError as exc:  # the socket was closed under the loop
            log.log(self.failure_level, "%s: receive failed: %s", self.name, exc)
            return
        finally:
            self.draining = False
        if more:
            self.schedule()  # more may be queued: after the loop's other work
        if self._after_drain is not None:
            self._after_drain()

    async def _poll_forever(self) -> None:
        sock = self._socket
        if not isinstance(sock, zmq.asyncio.Socket):
            sock = zmq.asyncio.Socket.from_socket(self.plain)
        poller = zmq.asyncio.Poller()
        poller.register(sock, zmq.POLLIN)
        while True:
            await poller.poll(POLL_FALLBACK_MS)
            self._drain()


class Interest:
    """Which topics somebody subscribes to: the subscribed prefixes and a verdict per topic.

    Fed by the hub's XPUB socket (:mod:`ibhub.hub.xpub`): without ``XPUB_VERBOSE``
    libzmq passes on only the first subscribe and the last unsubscribe of a prefix
    across all subscribers, so the set of prefixes is exactly "somebody wants it".
    Prefix semantics are libzmq's: ``b""`` covers every topic, ``b"tick."`` every tick
    topic. :attr:`verdicts` caches, per topic key, whether a prefix covers it; it is
    emptied (in place: :class:`Publisher` holds the same dict) whenever the prefixes
    change, which is rare, so a publish costs one dict lookup, never a scan.
    :meth:`everything` is the interest of a plain PUB socket, which filters for itself.
    """

    __slots__ = ("_covers", "prefixes", "verdicts")

    CACHE_MAX: Final = 100_000  # topic keys cached; beyond, the cache starts over

    def __init__(self, prefixes: Sequence[bytes] = ()) -> None:
        self.prefixes: set[bytes] = set(prefixes)
        self.verdicts: dict[bytes, bool] = {}
        self._covers: tuple[bytes, ...] = tuple(self.prefixes)

    @classmethod
    def everything(cls) -> Interest:
        return cls((b"",))

    def subscribe(self, prefix: bytes) -> bool:
        """Somebody subscribed to ``prefix``; False if it was already known."""
        if prefix in self.prefixes:
            return False
        self.prefixes.add(prefix)
        self._changed()
        return True

    def unsubscribe(self, prefix: bytes) -> bool:
        """Nobody subscribes to ``prefix`` any more; False if it was not known."""
        if prefix not in self.prefixes:
            return False
        self.prefixes.discard(prefix)
        self._changed()
        return True

    def clear(self) -> None:
        if self.prefixes:
            self.prefixes.clear()
            self._changed()

    def wants(self, topic: bytes) -> bool:
        """Whether a subscribed prefix covers ``topic`` (cached)."""
        verdict = self.verdicts.get(topic)
        if verdict is None:
            verdict = topic.startswith(self._covers)
            if len(self.verdicts) >= self.CACHE_MAX:
                self.verdicts.clear()
            self.verdicts[topic] = verdict
        return verdict

    def _changed(self) -> None:
        self._covers = tuple(self.prefixes)
        self.verdicts.clear()


class Publisher:
    """Publishes ``[topic, payload]`` on a plain PUB or XPUB socket (never blocks).

    A PUB socket drops messages for a subscriber that is at its high-water mark;
    subscribers detect that by the per-topic sequence number and recover with a
    snapshot request.

    With an :class:`Interest` (the hub's XPUB socket), a topic no subscribed prefix
    covers costs one dict lookup and no ``send()`` at all (counted in :attr:`skipped`);
    libzmq would have dropped the message anyway, after two sends (~0.3-0.6 us).
    Without one, every message is sent and the socket filters.
    """

    __slots__ = ("_send", "_verdicts", "interest", "sent", "skipped", "socket")

    def __init__(self, socket: zmq.Socket[bytes], interest: Interest | None = None) -> None:
        self.socket = socket
        self.interest = interest if interest is not None else Interest.everything()
        self._verdicts = self.interest.verdicts  # the same dict: emptied in place
        self.skipped = 0  # publishes nobody subscribed to (not sent)
        self.sent = False  # something was sent since the owner last cleared it
        # The backend's send, bound to this socket: it skips pyzmq's Python-level
        # ``Socket.send`` wrapper (Frame/routing-id/copy-threshold handling that plain
        # bytes never need): 0.40-0.45 us instead of 0.75-1.4 us per publish, measured.
        backend_send = getattr(zmq.backend.Socket, "send", None)
        self._send = backend_send.__get__(socket) if backend_send is not None else socket.send

    def wants(self, topic: bytes) -> bool:
        """Whether a publish on ``topic`` reaches anybody (worth encoding for)."""
        return self.interest.wants(topic)

    def publish(self, topic: bytes, payload: bytes) -> None:
        wanted = self._verdicts.get(topic)
        if wanted is None:
            wanted = self.interest.wants(topic)
        if wanted:
            send = self._send
            send(topic, zmq.SNDMORE)
            send(payload)
            self.sent = True
        else:
            self.skipped += 1


# ------------------------------------------------------------------ the lane's framing
# The lane (ibhub.hub.lane, ibhub.client.lane; docs/protocol.md "The lane"): a local
# stream socket (Unix domain, or loopback TCP) beside ZeroMQ. Every frame is a 4-byte
# big-endian length, then that many bytes. Client -> hub: the payload is a request,
# exactly what the ROUTER gets (the first one a LaneAttach). Hub -> client: one kind
# byte, then a reply (LANE_REPLY + msgpack Reply) or a pushed event (LANE_EVENT + one
# byte topic length + topic + msgpack Event: the PUB message's two frames in one).

LANE_HEADER: Final = 4
LANE_REPLY: Final = 0x72  # b"r"
LANE_EVENT: Final = 0x65  # b"e"
LANE_UNIX_SOCKET: Final = "lane.sock"  # in the hub's data dir


def lane_frame(payload: bytes) -> bytes:
    """``payload`` with its length prefix."""
    return len(payload).to_bytes(LANE_HEADER, "big") + payload


def lane_reply_frame(reply_payload: bytes) -> bytes:
    return (len(reply_payload) + 1).to_bytes(LANE_HEADER, "big") + b"r" + reply_payload


def lane_event_frame(topic: bytes, event_payload: bytes) -> bytes:
    n = len(topic)
    return ((n + len(event_payload) + 2).to_bytes(LANE_HEADER, "big") + b"e"
            + n.to_bytes(1, "big") + topic + event_payload)


class LaneFrameError(ValueError):
    """Bytes that are not lane frames (a length above the limit): close the connection."""


class LaneFrames:
    """Splits a byte stream into lane frames; ``feed`` returns the complete ones."""

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= LANE_HEADER:
            size = int.from_bytes(buf[pos:pos + LANE_HEADER], "big")
            if size > self.limit:
                raise LaneFrameError(f"a frame of {size} bytes is above the limit of "
                                     f"{self.limit} bytes")
            if end - pos - LANE_HEADER < size:
                break
            start = pos + LANE_HEADER
            frames.append(bytes(buf[start:start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)
