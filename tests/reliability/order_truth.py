"""Order truth: a stateful randomized machine over every way an order can be touched.

Several scripts trade through one hub at once, a randomly chosen step at a time:

* two SDK scripts (``AsyncHub``: ``alice``, ``bob``) and an operator SDK script
  (``ops``, for the global cancel) over ZeroMQ;
* one unmodified ib_insync script on the hub's TWS front door (client id 7);

and each step is one of: place (resting limit, marketable limit, market), a burst of
placements each cancelled the moment it is acknowledged (the pacer runs at a few
messages a second, so the placements queue while the cancels arrive), modify, cancel,
cancel-all, global cancel, a Gateway restart, an 1100/1101 (connectivity lost, data
lost), and ``kill -9`` of the hub followed by a restart on the same journal.

The hub runs in its own process (``order_truth_hub``) so it can be killed -9; the
simulated Gateway runs in a thread of this process (``SimGateway.in_thread``), keeps
its order book across a Gateway restart (orders live at IB, not in the Gateway) and
across hub kills, and is read through :meth:`ThreadedSim.call`. The machine owns one
asyncio loop and every rule runs a coroutine to completion on it.

**Settled, then compared.** After the steps (and at every ``settle_and_check`` step)
the machine polls, with a deadline, until the views agree and nothing is in transit
(hub connected, pacer queue empty, no journal order in a transitional status); what
still disagrees at the deadline is reported. The views, per order:

* the **journal** (``orders.sqlite3`` read-only: the hub's record, the truth the hub
  tells after a restart);
* the **Gateway** (the simulator's book: the hub's client id, keyed by order id);
* the **SDK** (each script's ``Order`` objects);
* the **front-door script** (ib_insync's ``Trade`` objects of its current session).

**What "equal" means.** Statuses are compared by class, because IB itself reports the
same fact in different spellings to different clients (a refused order is ``Inactive``
at the Gateway, ``Cancelled`` in ib_insync after error 201):

| class | IB statuses |
|---|---|
| working | PendingSubmit, ApiPending, PreSubmitted, Submitted, PendingCancel |
| filled | Filled |
| ended | Cancelled, ApiCancelled, Inactive |

and the filled quantity must be equal wherever it is known. An order the Gateway never
saw must be *ended* and unfilled in the journal (cancelled before it was sent, or not
sent at all); every order the Gateway holds for the hub's client id must be in the
journal under the same owner and client order id (its ``orderRef``). Positions: the
simulator's position per contract equals the sum of the journal's fills (BOT minus SLD).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ibhub.client import AsyncHub, HubError, HubTimeout, Order
from ibhub.orders.journal import JOURNAL_FILE, FillRecord, Journal, OrderRecord
from ibhub.orders.port import parse_order_ref
from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.threaded import ThreadedSim
from tests.ibclient import IB, LimitOrder, MarketOrder, Stock

if TYPE_CHECKING:
    from ib_insync import Trade  # the type; at run time whichever library this Python has

log = logging.getLogger(__name__)

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
SEED = 20261206
SEED_ENV = "IBHUB_ORDER_TRUTH_SEED"
SYMBOLS = ("AAPL", "MSFT")
SDK_SCRIPTS = ("alice", "bob")
FD_CLIENT_ID = 7
FD_OWNER = f"tws-client-{FD_CLIENT_ID}"
SCRIPTS = (*SDK_SCRIPTS, "tws")
PACER_RATE = 8.0  # upstream messages/s: a burst of a dozen orders waits in the pacer
SETTLE_S = 10.0  # how long the views may take to agree once the steps stop
STEP_TIMEOUT_S = 60.0

WORKING = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted",
                     "PendingCancel"})  # fmt: skip
IN_TRANSIT = frozenset({"PendingSubmit", "ApiPending", "PendingCancel"})
FILLED = frozenset({"Filled"})
ENDED = frozenset({"Cancelled", "ApiCancelled", "Inactive"})


def klass(status: str) -> str:
    """The class of an IB status (module docstring): working, filled or ended."""
    if status in WORKING:
        return "working"
    if status in FILLED:
        return "filled"
    if status in ENDED:
        return "ended"
    return f"unknown({status!r})"


@dataclasses.dataclass
class Tally:
    """Figures over every example the machine ran (printed by bench/order_truth.py)."""

    examples: int = 0
    operations: Counter[str] = dataclasses.field(default_factory=Counter)
    orders: int = 0  # journal rows at the end of each example, summed
    fills: int = 0
    refused: Counter[str] = dataclasses.field(default_factory=Counter)
    mismatched_examples: int = 0
    mismatches: Counter[str] = dataclasses.field(default_factory=Counter)
    examples_of: dict[str, str] = dataclasses.field(default_factory=dict)
    settle_s: list[float] = dataclasses.field(default_factory=list)

    def add_mismatches(self, found: list[str], seen: set[str]) -> None:
        """Count ``found``, minus what this example (``seen``) already reported."""
        new = [m for m in found if m not in seen]
        if new and not seen:
            self.mismatched_examples += 1
        seen.update(new)
        for m in new:
            kind = m.split(":", 1)[0]
            self.mismatches[kind] += 1
            self.examples_of.setdefault(kind, m)


TALLY = Tally()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    """One example's processes and clients: simulator thread, hub process, scripts."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.data = tempfile.mkdtemp(prefix="ibhub-truth-")
        self.pub = f"ipc://{self.data}/pub"
        self.rpc = f"ipc://{self.data}/rpc"
        self.tws_port = free_port()
        self.names = f"{self.data}/names"  # the SDK scripts' name secrets, never the user's
        self.sim: ThreadedSim | None = None
        self.hub: asyncio.subprocess.Process | None = None
        self.sdk: dict[str, AsyncHub] = {}
        self.ops: AsyncHub | None = None
        self.ib: IB | None = None
        self.fd_session = 0
        self.fd_base_id = 0  # the journal's highest order id when this FD session began
        self.fd_trades: list[tuple[int, Trade]] = []  # (session, trade) placed by the machine
        self.sdk_orders: dict[str, list[Order]] = {name: [] for name in SDK_SCRIPTS}
        self.contracts: dict[str, Stock] = {}
        self.con_ids: dict[str, int] = {}

    # ---------------------------------------------------------------- simulator

    async def sim_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the simulator's loop (awaited if a coroutine), from ours."""
        sim = self.sim
        assert sim is not None and sim._loop is not None

        async def invoke() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        fut = asyncio.run_coroutine_threadsafe(invoke(), sim._loop)
        return await asyncio.wrap_future(fut)

    async def price(self, symbol: str) -> float:
        assert self.sim is not None
        return float(await self.sim_call(self.sim.broker.price_of, self.con_ids[symbol]))

    # ---------------------------------------------------------------- hub process

    async def start_hub(self) -> None:
        assert self.sim is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.reliability.order_truth_hub", str(self.sim.port),
            self.pub, self.rpc, self.data, str(self.tws_port), str(PACER_RATE),
            stdout=asyncio.subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        self.hub = proc
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"READY", f"hub did not start: {line!r}"

    async def kill_hub(self) -> None:
        proc, self.hub = self.hub, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    # ---------------------------------------------------------------- scripts

    async def connect_fd(self) -> None:
        """(Re)connect the ib_insync script with its client id: a new session."""
        if self.ib is not None:
            self.ib.disconnect()
        self.ib = IB()
        await self.ib.connectAsync("127.0.0.1", self.tws_port, clientId=FD_CLIENT_ID,
                                   timeout=15)  # fmt: skip
        self.fd_session += 1
        reader = Journal(Path(self.data) / JOURNAL_FILE, readonly=True)
        try:
            self.fd_base_id = reader.max_order_id()
        finally:
            reader.close()
        if not self.contracts:
            for sym in SYMBOLS:
                c = Stock(sym, "SMART", "USD")
                await self.ib.qualifyContractsAsync(c)
                assert c.conId, f"front door did not qualify {sym}"
                self.contracts[sym] = c

    async def start(self) -> None:
        self.sim = SimGateway.in_thread(SimConfig(host="127.0.0.1", port=0, seed=self.seed,
                                                  tick_rate=20.0)).start()  # fmt: skip
        universe = self.sim.universe
        for sym in SYMBOLS:
            self.con_ids[sym] = next(i.con_id for i in universe
                                     if i.symbol == sym and i.sec_type == "STK")
        await self.start_hub()
        for name in SDK_SCRIPTS:
            hub = AsyncHub(self.pub, self.rpc, name=name, connect_retries=20,
                           request_timeout=5.0, names_dir=self.names)  # fmt: skip
            await hub.connect()
            self.sdk[name] = hub
        # the operator proves it with the hub's token file (docs/security.md)
        token = (Path(self.data) / "operator.token").read_text(encoding="utf-8").strip()
        ops = AsyncHub(self.pub, self.rpc, name="ops", role="operator", connect_retries=5,
                       request_timeout=5.0, operator_token=token,
                       names_dir=self.names)  # fmt: skip
        try:
            await ops.connect()
            self.ops = ops
        except HubError as exc:  # a hub whose operators are configured, not claimed
            log.info("no operator script (%s): global cancel is not exercised", exc)
            await ops.close()
        await self.connect_fd()

    async def close(self) -> None:
        if self.ib is not None:
            self.ib.disconnect()
            self.ib = None
        for hub in [*self.sdk.values(), *([self.ops] if self.ops else [])]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(hub.close(), 5.0)
        self.sdk.clear()
        self.ops = None
        await self.kill_hub()
        if self.sim is not None:
            self.sim.stop()
            self.sim = None
        shutil.rmtree(self.data, ignore_errors=True)


# ---------------------------------------------------------------------- the views


@dataclasses.dataclass
class Views:
    journal: dict[int, OrderRecord]
    fills: list[FillRecord]
    gateway: dict[int, tuple[str, float, str]]  # order id -> (status, filled, orderRef)
    positions: dict[int, float]  # con id -> qty at the Gateway
    sdk: dict[str, dict[int, tuple[str, float]]]  # script -> order id -> (status, filled)
    fd_held: list[tuple[int, str, float, int]]  # this session's trades: id, status, filled, perm
    fd_open: list[tuple[int, int]]  # ib_insync's open trades: (order id, perm id)
    queue: int  # the hub's pacer queue, all priorities
    connected: bool


def _gateway_snapshot(sim: ThreadedSim) -> tuple[dict[int, tuple[str, float, str]],
                                                  dict[int, float]]:
    orders = {o.order_id: (str(o.status), float(o.filled), o.order_ref)
              for o in sim.broker.orders() if o.client_id == 0}
    positions = {cid: qty for cid, (qty, _avg) in sim.broker.positions().items()}
    return orders, positions


def _perm(t: Trade) -> int:
    """ib_insync sets the order's permId from openOrder, the status's from orderStatus."""
    return int(t.order.permId or t.orderStatus.permId)


async def views(w: World) -> Views:
    assert w.sim is not None
    gateway, positions = await w.sim_call(_gateway_snapshot, w.sim)
    reader = Journal(Path(w.data) / JOURNAL_FILE, readonly=True)
    try:
        journal = {r.order_id: r for r in reader.orders()}
        fills = reader.fills()
    finally:
        reader.close()
    sdk = {name: {o.order_id: (o.status, o.filled) for o in hub.orders()}
           for name, hub in w.sdk.items()}
    fd_held = [(t.order.orderId, t.orderStatus.status, float(t.orderStatus.filled),
                _perm(t)) for s, t in w.fd_trades if s == w.fd_session]
    fd_open = ([(t.order.orderId, _perm(t)) for t in w.ib.openTrades()]
               if w.ib is not None and w.ib.isConnected() else [])
    queue, connected = 0, False
    with contextlib.suppress(HubError):
        status = await w.sdk[SDK_SCRIPTS[0]].status()
        queue = sum(status.upstream_queue.values())
        connected = status.connected
    return Views(journal, fills, gateway, positions, sdk, fd_held, fd_open, queue, connected)


def mismatches(v: Views) -> list[str]:
    """Every disagreement between the views (module docstring); empty when they agree.

    Each entry starts with its kind (``journal/gateway``, ``sdk``, ...) and a colon, so
    the bench can count them by kind.
    """
    out: list[str] = []
    j = v.journal
    for oid, rec in sorted(j.items()):
        jc = klass(rec.status)
        at = v.gateway.get(oid)
        if at is None:
            if jc != "ended" or rec.filled:
                out.append(f"journal/gateway: order {oid} ({rec.owner} {rec.client_order_id}) "
                           f"is {rec.status} filled {rec.filled:g} in the journal but the "
                           "Gateway never had it")
            continue
        status, filled, ref = at
        if parse_order_ref(ref) != (rec.owner, rec.client_order_id):
            out.append(f"identity: Gateway order {oid} has orderRef {ref!r}, the journal's "
                       f"order {oid} is {rec.owner}/{rec.client_order_id}")
        if klass(status) != jc or abs(filled - rec.filled) > 1e-9:
            out.append(f"journal/gateway: order {oid} ({rec.owner} {rec.client_order_id}) is "
                       f"{rec.status} filled {rec.filled:g} in the journal, {status} filled "
                       f"{filled:g} at the Gateway")
    for oid, (status, filled, ref) in sorted(v.gateway.items()):
        if oid not in j:
            out.append(f"journal/gateway: Gateway order {oid} ({status}, filled {filled:g}, "
                       f"ref {ref!r}) is not in the journal")
    # fills: per order and per contract
    by_order: dict[int, float] = defaultdict(float)
    by_con: dict[int, float] = defaultdict(float)
    for f in v.fills:
        by_order[f.order_id] += f.shares
        by_con[f.con_id] += f.shares if f.side == "BOT" else -f.shares
    for oid, rec in sorted(j.items()):
        if abs(by_order.get(oid, 0.0) - rec.filled) > 1e-9:
            out.append(f"journal fills: order {oid} filled {rec.filled:g} but its fills sum "
                       f"to {by_order.get(oid, 0.0):g}")
    for con_id in sorted(set(by_con) | set(v.positions)):
        want, have = by_con.get(con_id, 0.0), v.positions.get(con_id, 0.0)
        if abs(want - have) > 1e-9:
            out.append(f"positions: contract {con_id} holds {have:g} at the Gateway, the "
                       f"journal's fills sum to {want:g}")
    # the SDK scripts
    for name, seen in sorted(v.sdk.items()):
        own = {oid: rec for oid, rec in j.items() if rec.owner == name}
        for oid, rec in sorted(own.items()):
            if oid not in seen:
                out.append(f"sdk: {name} does not know its order {oid} ({rec.status} in the "
                           "journal)")
                continue
            status, filled = seen[oid]
            if klass(status) != klass(rec.status) or abs(filled - rec.filled) > 1e-9:
                out.append(f"sdk: {name}'s order {oid} is {status} filled {filled:g} in the "
                           f"SDK, {rec.status} filled {rec.filled:g} in the journal")
        for oid in sorted(set(seen) - set(own)):
            out.append(f"sdk: {name} has order {oid} ({seen[oid][0]}) that the journal does "
                       "not give it")
    out.extend(_front_door(v))
    return out


def _front_door(v: Views) -> list[str]:
    out: list[str] = []
    mine = {oid: rec for oid, rec in v.journal.items() if rec.owner == FD_OWNER}
    by_perm = {rec.perm_id: rec for rec in mine.values() if rec.perm_id}
    open_perms = {perm for _oid, perm in v.fd_open if perm}
    open_ids = {down for down, _perm in v.fd_open}
    for oid, rec in sorted(mine.items()):
        # the script's id for it: the client order id's head, unless the front door had
        # to give it a fresh one after a hub restart (then the permId tells)
        head = (rec.client_order_id or "").split(".")[0]
        known = (rec.perm_id in open_perms) or (head.isdigit() and int(head) in open_ids)
        if klass(rec.status) == "working" and not known:
            out.append(f"front door: order {oid} ({rec.client_order_id}) works at the hub "
                       f"({rec.status}) but the ib_insync script has no open trade for it")
    for down, perm in v.fd_open:
        held = by_perm.get(perm) if perm else None
        if held is not None and klass(held.status) != "working":
            out.append(f"front door: the script's open trade {down} is order {held.order_id}, "
                       f"{held.status} in the journal")
    return out


def front_door_held(v: Views, base_id: int) -> list[str]:
    """The trades the machine placed in the current front-door session, each against the
    journal row the front door made of it (client order id ``<order id>.<run tag>``)."""
    out: list[str] = []
    fresh: dict[int, list[OrderRecord]] = defaultdict(list)
    for rec in v.journal.values():
        if rec.owner == FD_OWNER and rec.order_id > base_id and rec.client_order_id:
            head = rec.client_order_id.split(".")[0]
            if head.isdigit():
                fresh[int(head)].append(rec)
    for down, status, filled, _perm in v.fd_held:
        rows = fresh.get(down, [])
        if len(rows) > 1:
            out.append(f"front door: the script's order {down} maps to "
                       f"{len(rows)} hub orders {[r.order_id for r in rows]}")
            continue
        if not rows:
            if klass(status) != "ended":
                out.append(f"front door: the script's order {down} is {status}, the hub "
                           "has no order for it")
            continue
        rec = rows[0]
        if klass(status) != klass(rec.status) or abs(filled - rec.filled) > 1e-9:
            out.append(f"front door: the script's order {down} is {status} filled "
                       f"{filled:g}, hub order {rec.order_id} is {rec.status} filled "
                       f"{rec.filled:g} in the journal")
    return out


def in_transit(v: Views) -> list[str]:
    """Why the hub is not settled yet (empty when it is)."""
    why = []
    if not v.connected:
        why.append("hub not connected upstream")
    if v.queue:
        why.append(f"{v.queue} request(s) in the pacer queue")
    moving = [oid for oid, rec in v.journal.items() if rec.status in IN_TRANSIT]
    if moving:
        why.append(f"orders {moving[:10]} in transit")
    return why


async def settle_and_compare(w: World, deadline_s: float = SETTLE_S) -> list[str]:
    """Poll until the hub is settled and the views agree, or the deadline passes;
    return what still disagrees (with why the hub had not settled, if it had not)."""
    end = time.monotonic() + deadline_s
    while True:
        v = await views(w)
        found = mismatches(v) + front_door_held(v, w.fd_base_id)
        why = in_transit(v)
        if (not found and not why) or time.monotonic() > end:
            break
        await asyncio.sleep(0.2)
    if why:
        found = [*found, f"settle: not settled after {deadline_s:g} s: {'; '.join(why)}"]
    return found


# ---------------------------------------------------------------------- the machine


class OrderTruth(RuleBasedStateMachine):
    """The machine (module docstring). ``strict``: a mismatch fails the example (the
    test, and the bench with ``--shrink``); otherwise it is counted (the bench)."""

    strict = True
    seed = SEED

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.w = World(self.seed)
        self.kills = 0
        self.failed = False  # a check failed: teardown only cleans up
        self.reported: set[str] = set()
        self.steps: list[str] = []  # this example's steps so far, for the mismatch log
        TALLY.examples += 1
        try:
            self.run(self.w.start())
        except BaseException:
            self.run(self.w.close())
            self.loop.close()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT_S) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def count(self, what: str, **args: Any) -> None:
        TALLY.operations[what] += 1
        self.steps.append(f"{what}({', '.join(f'{k}={v!r}' for k, v in args.items())})")

    # ---- orders ---------------------------------------------------------------------

    async def _limit(self, symbol: str, side: str, kind: str) -> float | None:
        """A limit price: resting 5% away from the market, marketable 3% through it."""
        if kind == "mkt":
            return None
        p = await self.w.price(symbol)
        away = 0.95 if kind == "rest" else 1.03
        return round(p * away if side == "BUY" else p * (2 - away), 2)

    async def _sdk_place(self, name: str, symbol: str, side: str, qty: int,
                         kind: str) -> Order | None:
        limit = await self._limit(symbol, side, kind)
        try:
            o = await self.w.sdk[name].place_order(
                symbol, side, float(qty), order_type="MKT" if limit is None else "LMT",
                limit_price=limit)
        except (HubError, HubTimeout) as exc:
            TALLY.refused[f"place: {getattr(exc, 'code', type(exc).__name__)}"] += 1
            return None
        self.w.sdk_orders[name].append(o)
        return o

    async def _fd_place(self, symbol: str, side: str, qty: int, kind: str) -> Trade:
        limit = await self._limit(symbol, side, kind)
        ib = self.w.ib
        assert ib is not None
        order = MarketOrder(side, qty) if limit is None else LimitOrder(side, qty, limit)
        trade = ib.placeOrder(self.w.contracts[symbol], order)
        self.w.fd_trades.append((self.w.fd_session, trade))
        return trade

    async def _sdk_cancel(self, name: str, o: Order) -> None:
        try:
            await self.w.sdk[name].cancel_order(o)
        except (HubError, HubTimeout) as exc:
            TALLY.refused[f"cancel: {getattr(exc, 'code', type(exc).__name__)}"] += 1

    @rule(who=st.sampled_from(SCRIPTS), symbol=st.sampled_from(SYMBOLS),
          side=st.sampled_from(("BUY", "SELL")), qty=st.integers(1, 5),
          kind=st.sampled_from(("rest", "marketable", "mkt")))
    def place(self, who: str, symbol: str, side: str, qty: int, kind: str) -> None:
        self.count("place", who=who, symbol=symbol, side=side, qty=qty, kind=kind)
        if who == "tws":
            self.run(self._fd_place(symbol, side, qty, kind))
        else:
            self.run(self._sdk_place(who, symbol, side, qty, kind))

    @rule(who=st.sampled_from(SCRIPTS), symbol=st.sampled_from(SYMBOLS),
          n=st.integers(2, 12), kind=st.sampled_from(("rest", "marketable")),
          cancel=st.booleans())
    def burst(self, who: str, symbol: str, n: int, kind: str, cancel: bool) -> None:
        """``n`` placements at once, each cancelled as soon as it is acknowledged: the
        placements wait in the pacer while the cancels arrive."""
        self.count("burst", who=who, symbol=symbol, n=n, kind=kind, cancel=cancel)
        TALLY.operations["place"] += n  # the burst itself is one step
        if cancel:
            TALLY.operations["cancel"] += n

        async def sdk_one(name: str) -> None:
            o = await self._sdk_place(name, symbol, "BUY", 1, kind)
            if o is not None and cancel:
                await self._sdk_cancel(name, o)

        async def go() -> None:
            if who == "tws":
                trades = [await self._fd_place(symbol, "BUY", 1, kind) for _ in range(n)]
                if cancel:
                    ib = self.w.ib
                    assert ib is not None
                    for t in trades:
                        ib.cancelOrder(t.order)
            else:
                await asyncio.gather(*(sdk_one(who) for _ in range(n)))

        self.run(go())

    def _pick_sdk(self, name: str, pick: int) -> Order | None:
        live = [o for o in self.w.sdk_orders[name] if not o.done]
        return live[pick % len(live)] if live else None

    def _pick_fd(self, pick: int) -> Trade | None:
        live = [t for s, t in self.w.fd_trades if s == self.w.fd_session and not t.isDone()]
        return live[pick % len(live)] if live else None

    @rule(who=st.sampled_from(SCRIPTS), pick=st.integers(0, 1000),
          kind=st.sampled_from(("rest", "marketable")))
    def modify(self, who: str, pick: int, kind: str) -> None:
        """A working limit order gets a new price (resting, or through the market)."""
        self.count("modify", who=who, pick=pick, kind=kind)

        async def go() -> None:
            if who == "tws":
                t = self._pick_fd(pick)
                if t is None or t.order.orderType != "LMT":
                    return
                sym = t.contract.symbol
                price = await self._limit(sym, t.order.action, kind)
                assert price is not None  # a modify is never to a market order
                t.order.lmtPrice = price
                assert self.w.ib is not None
                self.w.ib.placeOrder(t.contract, t.order)
                return
            o = self._pick_sdk(who, pick)
            if o is None or o.order_type != "LMT":
                return
            price = await self._limit(o.symbol, o.action, kind)
            try:
                await self.w.sdk[who].modify_order(o, limit_price=price)
            except (HubError, HubTimeout) as exc:
                TALLY.refused[f"modify: {getattr(exc, 'code', type(exc).__name__)}"] += 1

        self.run(go())

    @rule(who=st.sampled_from(SCRIPTS), pick=st.integers(0, 1000))
    def cancel(self, who: str, pick: int) -> None:
        self.count("cancel", who=who, pick=pick)
        if who == "tws":
            t = self._pick_fd(pick)
            if t is not None and self.w.ib is not None:
                self.w.ib.cancelOrder(t.order)
            return
        o = self._pick_sdk(who, pick)
        if o is not None:
            self.run(self._sdk_cancel(who, o))

    @rule(who=st.sampled_from(SCRIPTS))
    def cancel_all(self, who: str) -> None:
        """The script's own working orders (ib_insync's reqGlobalCancel through the front
        door cancels that client id's orders only)."""
        self.count("cancel_all", who=who)
        if who == "tws":
            assert self.w.ib is not None
            self.w.ib.reqGlobalCancel()
            return

        async def go() -> None:
            try:
                await self.w.sdk[who].cancel_all_orders()
            except (HubError, HubTimeout) as exc:
                TALLY.refused[f"cancel_all: {getattr(exc, 'code', type(exc).__name__)}"] += 1

        self.run(go())

    @rule()
    def global_cancel(self) -> None:
        """The operator's global cancel: every order at the Gateway, everyone's."""
        ops = self.w.ops
        if ops is None:
            return
        self.count("global_cancel")

        async def go() -> None:
            try:
                await ops.global_cancel()
            except (HubError, HubTimeout) as exc:
                TALLY.refused[f"global_cancel: {getattr(exc, 'code', type(exc).__name__)}"] += 1

        self.run(go())

    # ---- faults ---------------------------------------------------------------------

    @rule(down=st.sampled_from((0.05, 0.2, 0.5)))
    def gateway_restart(self, down: float) -> None:
        """Every socket dropped, connects refused for ``down`` s; IB keeps the orders."""
        self.count("gateway_restart", down=down)
        assert self.w.sim is not None
        self.run(self.w.sim_call(self.w.sim.restart, down))

    @rule(after=st.sampled_from((0.05, 0.3)))
    def connectivity_1101(self, after: float) -> None:
        """1100 (connectivity lost), then 1101 (restored, data lost)."""
        self.count("1101", after=after)
        assert self.w.sim is not None
        self.run(self.w.sim_call(self.w.sim.connectivity_lost, "data_lost", after))

    @precondition(lambda self: self.kills < 3)
    @rule()
    def hub_kill(self) -> None:
        """kill -9 of the hub, a restart on the same journal, the scripts come back."""
        self.count("hub_kill")
        self.kills += 1

        async def go() -> None:
            w = self.w
            before = {name: hub.rehellos for name, hub in w.sdk.items()}
            await w.kill_hub()
            assert w.sim is not None
            sim = w.sim

            def gone() -> bool:
                return 0 not in sim.connected_client_ids()

            while not await w.sim_call(gone):
                await asyncio.sleep(0.02)
            await w.start_hub()
            await w.connect_fd()
            end = time.monotonic() + 15.0
            while any(hub.rehellos == before[n] for n, hub in w.sdk.items()):
                if time.monotonic() > end:
                    raise AssertionError("an SDK script did not say hello to the new hub")
                await asyncio.sleep(0.05)

        self.run(go())

    # ---- the invariant --------------------------------------------------------------

    def _check(self) -> None:
        started = time.monotonic()
        found = self.run(settle_and_compare(self.w), timeout=SETTLE_S + 30.0)
        TALLY.settle_s.append(time.monotonic() - started)
        if found:
            TALLY.add_mismatches(found, self.reported)
            for m in found:
                log.warning("order truth: %s", m)
            log.warning("order truth: after the steps %s", "; ".join(self.steps))
        if found and self.strict:
            self.failed = True
            shown = "\n  ".join(found[:20])
            raise AssertionError(f"{len(found)} mismatch(es) after settling (seed "
                                 f"{self.seed}):\n  {shown}")

    @rule()
    def settle_and_check(self) -> None:
        self.count("settle_and_check")
        self._check()

    def teardown(self) -> None:
        try:
            if not self.failed:
                self._check()
        finally:
            with contextlib.suppress(Exception):
                v = self.run(views(self.w))
                TALLY.orders += len(v.journal)
                TALLY.fills += len(v.fills)
            self.run(self.w.close())
            self.loop.close()
            asyncio.set_event_loop(None)


def seed_from_env(default: int = SEED) -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else default


__all__ = ["SEED", "SEED_ENV", "TALLY", "OrderTruth", "Tally", "Views", "World", "klass",
           "mismatches", "seed_from_env", "settle_and_compare"]
