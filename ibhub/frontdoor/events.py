"""The front door's view of the hub's events: a SUB socket on the hub's own PUB.

Order, account, error and status events are already published by the hub, in
order, after the journal has them; subscribing to them like any other client
keeps the front door decoupled from the order book's internals (no callback
hooks into another module's state) and costs nothing on the tick path: the PUB
filters by prefix, and the front door never subscribes to ``tick.``/``bar.``
(ticks reach it in-process through ``TickStream.taps``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.protocol import TOPIC_ACCOUNT, TOPIC_ERROR, TOPIC_ORDER, TOPIC_POSITION, TOPIC_STATUS

log = logging.getLogger(__name__)

#: the prefixes the front door follows; "tws:" is its lease/holder prefix
PREFIXES = (
    TOPIC_ORDER + "tws:",
    TOPIC_ERROR + "tws:",
    TOPIC_STATUS,
    TOPIC_ACCOUNT,
    TOPIC_POSITION,
)


class EventListener:
    def __init__(self, endpoint: str, on_event: Callable[[str, Any], None]) -> None:
        self._endpoint = endpoint
        self._on_event = on_event
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        ctx = self._ctx = zmq.asyncio.Context()
        sock = self._sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # order events must not be dropped
        for prefix in PREFIXES:
            sock.subscribe(prefix.encode())
        sock.connect(self._endpoint)
        self._task = asyncio.create_task(self._run(), name="ibhub-frontdoor-events")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            frames = await sock.recv_multipart()
            if len(frames) != 2:
                continue
            topic, payload = frames
            try:
                event = wire.decode_event(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("front door: undecodable event on %r: %s", topic[:60], exc)
                continue
            try:
                self._on_event(topic.decode(errors="replace"), event)
            except Exception:  # one bad event must not stop the relay
                log.exception("front door: handling %s event failed", type(event).__name__)
