"""Order round trips through the hub vs a direct ib_insync connection.

Not a test. The simulated Gateway runs in its own process; the hub runs in another
(``HubServer`` with its order service, journal in a temporary directory with its
default ``FULL`` sync). The script side is a raw wire
client (pyzmq DEALER for requests, SUB on ``order.<lease>``), the same frames the
SDK sends.

    python bench/orders.py [--quick] [--orders 1000] [--interval 0.06] [--burst-orders 300]

1. Latency: ``--orders`` market orders of 1 share, one at a time, ``--interval``
   seconds apart (slower than the hub's per-script order rate, 20/s, and the
   Gateway's 50 messages/s, so pacing never queues them): place -> ``order_accepted``
   reply (ack), place -> ``filled`` event; the same count through the SDK
   (``AsyncHub.place_order`` returning, and ``wait_done``); the same count through
   ib_insync ``placeOrder`` -> ``filledEvent``, same spacing, its own connection.
   With the lane (ibhub.hub.lane; ``--no-lane`` skips these rows for a hub without
   one): the raw client again with requests and its order events over the lane, and
   the SDK both ways, its default (the lane) and ``lane=False`` (ZeroMQ only). First,
   the transport alone: heartbeat round trips over ZeroMQ and over the lane.
2. Sustained rate: five scripts place ``--burst-orders`` orders as fast as the hub
   accepts them, against a simulator enforcing IB's 50 messages/s; figures: orders/s
   accepted, orders/s reaching the Gateway, fills/s, and how many the Gateway refused
   for pacing (error 100; must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

import zmq
from benchlib import SPAWN, SimProcess, free_port, machine, pct, print_table, spread

PLACE_ORDER = 3  # TWS message id of placeOrder


@contextlib.asynccontextmanager
async def order_hub(gateway_port: int, data_dir: str, journal_sync: str) -> AsyncIterator[Any]:
    """A started ``HubServer`` on the simulator with its order service reconciled.

    The hub attaches its order service itself (``settings.orders``); shared by this
    script and ``order_stages.py``. ``journal_sync``: "FULL", or "FULL/NORMAL" for
    ``journal_sync`` / ``journal_sync_updates``.
    """
    from ibhub.config import HubSettings
    from ibhub.hub.server import HubServer

    sync, _, updates = journal_sync.partition("/")
    extra = {"journal_sync_updates": updates} if updates else {}
    settings = HubSettings(gateway_host="127.0.0.1", gateway_port=gateway_port,
                           pub=f"tcp://127.0.0.1:{free_port()}",
                           rpc=f"tcp://127.0.0.1:{free_port()}", http_port=0,
                           data_dir=data_dir, journal_sync=sync, **extra)
    async with HubServer(settings) as hub:
        while not (hub.upstream and hub.upstream.connected and hub.orders):
            await asyncio.sleep(0.02)
        await asyncio.wait_for(hub.orders.reconciled.wait(), 30)
        yield hub


def hub_main(conn: Connection, gateway_port: int, data_dir: str, journal_sync: str) -> None:
    """A hub with orders attached, on uvloop, until told to stop."""
    logging.basicConfig(level=logging.WARNING)

    async def serve() -> None:
        async with order_hub(gateway_port, data_dir, journal_sync) as hub:
            conn.send((hub.pub_endpoint, hub.rpc_endpoint))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    import uvloop

    uvloop.run(serve())


class HubProcess:
    """A hub with orders in a child process (``target``), on a simulator in another.

    ``with HubProcess(hub_main, journal_sync, **sim_options) as h``: ``h.sim``, ``h.pub``,
    ``h.rpc``; ``h.stop()`` tells the hub to stop (done on exit if the caller did not),
    after which ``h.conn`` carries anything the hub sends back.
    """

    def __init__(self, target: Any, journal_sync: str, **sim_options: Any) -> None:
        self._target = target
        self._journal_sync = journal_sync
        self._sim_options = sim_options
        self._stack = contextlib.ExitStack()
        self._stopped = False

    def __enter__(self) -> HubProcess:
        stack = self._stack
        self.sim = stack.enter_context(SimProcess(stamp="slice", tick_rate=4.0,
                                                  **self._sim_options))
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ibhub-bench-orders-"))
        self.conn, child = SPAWN.Pipe()
        proc = SPAWN.Process(target=self._target,
                             args=(child, self.sim.port, data_dir, self._journal_sync),
                             daemon=True)
        proc.start()
        stack.callback(self._end, proc)
        try:
            if not self.conn.poll(60):
                raise TimeoutError("hub with orders did not start")
            self.pub, self.rpc = self.conn.recv()
        except BaseException:
            stack.close()
            raise
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.conn.send("stop")

    def _end(self, proc: Any) -> None:
        self.stop()
        proc.join(20)
        if proc.is_alive():
            proc.terminate()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


class LaneSocket:
    """The hub's lane spoken by hand (docs/protocol.md section 12): a blocking Unix
    socket, length-prefixed frames; pushed events are kept until asked for."""

    def __init__(self, address: str) -> None:
        import socket

        from ibhub import wire

        if not address.startswith("unix://"):
            raise RuntimeError(f"the hub names no Unix lane ({address!r})")
        self.wire = wire
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address[len("unix://"):])
        self.buf = bytearray()
        self.events: list[Any] = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(self.wire.lane_frame(payload))

    def _frame(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                size = int.from_bytes(self.buf[:4], "big")
                if len(self.buf) >= 4 + size:
                    frame = bytes(self.buf[4:4 + size])
                    del self.buf[:4 + size]
                    return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the hub closed the lane")
            self.buf += chunk

    def reply(self, timeout: float = 10.0) -> Any:
        while True:
            frame = self._frame(timeout)
            if frame[0] == self.wire.LANE_REPLY:
                return self.wire.decode_reply(frame[1:])
            self.events.append(self.wire.decode_event(frame[2 + frame[1]:]))

    def event(self, timeout: float = 10.0) -> Any:
        while not self.events:
            frame = self._frame(timeout)
            if frame[0] == self.wire.LANE_EVENT:
                self.events.append(self.wire.decode_event(frame[2 + frame[1]:]))
        return self.events.pop(0)

    def close(self) -> None:
        self.sock.close()


class WireClient:
    """A script speaking the wire protocol: DEALER for requests, SUB for its order topic;
    with ``lane=True``, requests and its order events over the hub's lane once attached
    (the SUB socket's copies are drained and ignored)."""

    def __init__(self, ctx: zmq.Context[Any], pub: str, rpc: str, name: str,
                 lane: bool = False) -> None:
        from ibhub import wire
        from ibhub.protocol import PROTOCOL_VERSION, ContractSpec, Hello, Subscribe

        self.wire = wire
        self.lane: LaneSocket | None = None  # attached below, after the hello
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(rpc)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(pub)
        self._id = 0
        welcome = self.call(Hello(id=self.next_id(), name=name, protocol=PROTOCOL_VERSION))
        self.lease, self.handle = welcome.token, welcome.lease  # secret / public handle
        self.sub.setsockopt(zmq.SUBSCRIBE, f"order.{self.handle}".encode())
        # Watch AAPL until a tick arrives: then the SUB socket is connected (no
        # slow-joiner loss of order events) and the hub knows a price (risk band).
        topic = self.call(Subscribe(id=self.next_id(), lease=self.lease,
                                    contract=ContractSpec(symbol="AAPL"))).topic.encode()
        self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        if not self.sub.poll(10_000):
            raise TimeoutError("no tick on the SUB socket within 10 s")
        self.sub.setsockopt(zmq.UNSUBSCRIBE, topic)
        while self.sub.poll(0):
            self.sub.recv_multipart()
        if lane:
            from ibhub.protocol import LaneAttach, LaneAttached, LaneTicket

            ticket = self.call(LaneTicket(id=self.next_id(), lease=self.lease)).ticket
            self.lane = LaneSocket(welcome.lane)
            self.lane.send(wire.encode(LaneAttach(id=self.next_id(), ticket=ticket,
                                                  lease=self.lease)))
            attached = self.lane.reply()
            if not isinstance(attached, LaneAttached):
                raise RuntimeError(f"lane attach refused: {attached}")

    def next_id(self) -> int:
        self._id += 1
        return self._id

    def send(self, req: Any) -> None:
        if self.lane is not None:
            self.lane.send(self.wire.encode(req))
            return
        self.dealer.send_multipart([b"", self.wire.encode(req)])

    def recv_reply(self, timeout: float = 10.0) -> Any:
        if self.lane is not None:
            return self.lane.reply(timeout)
        if not self.dealer.poll(int(timeout * 1000)):
            raise TimeoutError("no reply")
        return self.wire.decode_reply(self.dealer.recv_multipart()[-1])

    def call(self, req: Any) -> Any:
        self.send(req)
        return self.recv_reply()

    def event(self, timeout: float = 10.0) -> Any:
        if self.lane is not None:
            while self.sub.poll(0):  # the same events again: not needed here
                self.sub.recv_multipart()
            return self.lane.event(timeout)
        if not self.sub.poll(int(timeout * 1000)):
            raise TimeoutError("no order event")
        return self.wire.decode_event(self.sub.recv_multipart()[-1])

    def heartbeat(self) -> None:
        from ibhub.protocol import Heartbeat

        self.call(Heartbeat(id=self.next_id(), lease=self.lease))

    def close(self) -> None:
        if self.lane is not None:
            self.lane.close()
        self.dealer.close(0)
        self.sub.close(0)


def place_req(client: WireClient, coid: str) -> Any:
    from ibhub.protocol import ContractSpec, PlaceOrder

    return PlaceOrder(id=client.next_id(), lease=client.lease, client_order_id=coid,
                      contract=ContractSpec(symbol="AAPL"), action="BUY", quantity=1.0,
                      order_type="MKT")


def hub_latency(pub: str, rpc: str, n: int, interval: float,
                lane: bool = False) -> tuple[list[float], list[float]]:
    from ibhub.protocol import OrderAccepted, OrderEvent

    ctx: zmq.Context[Any] = zmq.Context()
    c = WireClient(ctx, pub, rpc, "bench-orders-lane" if lane else "bench-orders", lane=lane)
    acks: list[float] = []
    fills: list[float] = []
    run = f"{time.time_ns()}"
    try:
        next_at = time.perf_counter()
        for i in range(n):
            next_at += interval
            coid = f"{run}-{i}"
            t0 = time.perf_counter()
            c.send(place_req(c, coid))
            reply = c.recv_reply()
            t_ack = time.perf_counter()
            if not isinstance(reply, OrderAccepted):
                raise RuntimeError(f"order refused: {reply}")
            acks.append(t_ack - t0)
            while True:
                ev = c.event()
                if isinstance(ev, OrderEvent) and ev.client_order_id == coid and \
                        ev.kind == "filled":
                    fills.append(time.perf_counter() - t0)
                    break
            if i % 10 == 0:
                c.heartbeat()
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    finally:
        c.close()
        ctx.term()
    return acks, fills


def request_rtt(pub: str, rpc: str, n: int, interval: float,
                lane: bool) -> tuple[list[float], list[float]]:
    """The transport alone: ``n`` heartbeats (an inline request: no journal, no
    Gateway) one by one, ``interval`` apart, over the ZeroMQ DEALER and, with ``lane``,
    interleaved with the same over the lane (the second list; empty without)."""
    from ibhub.protocol import Heartbeat

    ctx: zmq.Context[Any] = zmq.Context()
    clients = [WireClient(ctx, pub, rpc, "bench-rtt-zmq")]
    if lane:
        clients.append(WireClient(ctx, pub, rpc, "bench-rtt-lane", lane=True))
    out: list[list[float]] = [[] for _ in clients]
    try:
        for _ in range(n):
            for c, times in zip(clients, out, strict=True):
                t0 = time.perf_counter()
                c.call(Heartbeat(id=c.next_id(), lease=c.lease))
                times.append(time.perf_counter() - t0)
                time.sleep(interval / 2)
    finally:
        for c in clients:
            c.close()
        ctx.term()
    return out[0], out[1] if lane else []


async def sdk_latency(pub: str, rpc: str, n: int, interval: float,
                      lane: bool | None = True) -> tuple[list[float], list[float]]:
    """The same orders through the SDK (``AsyncHub.place_order``, stdlib asyncio as a
    script would run it): place -> the call returns (ack), and -> ``wait_done`` (fill).
    ``lane``: the SDK's default (the hub's lane when it has one), False: ZeroMQ only,
    None: an SDK without the option (an older tree, ``--no-lane``)."""
    from ibhub.client import AsyncHub

    acks: list[float] = []
    fills: list[float] = []
    options: dict[str, Any] = {} if lane is None else {"lane": lane}
    async with AsyncHub(pub, rpc, name=f"bench-orders-sdk-{lane}", **options) as hub:
        if lane and not hub.lane_attached:
            raise RuntimeError("the SDK did not attach to the hub's lane")
        ticked = asyncio.Event()  # a price for the hub's risk band, as WireClient waits
        await hub.subscribe("AAPL", callback=lambda _ev: ticked.set())
        await asyncio.wait_for(ticked.wait(), 10)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for _ in range(n):
            next_at += interval
            t0 = time.perf_counter()
            order = await hub.place_order("AAPL", "BUY", 1)
            acks.append(time.perf_counter() - t0)
            await order.wait_done(10)
            if order.status != "Filled":
                raise RuntimeError(f"order not filled: {order}")
            fills.append(time.perf_counter() - t0)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    return acks, fills


async def direct_latency(port: int, n: int, interval: float) -> list[float]:
    from ibhub.ib import lib
    IB, MarketOrder, Stock = lib.IB, lib.module.MarketOrder, lib.module.Stock

    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=7, timeout=20)
    try:
        contract = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(contract)
        fills: list[float] = []
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for _ in range(n):
            next_at += interval
            done = asyncio.Event()
            t0 = time.perf_counter()
            trade = ib.placeOrder(contract, MarketOrder("BUY", 1))
            trade.filledEvent += lambda _t, done=done: done.set()  # type: ignore[misc]
            await asyncio.wait_for(done.wait(), 10)
            fills.append(time.perf_counter() - t0)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        return fills
    finally:
        ib.disconnect()


def sustained(pub: str, rpc: str, sim: SimProcess, total: int,
              scripts: int = 5) -> dict[str, Any]:
    """``scripts`` clients place ``total`` orders as fast as the hub accepts them."""
    from ibhub.protocol import OrderAccepted, OrderEvent, OrderRejected

    ctx: zmq.Context[Any] = zmq.Context()
    clients = [WireClient(ctx, pub, rpc, f"bench-burst-{k}") for k in range(scripts)]
    per = total // scripts
    run = f"{time.time_ns()}"
    placed0 = sim.call("request_counts.get", PLACE_ORDER) or 0
    accepted = rejected = filled = paced = 0
    reasons: dict[str, int] = {}
    t0 = time.perf_counter()
    try:
        # every script fires its orders back to back, all scripts at once
        for c in clients:
            for i in range(per):
                c.send(place_req(c, f"{run}-{c.handle}-{i}"))
        for c in clients:
            for _ in range(per):
                r = c.recv_reply(60)
                if isinstance(r, OrderAccepted):
                    accepted += 1
                elif isinstance(r, OrderRejected):
                    rejected += 1
                    reasons[r.reason] = reasons.get(r.reason, 0) + 1
        t_acc = time.perf_counter() - t0
        deadline = time.perf_counter() + 120
        while filled + paced < accepted and time.perf_counter() < deadline:
            for c in clients:
                while c.sub.poll(0):
                    ev = c.wire.decode_event(c.sub.recv_multipart()[-1])
                    if isinstance(ev, OrderEvent):
                        if ev.kind == "filled":
                            filled += 1
                        elif ev.kind == "rejected":
                            paced += 1
                            if "100" in ev.message or "rate" in ev.message.lower():
                                reasons["gateway_pacing"] = reasons.get("gateway_pacing", 0) + 1
            time.sleep(0.01)
            if int(time.perf_counter()) % 1 == 0:
                for c in clients:
                    c.heartbeat()
        t_fill = time.perf_counter() - t0
    finally:
        for c in clients:
            c.close()
        ctx.term()
    placed = (sim.call("request_counts.get", PLACE_ORDER) or 0) - placed0
    return {"orders": total, "accepted": accepted, "rejected": rejected, "filled": filled,
            "accept_s": t_acc, "fill_s": t_fill, "placed_upstream": placed,
            "gateway_refused": reasons.get("gateway_pacing", 0), "reasons": reasons}


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with HubProcess(hub_main, args.journal_sync) as h:
        rtt_zmq, rtt_lane = request_rtt(h.pub, h.rpc, args.orders, args.interval,
                                         lane=not args.no_lane)
        out["rtt"] = rtt_zmq
        if rtt_lane:
            out["lane_rtt"] = rtt_lane
        acks, fills = hub_latency(h.pub, h.rpc, args.orders, args.interval)
        out["ack"], out["fill"] = acks, fills
        if not args.no_lane:
            out["lane_ack"], out["lane_fill"] = hub_latency(h.pub, h.rpc, args.orders,
                                                            args.interval, lane=True)
            out["sdk_ack"], out["sdk_fill"] = asyncio.run(
                sdk_latency(h.pub, h.rpc, args.orders, args.interval))
            out["sdk_zmq_ack"], out["sdk_zmq_fill"] = asyncio.run(
                sdk_latency(h.pub, h.rpc, args.orders, args.interval, lane=False))
        else:
            out["sdk_ack"], out["sdk_fill"] = asyncio.run(
                sdk_latency(h.pub, h.rpc, args.orders, args.interval, lane=None))
        out["direct"] = asyncio.run(direct_latency(h.sim.port, args.orders, args.interval))
    # sustained rate against IB's own pacing limit (a fresh simulator, 50 msgs/s per client)
    with HubProcess(hub_main, args.journal_sync, max_msg_rate=50.0) as h:
        out["burst"] = sustained(h.pub, h.rpc, h.sim, args.burst_orders)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100 orders, 100-order burst")
    p.add_argument("--orders", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.06)
    p.add_argument("--burst-orders", type=int, default=300)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--no-lane", action="store_true",
                   help="skip the lane rows (a hub without a lane: an older tree)")
    p.add_argument("--journal-sync", default="FULL", choices=["FULL", "NORMAL"],
                   help="the order journal's SQLite synchronous mode (hub default FULL)")
    p.add_argument("--journal-sync-updates", choices=["FULL", "NORMAL"],
                   help="commits no reply waits on (hub default NORMAL; FULL: the hub "
                        "before issue 19)")
    args = p.parse_args()
    if args.journal_sync_updates:
        args.journal_sync += "/" + args.journal_sync_updates
    if args.quick:
        args.orders, args.burst_orders = 100, 100
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {machine()}")
    print(f"command: python bench/orders.py {' '.join(sys.argv[1:])}")
    runs = [run_once(args) for _ in range(args.repeat)]
    ms = "{:.2f}"
    rows = []
    for label, key in (("hub: heartbeat round trip", "rtt"),
                       ("hub lane: heartbeat round trip", "lane_rtt"),
                       ("hub: place -> ack", "ack"), ("hub: place -> fill event", "fill"),
                       ("hub lane: place -> ack", "lane_ack"),
                       ("hub lane: place -> fill event", "lane_fill"),
                       ("SDK: place_order -> ack", "sdk_ack"),
                       ("SDK: place_order -> filled (wait_done)", "sdk_fill"),
                       ("SDK lane=False: place_order -> ack", "sdk_zmq_ack"),
                       ("SDK lane=False: place_order -> filled", "sdk_zmq_fill"),
                       ("direct ib_insync: placeOrder -> fill", "direct")):
        if key not in runs[0]:
            continue
        rows.append([label, str(len(runs[0][key])),
                     spread((1e3 * pct(r[key], 50) for r in runs), ms),
                     spread((1e3 * pct(r[key], 99) for r in runs), ms),
                     spread((1e3 * max(r[key]) for r in runs), ms)])
    print(f"\norder round trips, {args.orders} market orders, {args.interval * 1e3:.0f} ms apart, "
          f"journal_sync={args.journal_sync} (ms; median [min-max] over repeats)")
    print_table(["path", "n", "p50 ms", "p99 ms", "max ms"], rows)
    print("fill vs direct (p50 ratio; p50 and p99 differences in ms; target +0.5 / +1.5):")
    for label, key in (("hub (ZeroMQ)", "fill"), ("hub lane", "lane_fill"),
                       ("SDK", "sdk_fill"), ("SDK lane=False", "sdk_zmq_fill")):
        if key not in runs[0]:
            continue
        ratio = [pct(r[key], 50) / pct(r["direct"], 50) for r in runs]
        d50 = [1e3 * (pct(r[key], 50) - pct(r["direct"], 50)) for r in runs]
        d99 = [1e3 * (pct(r[key], 99) - pct(r["direct"], 99)) for r in runs]
        print(f"  {label} fill / direct fill: {spread(ratio, '{:.2f}')}  "
              f"p50 {spread(d50, '{:+.2f}')} ms  p99 {spread(d99, '{:+.2f}')} ms")
    b = [r["burst"] for r in runs]
    print(f"\nsustained: 5 scripts, {b[0]['orders']} orders back to back, Gateway paced at "
          "50 msgs/s per client")
    print_table(["accepted/s", "upstream placeOrder/s", "fills/s", "filled", "rejected",
                 "Gateway pacing errors"],
                [[spread(x["accepted"] / x["accept_s"] for x in b),
                  spread(x["placed_upstream"] / x["fill_s"] for x in b),
                  spread(x["filled"] / x["fill_s"] for x in b),
                  spread(x["filled"] for x in b), spread(x["rejected"] for x in b),
                  spread(x["gateway_refused"] for x in b)]])
    for x in b:
        if x["reasons"]:
            print(f"  rejections by reason: {x['reasons']}")


if __name__ == "__main__":
    main()
