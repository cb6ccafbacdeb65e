"""The upstream reader leaves the event loop a turn when it falls behind.

A hub behind the Gateway gets huge reads; handling them all in one loop turn
starved the ROUTER (heartbeats unanswered, leases expired) in bench/fanout.py.
Fed bytes directly with a stand-in transport that records pause/resume.
"""

from __future__ import annotations

import asyncio
import struct

from ibhub.config import HubSettings
from ibhub.ib.reader import MAX_MESSAGES_PER_TURN, YIELD_READ_BYTES
from ibhub.ib.session import Upstream
from tests.helpers import wait_until
from tests.ibclient import IB


def tick(req_id: int, price: float) -> bytes:
    body = b"".join(str(f).encode() + b"\0" for f in (1, 6, req_id, 1, price, 100, 0))
    return struct.pack(">I", len(body)) + body


class Transport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False


class Sink:
    def __init__(self) -> None:
        self.prices: list[float] = []

    def price(self, tick_type: int, price: float, size: float) -> None:
        self.prices.append(price)


class Listener:
    def __getattr__(self, name: str):  # every listener callback is a no-op here
        return lambda *args: None


async def reader() -> tuple[Upstream, Sink, Transport]:
    up = Upstream(HubSettings(), Listener())
    ib = IB()
    up._install(ib)
    ib.client._apiReady = True  # as after the handshake
    transport = Transport()
    ib.client.conn.transport = transport
    sink = Sink()
    up._sinks[b"7"] = sink
    return up, sink, transport


async def test_a_backlog_is_handled_over_several_loop_turns_in_order() -> None:
    up, sink, transport = await reader()
    total = 2 * MAX_MESSAGES_PER_TURN + 500
    data = b"".join(tick(7, 100.0 + i / 100) for i in range(total))
    turns: list[int] = []  # how many ticks were handled whenever another callback ran

    async def other_work() -> None:
        while len(sink.prices) < total:
            turns.append(len(sink.prices))
            await asyncio.sleep(0)

    worker = asyncio.create_task(other_work())
    up.reader.on_socket_data(data)
    assert len(sink.prices) == MAX_MESSAGES_PER_TURN and transport.paused
    await wait_until(lambda: len(sink.prices) == total, 5.0, "the backlog to drain")
    await worker
    assert sink.prices == [100.0 + i / 100 for i in range(total)]  # nothing lost or reordered
    assert not transport.paused and up._ib is not None and up._ib.client._data == b""
    # the loop ran other work between the turns, not only after the whole backlog
    assert any(0 < n < total for n in turns), turns


async def test_small_reads_never_pause_and_a_large_read_pauses_until_the_next_turn() -> None:
    up, sink, transport = await reader()
    up.reader.on_socket_data(tick(7, 1.0) + tick(7, 2.0))
    assert sink.prices == [1.0, 2.0] and transport.pauses == 0
    one = tick(7, 3.0)
    big = one * (YIELD_READ_BYTES // len(one) + 1)  # more than a turn's worth, too
    up.reader.on_socket_data(big)
    up.reader.on_socket_data(b"")  # another read in the same turn does not pause twice
    assert transport.pauses == 1 and transport.paused
    await wait_until(lambda: len(sink.prices) == 2 + len(big) // len(one), 5.0, "all ticks")
    await wait_until(lambda: not transport.paused, 5.0, "reading to resume")
