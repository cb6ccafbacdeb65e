"""The one Gateway/TWS session, over the IB client library (:mod:`ibhub.ib.lib`).

Connection policy
    ``Upstream`` runs a supervisor task on the hub's loop: connect (``IB.connectAsync``
    with ``connect_timeout``), and when the session ends, reconnect forever (or up to
    ``reconnect_max_attempts`` consecutive failures, then FAILED) with bounded
    exponential back-off and jitter. A Gateway that accepts TCP but never answers
    the handshake is a connect timeout like any other failure. A 326 (client id in
    use) or a socket closed during connect fails the attempt at once instead of
    waiting out the timeout as ib_insync would. A session that ends within
    ``STABLE_SESSION`` seconds of starting backs off before the next connect too, so
    a Gateway that accepts and drops us in a loop is not hammered.

States (``protocol.UpstreamState``)
    DISCONNECTED before start and after stop; CONNECTING until the first session is
    up; CONNECTED while data can flow; RECONNECTING after a session ended *or* while
    the Gateway reports its own link to IB down (1100 .. 1101/1102), so a client can
    treat "left CONNECTED" as "data stopped" and "entered CONNECTED" as "data is back";
    FAILED when the attempt budget is spent.

Subscriptions
    The hub hands in :class:`~ibhub.hub.subscriptions.Subscription` objects. Every active
    one is (re)requested after every new session and after 1101 (data lost), with a
    fresh request id; 1102 (data kept) requests nothing.

Tick path
    The socket reader and the tick handlers are :class:`~ibhub.ib.reader.TickReader`
    (``self.reader``); this module opens and closes the lines (request ids, pacing,
    resubscribe) and fills the reader's map of request ids to streams.

Queries
    Contract details and historical bars: :mod:`ibhub.ib.queries` (``self.queries``).

Errors
    Every IB error is logged with its code (and ``ibhub.tws.ib_codes.explain`` when
    available). Errors for a market-data request id go to the listener's
    ``on_line_error`` (the hub routes them to the subscribing leases); errors with
    no request (reqId -1) go to ``on_ib_message`` (hub.status). Errors for contract
    details / historical requests are raised to the awaiting caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from ibhub.config import HubSettings
from ibhub.ib.convert import to_ib_contract
from ibhub.ib.lib import IB, RequestError, new_ib
from ibhub.ib.liblog import demote_library_logs
from ibhub.ib.option_queries import OptionQueries
from ibhub.ib.queries import Queries, UpstreamDown
from ibhub.ib.reader import TickReader
from ibhub.protocol import BarData, ContractInfo, ContractSpec, HistoricalTick, UpstreamState
from ibhub.tws.codec import UnsafeField, holds_nul
from ibhub.tws.pacing import Pacer, Priority

if TYPE_CHECKING:
    from ibhub.hub.subscriptions import Subscription

log = logging.getLogger(__name__)

# IB system codes (reqId -1).
CONNECTIVITY_LOST = 1100
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
CLIENT_ID_IN_USE = 326
STABLE_SESSION = 10.0  # seconds; a session ending sooner counts as a flap (backs off)
# Errors during connect that mean "this attempt is over".
_CONNECT_FATAL = frozenset({CLIENT_ID_IN_USE, 502, 503, 504, 507})


class UpstreamListener(Protocol):
    def on_state(self, state: str, code: int, message: str) -> None: ...

    def on_ib_message(self, code: int, message: str) -> None: ...

    def on_line_error(self, sub: Subscription, code: int, message: str) -> None: ...

    def on_resubscribed(self, count: int, code: int) -> None: ...

    def on_connect_failed(self, attempt: int, reason: str, retry_in: float | None) -> None: ...


def explain(code: int) -> str:
    """What ``code`` means and what to do, from :mod:`ibhub.tws.ib_codes` ("" if unavailable)."""
    try:
        from ibhub.tws.ib_codes import explain as _explain
    except ImportError:  # pragma: no cover - the module ships with ibhub
        return ""
    exp = _explain(code)
    return f"{exp.meaning} {exp.action}".strip()


def _is_warning(code: int) -> bool:
    try:
        from ibhub.tws.ib_codes import is_warning
    except ImportError:  # pragma: no cover
        return 2100 <= code < 2200
    return is_warning(code)


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, +-20% jitter.

    Jitter keeps many hubs (or a hub and its restarted twin) from retrying in
    lock-step; the result never exceeds ``cap``.
    """
    base = min(cap, initial * (2 ** min(attempt - 1, 30)))
    return min(cap, base * (1.0 + rng.uniform(-0.2, 0.2)))


def guard_fields(client: Any) -> None:
    """Refuse, at the last step before the wire, any field that holds a NUL.

    Every request the hub sends upstream (orders, contract details, market data ...)
    goes through ``Client.send(*fields)`` (ib_insync and ib_async alike), which joins
    the fields with NUL, the TWS separator, without looking at them. A NUL inside a
    field would shift the rest of the message at the Gateway, so the wrapped ``send``
    raises :class:`~ibhub.tws.codec.UnsafeField` instead: the request fails with that
    error and nothing is sent. The hub's decoders refuse such text long before this;
    this is the defence in depth. Cost: one check per field of a request (requests
    are rare; ticks never pass here)."""
    send = client.send

    def guarded_send(*fields: Any, **kwargs: Any) -> None:
        for index, value in enumerate(fields):
            if holds_nul(value):
                raise UnsafeField(
                    f"field {index} of request {fields[0] if fields else '?'} holds a NUL "
                    f"(the TWS field separator): {value!r}; the request was not sent"
                )
        send(*fields, **kwargs)

    client.send = guarded_send


# ---------------------------------------------------------------------------- session


class Upstream:
    """The Gateway session: connection supervisor, market-data lines, requests."""

    def __init__(
        self,
        settings: HubSettings,
        listener: UpstreamListener,
        *,
        rng: random.Random | None = None,
        pacer: Pacer | None = None,
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        # The hub's one outgoing budget (ibhub.tws.pacing): line requests and cancels,
        # contract details and historical data wait their turn there (None: unpaced).
        self.pacer = pacer
        self.host = settings.gateway_host
        self.port = settings.gateway_port
        self.client_id = settings.client_id
        self._listener = listener
        self._rng = rng or random.Random()
        self.state = UpstreamState.DISCONNECTED
        self.reconnect_count = 0
        self.connected_at: float | None = None
        self._ib: IB | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._connect_abort: asyncio.Future[str] | None = None
        self._active: set[Subscription] = set()
        self._lines: dict[int, Subscription] = {}  # live req id -> subscription
        self._sent: set[int] = set()  # line req ids actually sent (only those get a cancel)
        # The fast socket reader and tick handlers (ibhub.ib.reader): it owns the map
        # of live request ids to streams that the line code below fills.
        self.reader = TickReader(flush)
        self._sinks = self.reader.sinks
        # Depth rows (updateMktDepth 12, updateMktDepthL2 13) of the hub's depth lines go
        # to their DepthStream (hub/depth.py) before ib_insync sees them.
        # Tick-by-tick (99) of the hub's shared tick-by-tick lines likewise (hub/tbt.py).
        # These taps come first; a tap added with add_tap for the same message (the
        # front door's pass-through) sees what they do not take.
        self._own_taps: dict[int, Callable[[list[bytes]], bool]] = {
            12: self._depth_row, 13: self._depth_row, 99: self._tbt_tick,
            17: self._hist_reply, 90: self._hist_update}
        for msg_id, own in self._own_taps.items():
            self.reader.add_tap(msg_id, own)
        # Contract details and historical bars (ibhub.ib.queries).
        self.queries = Queries(settings, self.require, lambda: self.pacer)
        # Option chains, IB's option model, symbol search (ibhub.ib.option_queries).
        self.option_queries = OptionQueries(settings, self.require, self.queries)
        # Every request/order id handed out by this process is below this (see
        # _unique_req_ids): ids stay unique across sessions, whatever the library resets.
        self.req_id_floor = 0

    # ------------------------------------------------------------------ properties

    @property
    def ib(self) -> IB | None:
        """The ib_insync session, for sibling adapters that need more than market data
        (orders, account). Reuse it; never open a second connection."""
        return self._ib

    @property
    def connected(self) -> bool:
        return self.state == UpstreamState.CONNECTED

    @property
    def server_version(self) -> int:
        ib = self._ib
        return ib.client.serverVersion() if ib is not None and ib.client.isReady() else 0

    @property
    def accounts(self) -> list[str]:
        ib = self._ib
        return list(ib.client.getAccounts()) if ib is not None and ib.client.isReady() else []

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Start the supervisor; returns at once (the connection comes up in the background)."""
        if self._task is not None:
            return
        # ib_insync finds "the" loop through the policy (util.getLoop); under a runner
        # with a loop factory (uvloop.run, asyncio.Runner(loop_factory=...)) that is not
        # the running loop, and its socket futures would land on another loop.
        asyncio.set_event_loop(asyncio.get_running_loop())
        demote_library_logs()  # the library's per-retry ERROR lines (ibhub.ib.liblog)
        self._install(new_ib())  # raises LibraryMismatch if the library moved an internal
        self._task = asyncio.create_task(self._supervise(), name="ibhub-upstream")

    def _install(self, ib: IB) -> None:
        """Hook the tick reader, the request-id counter and our event handlers into ``ib``."""
        ib.RaiseRequestErrors = True
        self._ib = ib
        guard_fields(ib.client)
        self._lost = asyncio.Event()
        self.reader.install(ib)
        self._unique_req_ids(ib)
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        ib.client.apiError += self._on_api_error

    def _unique_req_ids(self, ib: IB) -> None:
        """Make the session's id counter monotonic over the life of the process.

        ib_insync's ``Client.reset()`` (every disconnect) sets its counter to 0 and the
        next session starts it at the Gateway's nextValidId, which is above the order
        ids the Gateway has seen but knows nothing of the *request* ids used before
        (market-data lines, contract details, the front door's pass-through). Reusing
        one of those makes a late reply, or a map that still remembers the old id,
        look like the answer to the new request. So every id the hub takes
        (``getReqId``: requests and order ids alike, ib_insync's own calls included)
        is also above every id this process has taken before; order ids stay above
        nextValidId and the journal's ids as well (``updateReqId`` only raises).
        """
        client = ib.client
        issue = client.getReqId

        def get_req_id() -> int:
            client.updateReqId(self.req_id_floor)
            req_id = int(issue())
            self.req_id_floor = req_id + 1
            return req_id

        client.getReqId = get_req_id

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        ib = self._ib
        if ib is not None:
            ib.errorEvent -= self._on_error
            ib.disconnectedEvent -= self._on_disconnected
            ib.client.apiError -= self._on_api_error
            self.reader.uninstall(ib)
            ib.disconnect()
            ib.client.disconnect()  # also closes a socket still in its handshake
        self._drop_lines()
        self.connected_at = None
        self._set_state(UpstreamState.DISCONNECTED, 0, "stopped")

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self) -> None:
        s = self.settings
        failures = 0  # consecutive failed connect attempts (bounded by max attempts)
        flaps = 0  # consecutive sessions that ended soon after they started
        ever_connected = False
        assert self._lost is not None
        while True:
            self._set_state(
                UpstreamState.RECONNECTING if ever_connected else UpstreamState.CONNECTING,
                0,
                f"connecting to {self.host}:{self.port} as client {self.client_id}",
            )
            try:
                await self._connect_once()
            except Exception as exc:  # every failure is retried; unexpected ones logged in full
                if not isinstance(
                    exc, OSError | TimeoutError | ConnectionError | RequestError | _AttemptFailed
                ):
                    log.exception("unexpected error while connecting")
                failures += 1
                reason = _describe(exc)
                last = bool(s.reconnect_max_attempts) and failures >= s.reconnect_max_attempts
                delay = (
                    None
                    if last
                    else backoff_delay(
                        failures, s.reconnect_backoff_initial, s.reconnect_backoff_max, self._rng
                    )
                )
                # One WARNING per outage: "connection lost" (or, before the first
                # session, the first failed attempt) says it; retries are INFO, giving
                # up is a WARNING again. Alerts add upstream_lost/_restored.
                first = failures == 1 and not ever_connected
                log.log(
                    logging.WARNING if first or delay is None else logging.INFO,
                    "connect to %s:%s (client %s) failed, attempt %d: %s%s",
                    self.host, self.port, self.client_id, failures, reason,
                    "" if delay is None else f"; retrying in {delay:.2f}s",
                )
                self._listener.on_connect_failed(failures, reason, delay)
                if delay is None:
                    self._set_state(
                        UpstreamState.FAILED, 0, f"gave up after {failures} attempts: {reason}"
                    )
                    return
                await asyncio.sleep(delay)
                continue
            failures = 0
            if ever_connected:
                self.reconnect_count += 1
            ever_connected = True
            self.connected_at = time.time()
            self._lost.clear()
            log.info(
                "connected to %s:%s as client %s (server version %s, accounts %s)",
                self.host, self.port, self.client_id, self.server_version, self.accounts,
            )
            if s.market_data_type != 1 and self._ib is not None:
                self._ib.reqMarketDataType(s.market_data_type)
            self._set_state(UpstreamState.CONNECTED, 0, f"connected to {self.host}:{self.port}")
            count = self._request_all()
            if count and self.reconnect_count:
                self._listener.on_resubscribed(count, 0)
            started = time.monotonic()
            await self._lost.wait()
            self.connected_at = None
            self._drop_lines()
            lasted = time.monotonic() - started
            log.warning("connection to %s:%s lost after %.1fs", self.host, self.port, lasted)
            self._set_state(UpstreamState.RECONNECTING, 0,
                            f"connection to {self.host}:{self.port} lost after {lasted:.1f}s")
            # A Gateway that accepts us and drops us again at once (a competing session,
            # a restart loop) must not be hammered: short sessions back off too.
            flaps = flaps + 1 if lasted < STABLE_SESSION else 0
            if flaps:
                await asyncio.sleep(backoff_delay(
                    flaps, s.reconnect_backoff_initial, s.reconnect_backoff_max, self._rng))

    async def _connect_once(self) -> None:
        ib = self._ib
        assert ib is not None
        loop = asyncio.get_running_loop()
        abort: asyncio.Future[str] = loop.create_future()
        self._connect_abort = abort
        attempt = asyncio.ensure_future(
            ib.connectAsync(
                self.host, self.port, clientId=self.client_id, timeout=self.settings.connect_timeout
            )
        )
        try:
            done, _ = await asyncio.wait({attempt, abort}, return_when=asyncio.FIRST_COMPLETED)
            if attempt in done:
                attempt.result()  # raises the connect error, if any
                if not ib.client.isReady():
                    raise _AttemptFailed("socket closed while connecting")
                return
            reason = abort.result()
            attempt.cancel()
            try:
                await attempt
            except (asyncio.CancelledError, Exception):  # already failing; keep the reason
                pass
            ib.client.disconnect()
            raise _AttemptFailed(reason)
        finally:
            self._connect_abort = None
            if not abort.done():
                abort.cancel()
            if not attempt.done():  # we were cancelled (stop()): don't leave it running
                attempt.cancel()
                try:
                    await attempt
                except (asyncio.CancelledError, Exception):  # ib_insync cleans up itself
                    pass

    def _set_state(self, state: str, code: int, message: str) -> None:
        if state == self.state:
            return
        log.info("upstream %s -> %s (%s)", self.state, state, message)
        self.state = state
        self._listener.on_state(state, code, message)

    def _on_disconnected(self) -> None:
        if self._lost is not None:
            self._lost.set()

    def _on_api_error(self, msg: str) -> None:
        abort = self._connect_abort
        if abort is not None and not abort.done():
            abort.set_result(msg or "connection closed")

    # ------------------------------------------------------------------ lines

    def open_line(self, sub: Subscription) -> None:
        """Start streaming ``sub`` (now if connected, else at the next connect)."""
        self._active.add(sub)
        if self.connected:
            self._request(sub)

    def close_line(self, sub: Subscription) -> None:
        self._active.discard(sub)
        req_id = sub.req_id
        sub.req_id = None
        if req_id is None:
            return
        self._sinks.pop(b"%d" % req_id, None)
        self._lines.pop(req_id, None)
        if req_id not in self._sent:
            return  # still queued in the pacer: its send sees the line closed and skips
        self._sent.discard(req_id)
        self._paced(Priority.CANCEL, partial(self._send_cancel, sub.kind, req_id),
                    f"cancel line {req_id}")  # fmt: skip

    def _send_cancel(self, kind: str, req_id: int) -> None:
        ib = self._ib
        if ib is not None and ib.client.isReady():
            try:
                if kind.startswith("bars"):
                    ib.client.cancelRealTimeBars(req_id)
                elif kind == "depth":
                    ib.client.cancelMktDepth(req_id, True)
                elif kind.startswith("tbt."):
                    ib.client.cancelTickByTickData(req_id)
                elif kind.startswith("hist."):
                    ib.client.cancelHistoricalData(req_id)
                else:
                    ib.client.cancelMktData(req_id)
            except ConnectionError:
                pass  # the session is going away; its requests die with it

    def _depth_row(self, f: list[bytes]) -> bool:
        """[12, 1, reqId, pos, op, side, price, size] / [13, 1, reqId, pos, maker, op, side,
        price, size, isSmart] -> the line's book; False if it is not a depth line's."""
        sink = self._sinks.get(f[2])
        row = getattr(sink, "row", None)
        if row is None:
            return False
        try:
            if f[0] == b"12":
                row(int(f[3]), "", int(f[4]), int(f[5]), float(f[6]), float(f[7]))
            else:
                row(int(f[3]), f[4].decode(errors="replace"), int(f[5]), int(f[6]),
                    float(f[7]), float(f[8]))
        except (ValueError, IndexError):
            log.warning("dropped malformed depth message %r", f[:10])
        return True

    def _hist_reply(self, f: list[bytes]) -> bool:
        """historicalData (17) of a shared keepUpToDate line: the start-up history nobody
        asked for (scripts get theirs one-shot); dropped. hub/hist_updates.py."""
        return hasattr(self._sinks.get(f[1]), "update")

    def _hist_update(self, f: list[bytes]) -> bool:
        """historicalDataUpdate (90) -> the keepUpToDate line's stream."""
        sink = self._sinks.get(f[1])
        update = getattr(sink, "update", None)
        if update is None:
            return False
        try:
            update(f)
        except (ValueError, IndexError):
            log.warning("dropped malformed historical update %r", f[:10])
        return True

    def _tbt_tick(self, f: list[bytes]) -> bool:
        """[99, reqId, tickType, time, ...] -> the tick-by-tick line's stream (hub/tbt.py)."""
        sink = self._sinks.get(f[1])
        tick = getattr(sink, "tbt", None)
        if tick is None:
            return False
        try:
            tick(f)
        except (ValueError, IndexError):
            log.warning("dropped malformed tick-by-tick message %r", f[:10])
        return True

    def _paced(self, priority: Priority, send: Callable[[], None], label: str) -> None:
        """Send now (no pacer) or when the budget allows; failures are only logged."""
        if self.pacer is None:
            send()
            return
        self.pacer.submit(priority, send, label=label).add_done_callback(_log_failed_send)

    def add_tap(self, msg_id: int, tap: Callable[[list[bytes]], bool]) -> None:
        """Show raw upstream messages of ``msg_id`` to ``tap`` first: :meth:`TickReader.add_tap`
        (after the session's own tap for that message, if it has one)."""
        own = self._own_taps.get(msg_id)
        if own is None:
            self.reader.add_tap(msg_id, tap)
        else:
            self.reader.add_tap(msg_id, lambda f: own(f) or tap(f))

    def remove_tap(self, msg_id: int) -> None:
        own = self._own_taps.get(msg_id)
        if own is None:
            self.reader.remove_tap(msg_id)
        else:
            self.reader.add_tap(msg_id, own)

    @property
    def ticks_in(self) -> int:
        """Tick and bar messages read from the Gateway (metrics)."""
        return self.reader.ticks_in

    @property
    def active_lines(self) -> int:
        return len(self._active)

    def _request(self, sub: Subscription) -> None:
        ib = self._ib
        assert ib is not None
        old = sub.req_id
        if old is not None:
            self._sinks.pop(b"%d" % old, None)
            self._lines.pop(old, None)
        sub.req_id = None
        try:
            req_id = ib.client.getReqId()
        except ConnectionError:
            # The session died under us; the line stays active and is requested again
            # when the next session is up.
            log.debug("could not request %s now: not connected", sub.topic)
            return
        self._lines[req_id] = sub
        self._sinks[b"%d" % req_id] = sub.stream
        sub.req_id = req_id
        self._paced(Priority.SUBSCRIPTION, partial(self._send_line, sub, req_id),
                    f"line {sub.topic}")  # fmt: skip

    def _send_line(self, sub: Subscription, req_id: int) -> None:
        if sub.req_id != req_id:
            return  # closed or re-requested while it waited in the pacer
        ib = self._ib
        if ib is None or not ib.client.isReady():
            return  # requested again with a fresh id when the next session is up
        contract = to_ib_contract(sub.contract)
        try:
            if sub.kind.startswith("bars"):
                # "bars.<WHAT>": that whatToShow. Plain "bars" (the SDK's default): TRADES,
                # or MIDPOINT for forex, which has no TRADES bars at IB.
                _, _, what = sub.kind.partition(".")
                what = what or ("MIDPOINT" if sub.contract.sec_type == "CASH" else "TRADES")
                # (the plain default is hub.market_data.default_bars; ib/ may not import hub/)
                ib.client.reqRealTimeBars(req_id, contract, 5, what, False, [])
            elif sub.kind.startswith("tbt."):
                # one tick-by-tick stream per instrument and type for every reader (hub/tbt.py)
                ib.client.reqTickByTickData(req_id, contract, sub.kind[4:], 0, False)
            elif sub.kind.startswith("hist."):
                # keepUpToDate bars, shared (hub/hist_updates.py): the shortest history
                size, _, what = sub.kind[5:].rpartition(".")
                ib.client.reqHistoricalData(req_id, contract, "", hist_duration(size), size,
                                            what, 0, 2, True, [])
            elif sub.kind == "depth":
                # one SMART book per instrument for every reader (hub/depth.py)
                sub.stream.reset()
                ib.client.reqMktDepth(req_id, contract, self.settings.depth_rows, True, [])
            else:  # a plain line, or one with a generic tick list ("ticks+233,236")
                generic = sub.kind[6:] if sub.kind.startswith("ticks+") else ""
                ib.client.reqMktData(req_id, contract, generic, False, False, [])
        except ConnectionError:
            log.debug("could not request %s now: not connected", sub.topic)
            return
        self._sent.add(req_id)

    def _request_all(self) -> int:
        """(Re)request every active line with fresh ids; returns how many."""
        ib = self._ib
        if ib is None or not ib.client.isReady():
            return 0
        subs = list(self._active)
        for sub in subs:
            self._request(sub)
        return len(subs)

    def _drop_lines(self) -> None:
        for sub in self._lines.values():
            sub.req_id = None
        self._lines.clear()
        self._sinks.clear()
        self._sent.clear()

    # ------------------------------------------------------------------ queries

    def require(self) -> IB:
        ib = self._ib
        if ib is None or not ib.client.isReady():
            raise UpstreamDown(f"upstream is {self.state}; try again when it is CONNECTED")
        return ib

    async def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        """Every contract matching ``spec`` (empty if none): :mod:`ibhub.ib.queries`."""
        return await self.queries.contract_details(spec)

    async def historical_bars(
        self,
        contract: ContractInfo,
        *,
        duration: str,
        bar_size: str,
        what_to_show: str,
        use_rth: bool,
        end: str,
    ) -> list[BarData]:
        """Historical bars of ``contract``: :mod:`ibhub.ib.queries`."""
        return await self.queries.historical_bars(
            contract, duration=duration, bar_size=bar_size, what_to_show=what_to_show,
            use_rth=use_rth, end=end,
        )

    async def historical_ticks(self, contract: ContractInfo, **kw: Any) -> list[HistoricalTick]:
        """Historical ticks of ``contract``: :mod:`ibhub.ib.queries`."""
        return await self.queries.historical_ticks(contract, **kw)

    # ------------------------------------------------------------------ errors

    def _on_error(self, req_id: int, code: int, message: str, _contract: Any) -> None:
        why = explain(code)
        log.log(
            logging.INFO if _is_warning(code) else logging.WARNING,
            "IB %s (reqId %s): %s%s", code, req_id, message, f" [{why}]" if why else "",
        )
        sub = self._lines.get(req_id)
        if sub is not None:
            self._listener.on_line_error(sub, code, message)
            return
        if req_id > 0:
            return  # a contract-details / historical request: raised to its caller
        abort = self._connect_abort
        if code in _CONNECT_FATAL and abort is not None and not abort.done():
            abort.set_result(f"IB error {code}: {message}")
        self._listener.on_ib_message(code, message)
        if code == CONNECTIVITY_LOST and self.state == UpstreamState.CONNECTED:
            self._set_state(UpstreamState.RECONNECTING, code, message)
        elif code == RESTORED_DATA_LOST:
            if self._ib is not None and self._ib.client.isReady():
                self._set_state(UpstreamState.CONNECTED, code, message)
                count = self._request_all()
                self._listener.on_resubscribed(count, code)
        elif code == RESTORED_DATA_KEPT:
            if self._ib is not None and self._ib.client.isReady():
                self._set_state(UpstreamState.CONNECTED, code, message)
                # Lines kept their data; only those opened during the outage are new.
                for sub in [x for x in self._active if x.req_id is None]:
                    self._request(sub)



_UNIT = {"sec": 1, "min": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
         "month": 30 * 86400}


def hist_duration(bar_size: str) -> str:
    """The shortest duration IB accepts that covers a couple of bars of ``bar_size``
    (a shared keepUpToDate line only needs the stream of updates)."""
    n, unit = bar_size.split()
    seconds = int(n) * _UNIT[unit.rstrip("s")]
    if seconds < 86400:
        return f"{max(2 * seconds, 60)} S"
    return {86400: "5 D", 7 * 86400: "3 W"}.get(seconds, "3 M")


class _AttemptFailed(Exception):
    """A connect attempt ended early (326, socket closed, ...)."""


def _log_failed_send(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("paced upstream send failed: %s", fut.exception())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out (no handshake or startup sync)"
    text = str(exc) or type(exc).__name__
    return text
