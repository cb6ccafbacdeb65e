"""The SUB side: receives ``[topic, event]`` frames and notices PUB reconnections.

ZeroMQ subscriptions are byte prefixes, so ``tick.AAPL`` also receives
``tick.AAPLX``; the owner filters exact topics in ``on_event``. A socket monitor
reports when the connection to the hub's PUB socket is re-established: sequence
numbers only run unbroken within one connection (the hub may have restarted and
begun counting from 1 again), so the owner resynchronises every topic then.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ibhub import wire
from ibhub.client.bundle import BUNDLE_KEY, LazyBundle, decode_bundle
from ibhub.client.curve import ClientCurve
from ibhub.protocol import TOPIC_BUNDLE, Bundle, Event
from ibhub.tasks import TaskSet

log = logging.getLogger(__name__)

_MONITORED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
DRAIN_BATCH = 1000  # messages handled per burst before yielding to other tasks


class EventStream:
    """One SUB socket, its reader task and its connection monitor."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        on_event: Callable[[str, Event], None],
        on_reconnect: Callable[[], None],
        *,
        rcvhwm: int = 100_000,
        curve: ClientCurve | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.curve = curve  # CURVE client keys for a hub that requires them (client/curve.py)
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.connected = False
        self.received = 0
        self.undecodable = 0
        self._context = context
        self._rcvhwm = rcvhwm
        self._socket: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._tasks = TaskSet(log)  # the connection monitor
        self._handshakes = 0
        self._topics: dict[str, int] = {}  # topic -> local reference count
        self._reader: wire.EdgeReader | None = None  # drains the SUB socket into _handle

    def open(self) -> None:
        if self._socket is not None:
            return
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        self._monitor = sock.get_monitor_socket(_MONITORED)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.endpoint)
        self._socket = sock
        self._tasks.spawn(self._watch(self._monitor), name="ibhub-sub-monitor")
        self._reader = wire.EdgeReader(
            sock, self._handle, batch=DRAIN_BATCH, name=f"sub-reader {self.endpoint}"
        )
        self._reader.start()

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
        await self._tasks.close()
        if self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._socket.close(linger=0)
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        self.connected = False

    def subscribe(self, topic: str) -> None:
        """Add a local reference to ``topic``; the first one subscribes the socket."""
        count = self._topics.get(topic, 0)
        self._topics[topic] = count + 1
        if count == 0 and self._socket is not None:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self._kick()

    def unsubscribe(self, topic: str) -> None:
        count = self._topics.get(topic, 0)
        if count <= 1:
            self._topics.pop(topic, None)
            if count == 1 and self._socket is not None:
                self._socket.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
                self._kick()
        else:
            self._topics[topic] = count - 1

    def _kick(self) -> None:
        """Drain on the next loop turn: an operation on the socket (a subscribe) may have
        taken the FD's edge while messages wait, and the FD would not signal them again."""
        if self._reader is not None:
            self._reader.schedule()

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.undecodable += 1
            log.warning(
                "ignoring a %d-frame message on %s (expected 2)", len(frames), self.endpoint
            )
            return
        try:
            if frames[0] == BUNDLE_KEY:  # inner messages decoded only for topics held
                topic = TOPIC_BUNDLE
                event: Event = decode_bundle(frames[1])
            else:
                topic = frames[0].decode()
                event = wire.decode_event(frames[1])
        except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.undecodable += 1
            log.warning("ignoring an undecodable event on %r: %s", frames[0][:64], exc)
            return
        self.received += count_events(event)
        try:
            self.on_event(topic, event)
        except Exception:
            log.exception("handling an event on %s failed; the stream continues", topic)

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        while True:
            frames = await monitor.recv_multipart()
            try:
                event = parse_monitor_message(frames)
            except (ValueError, IndexError) as exc:
                log.debug("unreadable monitor message: %s", exc)
                continue
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = False
                log.info("lost the connection to the hub's PUB socket at %s", self.endpoint)
            elif event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected = True
                self._handshakes += 1
                if self._handshakes > 1:
                    log.info("reconnected to the hub's PUB socket at %s", self.endpoint)
                    try:
                        self.on_reconnect()
                    except Exception:
                        log.exception("on_reconnect handler failed")


def count_events(event: Event) -> int:
    """Events in one message: a batch's ticks, a bundle's ticks, else 1 (a lazily
    decoded bundle counts its messages: its ticks are decoded only where wanted)."""
    if type(event) is LazyBundle:
        return len(event.messages)
    if type(event) is Bundle:
        return sum(len(wire.unbatch(m)) for _, m in event.messages)
    return len(wire.unbatch(event))
