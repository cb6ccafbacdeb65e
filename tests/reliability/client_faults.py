"""Faults on the scripts' side: a subscriber that stops reading, a script killed -9.

A stalled subscriber is a raw SUB socket that stops calling recv. ZeroMQ then queues
for it up to the hub's PUB ``SNDHWM`` (plus its own ``RCVHWM`` and the kernel's
socket buffers) and drops the rest for *that* subscriber only. What is checked:

* the hub's memory stays bounded while the stall lasts (RSS sampled; the hub runs in
  this process, so the figure is an upper bound for it);
* a second subscriber reading the same topics keeps its rate and latency;
* when the stalled one reads again it drains what was queued, sees a jump in ``seq``
  on each topic (the SDK's :class:`~ibhub.client.sequencer.TopicSequencer`, the very
  code scripts use) and recovers through a ``snapshot`` request.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from array import array
from pathlib import Path

import psutil
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.client.sequencer import TopicSequencer
from ibhub.protocol import Event, GetSnapshot, Snapshot
from tests.reliability.harness import Figures, Rig, now, wait_until

SYMBOLS = ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "JPM")
SLOW_RCVHWM = 1000
REPO = Path(__file__).resolve().parents[2]


def _pctl(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Fast:
    """A subscriber that reads everything and records the latency (ms) of every 10th
    event (a compact sample: the memory figure must be the hub's, not this list's)."""

    EVERY = 10

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self.sock.subscribe(b"tick.")
        self.times = array("d")  # monotonic receive time of every EVERY-th event
        self.lat = array("d")  # its latency, ms (hub publish -> here)
        self.msg_times = array("d")  # monotonic receive time of every message (batch)
        self.count = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            _topic, payload = await self.sock.recv_multipart()
            self.msg_times.append(now())
            for ev in wire.unbatch(wire.decode_event(payload)):
                self.count += 1
                if self.count % self.EVERY == 0:
                    self.times.append(now())
                    self.lat.append((time.time_ns() - ev.ts) / 1e6)

    def messages_between(self, t0: float, t1: float) -> int:
        """PUB messages (a tick or a batch: what the high-water marks count)."""
        return sum(1 for t in self.msg_times if t0 <= t < t1)

    def events_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.times if t0 <= t < t1) * self.EVERY

    def window(self, t0: float, t1: float) -> tuple[float, float, float]:
        """(events/s, p50 ms, p99 ms) between t0 and t1."""
        lat = [ms for t, ms in zip(self.times, self.lat, strict=True) if t0 <= t < t1]
        return len(lat) * self.EVERY / (t1 - t0), _pctl(lat, 0.5), _pctl(lat, 0.99)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sock.close(0)


async def slow_subscriber(r: Rig, stall: float, baseline: float = 1.5) -> Figures:
    """One subscriber stops reading for ``stall`` s while another keeps reading."""
    fig = Figures("subscriber stops reading")
    hwm = r.hub._pub.getsockopt(zmq.SNDHWM) if r.hub._pub is not None else -1
    c = r.client()
    await c.hello("ticks")
    for s in SYMBOLS:
        await c.subscribe(s)
    fast = Fast(r.ctx, r.hub.pub_endpoint)
    slow = r.ctx.socket(zmq.SUB)
    slow.setsockopt(zmq.LINGER, 0)
    slow.setsockopt(zmq.RCVHWM, SLOW_RCVHWM)
    slow.connect(r.hub.pub_endpoint)
    slow.subscribe(b"tick.")
    seqs: dict[str, TopicSequencer] = {}
    delivered: dict[str, list[int]] = {}
    snapshots: list[asyncio.Task[None]] = []
    proc = psutil.Process()
    try:
        # Baseline: both read.
        await wait_until(lambda: fast.count > 500, 10.0, "ticks flowing")
        got = 0
        t0 = now()
        while now() - t0 < baseline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await slow.recv_multipart()
                    got += 1
        t1 = now()
        base_rate, base_p50, base_p99 = fast.window(t0, t1)
        # Stall: the slow one reads nothing; sample memory.
        rss: list[int] = []
        while now() - t1 < stall:
            rss.append(proc.memory_info().rss)
            await asyncio.sleep(0.1)
        t2 = now()
        stall_rate, stall_p50, stall_p99 = fast.window(t1, t2)
        published = fast.messages_between(t1, t2)  # high-water marks count messages

        # Read again, through the SDK's sequencer; a gap asks the hub for a snapshot.
        def request_snapshot(topic: str) -> None:
            async def run() -> None:
                reply = await c.request(GetSnapshot(id=c.next_id(), topic=topic))
                assert isinstance(reply, Snapshot)
                ev: Event | None = None
                for name, raw in zip(reply.topics, reply.events, strict=False):
                    if name == topic:
                        ev = wire.decode_event(bytes(raw))
                seqs[topic].on_snapshot(ev)
                recovered_at.append(now())
            snapshots.append(asyncio.ensure_future(run()))

        recovered_at: list[float] = []
        drained = queued = 0
        resumed_ns = time.time_ns()
        t3 = now()
        caught_up = False  # read an event published after it started reading again
        while not caught_up or any(s.recovering for s in seqs.values()):
            if now() - t3 > 30:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    topic_b, payload = await slow.recv_multipart()
                    drained += 1
                    if drained % 200 == 0:
                        # A ready recv does not yield; without this the drain would
                        # starve the hub (same loop) and its lease reaper.
                        await asyncio.sleep(0)
                    topic = topic_b.decode()
                    seq = seqs.get(topic)
                    if seq is None:
                        def deliver(e: Event, t: str = topic) -> None:
                            delivered.setdefault(t, []).append(e.seq)

                        seq = seqs[topic] = TopicSequencer(topic, deliver, request_snapshot)
                    message = wire.decode_event(payload)
                    queued += message.ts < resumed_ns  # published while it was not reading
                    caught_up = caught_up or message.ts >= resumed_ns
                    for event in wire.unbatch(message):
                        seq.on_event(event)
        await asyncio.gather(*snapshots)
        gaps = sum(s.gaps for s in seqs.values())
        recovered = sum(1 for t, s in seqs.items()
                        if s.gaps and not s.recovering and delivered.get(t)
                        and delivered[t] == sorted(delivered[t]))
        if recovered_at:
            fig.recover_s.append(max(recovered_at) - t3)  # reading again -> every topic whole
        third = max(1, len(rss) // 3)
        fig.attempts = 1
        fig.recoveries = 1 if gaps and recovered == sum(1 for s in seqs.values() if s.gaps) else 0
        fig.notes.update(
            pub_sndhwm=hwm, slow_rcvhwm=SLOW_RCVHWM, stall_s=stall, published_during=published,
            baseline_read=got, read_after_stall=drained, queued_for_it=queued, gaps_detected=gaps,
            topics_recovered=recovered,
            rss_mb_start=round(rss[0] / 2**20, 1), rss_mb_peak=round(max(rss) / 2**20, 1),
            rss_growth_last_2_3_mb=round((max(rss[third:]) - rss[third]) / 2**20, 1),
            fast_rate_base=round(base_rate), fast_rate_stall=round(stall_rate),
            fast_p50_ms_base=round(base_p50, 2), fast_p50_ms_stall=round(stall_p50, 2),
            fast_p99_ms_base=round(base_p99, 2), fast_p99_ms_stall=round(stall_p99, 2),
        )
        return fig
    finally:
        for t in snapshots:
            t.cancel()
        await fast.close()
        slow.close(0)


VICTIM = """
import asyncio, sys
from ibhub.client import AsyncHub
async def main():
    hub = AsyncHub(sys.argv[1], sys.argv[2], name="victim")
    await hub.connect()
    for s in sys.argv[3:]:
        await hub.subscribe(s)
    print("READY", hub.lease, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def script_killed(r: Rig, cycles: int) -> Figures:
    """A script (SDK, own process) SIGKILLed: its lease expires, its lines are cancelled,
    a line it shared stays up for the other subscriber."""
    fig = Figures("script killed (SIGKILL)", notes={"lease_ttl_s": round(r.hub.leases.ttl, 2)})
    survivor = r.client()
    await survivor.hello("survivor")
    await survivor.subscribe("AAPL")
    lst = r.listener("tick.AAPL")
    for _ in range(cycles):
        fig.attempts += 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", VICTIM, r.hub.pub_endpoint, r.hub.rpc_endpoint, "AAPL", "IBM",
            stdout=asyncio.subprocess.PIPE, cwd=REPO)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line.startswith(b"READY"), line
            lease = line.split()[1].decode()
            await wait_until(lambda: any(s.symbol == "IBM"
                                         for s in r.sim.market_data_subscriptions()),
                             5.0, "victim's IBM line")
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        t0 = now()
        def expired(lease: str = lease) -> bool:
            return r.hub.leases.get(lease) is None

        await wait_until(expired, 10.0, "victim lease expired")
        await wait_until(lambda: not any(s.symbol == "IBM"
                                         for s in r.sim.market_data_subscriptions()),
                         5.0, "IBM line cancelled upstream")
        fig.recover_s.append(now() - t0)
        mark = len(lst.on("tick.AAPL"))
        def more(m: int = mark) -> bool:
            return len(lst.on("tick.AAPL")) > m

        await wait_until(more, 5.0, "survivor ticks")
        aapl = [s for s in r.sim.market_data_subscriptions() if s.symbol == "AAPL"]
        if len(aapl) != 1:
            fig.lost += 1  # the shared line was cancelled (or doubled)
        fig.recoveries += 1
    fig.notes["leases_left"] = [le.name for le in r.hub.leases.leases()]
    return fig
