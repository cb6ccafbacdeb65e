"""The one Gateway/TWS session, over the IB client library (:mod:`ibhub.iblib`).

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
    The hub hands in :class:`~ibhub.subscriptions.Subscription` objects. Every active
    one is (re)requested after every new session and after 1101 (data lost), with a
    fresh request id; 1102 (data kept) requests nothing.

Tick path (issue 7)
    We do not use ib_insync's ``Ticker`` machinery (``pendingTickersEvent`` /
    ``ticker.ticks``): it allocates a ``TickData`` per tick, deduplicates unchanged
    bid/ask ticks (so not every upstream message would become an event) and emits
    per-packet events we don't need. Instead the decoder's handler table entries
    for tickPrice (1), tickSize (2) and realtimeBar (50) are replaced with small
    functions that parse the fields and call the subscription's stream directly:
    one upstream tick message -> one dict lookup, three int/float conversions, one
    published event. Market data is requested with ``client.reqMktData`` on request
    ids we own, so ib_insync keeps no ticker state for them. Once the session is
    ready we also read the socket ourselves (see ``_on_socket_data``): ticks are
    framed and parsed straight from bytes; everything else still goes through
    ib_insync's decoder, so orders, account data and requests behave as usual.

Errors
    Every IB error is logged with its code (and ``ibhub.errors.explain`` when
    available). Errors for a market-data request id go to the listener's
    ``on_line_error`` (the hub routes them to the subscribing leases); errors with
    no request (reqId -1) go to ``on_ib_message`` (hub.status). Errors for contract
    details / historical requests are raised to the awaiting caller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from ibhub.config import HubSettings
from ibhub.iblib import IB, Contract, RequestError, new_ib
from ibhub.pacing import Pacer, Priority
from ibhub.protocol import BarData, ContractInfo, ContractSpec, UpstreamState
from ibhub.subscriptions import Subscription
from ibhub.tws.codec import UnsafeField, holds_nul

log = logging.getLogger(__name__)

# IB system codes (reqId -1).
CONNECTIVITY_LOST = 1100
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
CLIENT_ID_IN_USE = 326
STABLE_SESSION = 10.0  # seconds; a session ending sooner counts as a flap (backs off)
# Errors during connect that mean "this attempt is over".
_CONNECT_FATAL = frozenset({CLIENT_ID_IN_USE, 502, 503, 504, 507})


class UpstreamDown(Exception):
    """The Gateway session is not connected."""


class UpstreamRequestError(Exception):
    """IB refused a request; ``code`` is IB's error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"IB error {code}: {message}")
        self.code = code
        self.message = message


class UpstreamListener(Protocol):
    def on_state(self, state: str, code: int, message: str) -> None: ...

    def on_ib_message(self, code: int, message: str) -> None: ...

    def on_line_error(self, sub: Subscription, code: int, message: str) -> None: ...

    def on_resubscribed(self, count: int, code: int) -> None: ...

    def on_connect_failed(self, attempt: int, reason: str, retry_in: float | None) -> None: ...


def explain(code: int) -> str:
    """What ``code`` means and what to do, from :mod:`ibhub.errors` ("" if unavailable)."""
    try:
        from ibhub.errors import explain as _explain
    except ImportError:  # pragma: no cover - the module ships with ibhub
        return ""
    exp = _explain(code)
    return f"{exp.meaning} {exp.action}".strip()


def _is_warning(code: int) -> bool:
    try:
        from ibhub.errors import is_warning
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


# ---------------------------------------------------------------------------- conversions


def spec_to_contract(spec: ContractSpec) -> Contract:
    return Contract(
        conId=spec.con_id,
        symbol=spec.symbol,
        secType=spec.sec_type,
        lastTradeDateOrContractMonth=spec.expiry,
        strike=spec.strike,
        right=spec.right,
        multiplier=spec.multiplier,
        exchange=spec.exchange,
        primaryExchange=spec.primary_exchange,
        currency=spec.currency,
        localSymbol=spec.local_symbol,
        tradingClass=spec.trading_class,
    )


def details_to_info(details: Any, requested_exchange: str) -> ContractInfo:
    """ib_insync ``ContractDetails`` -> :class:`ContractInfo` (keeps SMART if asked for)."""
    c = details.contract
    expiry = (c.lastTradeDateOrContractMonth or "").split(" ")[0]
    exchange = requested_exchange if requested_exchange == "SMART" else c.exchange
    return ContractInfo(
        con_id=int(c.conId),
        symbol=c.symbol,
        sec_type=c.secType,
        exchange=exchange or c.exchange,
        primary_exchange=c.primaryExchange or "",
        currency=c.currency,
        local_symbol=c.localSymbol or "",
        trading_class=c.tradingClass or "",
        expiry=expiry,
        strike=float(c.strike or 0.0),
        right=c.right or "",
        multiplier=str(c.multiplier or ""),
        min_tick=float(details.minTick or 0.0),
        long_name=details.longName or "",
        time_zone=details.timeZoneId or "",
        trading_hours=details.tradingHours or "",
        liquid_hours=details.liquidHours or "",
    )


def info_to_contract(info: ContractInfo) -> Contract:
    return Contract(
        conId=info.con_id,
        symbol=info.symbol,
        secType=info.sec_type,
        lastTradeDateOrContractMonth=info.expiry,
        strike=info.strike,
        right=info.right,
        multiplier=info.multiplier,
        exchange=info.exchange,
        primaryExchange=info.primary_exchange,
        currency=info.currency,
        localSymbol=info.local_symbol,
        tradingClass=info.trading_class,
    )


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


def _epoch(value: Any) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp())
    return int(value)


def bar_to_bardata(bar: Any) -> BarData:
    return BarData(
        time=_epoch(bar.date),
        open=float(bar.open),
        high=float(bar.high),
        low=float(bar.low),
        close=float(bar.close),
        volume=float(bar.volume),
        wap=float(bar.average),
        count=int(bar.barCount),
    )


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
        # Called after every socket read's ticks have been handed to their streams:
        # the fan-out publishes them, one message per instrument (ibhub.fanout).
        self._flush = flush
        # The hub's one outgoing budget (ibhub.pacing): line requests and cancels,
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
        # Live req id -> stream, keyed by the id's decimal bytes as they arrive on the
        # wire, so the hot path looks it up without decoding or parsing it.
        self._sinks: dict[bytes, Any] = {}
        self._lines: dict[int, Subscription] = {}  # live req id -> subscription
        self._sent: set[int] = set()  # line req ids actually sent (only those get a cancel)
        self._fast: dict[bytes, Callable[[list[bytes]], None]] = {}
        # Raw taps (see add_tap): message id bytes -> tap, consulted before ib_insync.
        self._taps: dict[bytes, Callable[[list[bytes]], bool]] = {}
        self._slow_reader: Callable[[bytes], None] = _no_reader
        self._bad_messages = 0
        self._reads_paused = False
        # Tick/bar messages read by our reader (metrics); counted per socket read, not
        # per tick: every message is counted anyway, the rare others are subtracted.
        self.ticks_in = 0
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
        self._install(new_ib())  # raises LibraryMismatch if the library moved an internal
        self._task = asyncio.create_task(self._supervise(), name="ibhub-upstream")

    def _install(self, ib: IB) -> None:
        """Hook our tick handlers, socket reader and event handlers into ``ib``."""
        ib.RaiseRequestErrors = True
        self._ib = ib
        guard_fields(ib.client)
        self._lost = asyncio.Event()
        handlers = ib.client.decoder.handlers
        self._fast = {
            b"1": self._make_tick_price_handler(),
            b"2": self._make_tick_size_handler(),
            b"50": self._make_bar_handler(),
        }
        # The same handlers in ib_insync's table (its reader hands over str fields),
        # so market data never reaches ib_insync's Ticker code whichever reader runs.
        for msg_id in (1, 2, 50):
            handlers[msg_id] = _from_str(self._fast[str(msg_id).encode()], self._flush)
        self._unique_req_ids(ib)
        conn = ib.client.conn
        self._slow_reader = ib.client._onSocketHasData
        conn.hasData -= self._slow_reader
        conn.hasData += self._on_socket_data
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
            ib.client.conn.hasData -= self._on_socket_data
            ib.client.conn.hasData += self._slow_reader
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
                log.warning(
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
                if kind == "bars":
                    ib.client.cancelRealTimeBars(req_id)
                else:
                    ib.client.cancelMktData(req_id)
            except ConnectionError:
                pass  # the session is going away; its requests die with it

    def _paced(self, priority: Priority, send: Callable[[], None], label: str) -> None:
        """Send now (no pacer) or when the budget allows; failures are only logged."""
        if self.pacer is None:
            send()
            return
        self.pacer.submit(priority, send, label=label).add_done_callback(_log_failed_send)

    def add_tap(self, msg_id: int, tap: Callable[[list[bytes]], bool]) -> None:
        """Show raw upstream messages of ``msg_id`` to ``tap`` before ib_insync sees them.

        For the TWS front door, which passes some requests through with remapped ids
        (contract details, historical data): ``tap(fields)`` gets the message's bytes
        fields (the last one is the empty tail after the final NUL) and returns True
        if it consumed the message (a reply to one of its own request ids); otherwise
        the message goes to ib_insync as before. Only after the session is ready, and
        never for ticks/bars (those have their own fast path). A tap must not raise.
        """
        self._taps[str(msg_id).encode()] = tap

    def remove_tap(self, msg_id: int) -> None:
        self._taps.pop(str(msg_id).encode(), None)

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
        contract = info_to_contract(sub.contract)
        try:
            if sub.kind == "bars":
                # IB has no TRADES bars for forex; MIDPOINT is what it offers there.
                what = "MIDPOINT" if sub.contract.sec_type == "CASH" else "TRADES"
                ib.client.reqRealTimeBars(req_id, contract, 5, what, False, [])
            else:
                ib.client.reqMktData(req_id, contract, "", False, False, [])
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

    # ------------------------------------------------------------------ hot path

    def _on_socket_data(self, data: bytes) -> None:
        """Frame and dispatch one socket read once the API session is ready.

        ib_insync's reader re-slices its whole buffer for every message it takes
        (``data = data[end:]``), which is quadratic in the size of a read: a hub
        that falls behind gets reads of hundreds of messages and falls further
        behind. This reader walks the buffer with an offset and keeps only the
        tail. Ticks and bars go straight to our handlers; every other message goes
        through ib_insync's decoder exactly as before. Until the session is ready
        (handshake, nextValidId/managedAccounts) ib_insync's own reader runs.
        """
        ib = self._ib
        assert ib is not None
        client = ib.client
        if not client._apiReady:
            self._slow_reader(data)
            return
        arrived = client._tcpDataArrived
        if arrived is not None:
            arrived()
        buf = client._data + data if client._data else data
        client._numBytesRecv += len(data)
        n = len(buf)
        pos = 0
        count = 0
        other = 0
        fast = self._fast.get
        tapped = self._taps.get
        interpret = client.decoder.interpret
        unpack = _LENGTH.unpack_from
        while n - pos > 4:
            if count == MAX_MESSAGES_PER_TURN:
                break  # the rest waits for the next loop iteration (see _yield_reads)
            end = pos + 4 + unpack(buf, pos)[0]
            if end > n:
                break
            body = buf[pos + 4:end]
            pos = end
            count += 1
            # Ticks stay bytes (int() and float() take bytes): no decode per tick.
            parts = body.split(b"\0")
            handler = fast(parts[0])
            if handler is None:
                other += 1
                tap = tapped(parts[0])
                if tap is not None and tap(parts):
                    continue
                fields = body.decode(errors="backslashreplace").split("\0")
                fields.pop()
                interpret(fields)
                continue
            try:
                handler(parts)
            except (ValueError, IndexError):
                # A malformed tick from the Gateway must not stop the reader.
                self._bad_messages += 1
                if self._bad_messages <= 10:
                    log.warning("dropped malformed message %r", parts[:12])
        client._data = buf[pos:]
        client._numMsgRecv += count
        self.ticks_in += count - other
        self._flush()
        processed = client._tcpDataProcessed
        if processed is not None:
            processed()
        backlog = count == MAX_MESSAGES_PER_TURN
        if backlog or len(data) >= YIELD_READ_BYTES:
            self._yield_reads(client.conn.transport, backlog)

    def _yield_reads(self, transport: Any, backlog: bool) -> None:
        """We are behind the Gateway: give the loop a turn before reading more.

        uvloop (libuv) reads a readable socket up to 32 times in one loop iteration,
        each read up to 256 KB (~6,000 ticks): a hub that falls behind then parses
        ticks for hundreds of ms (seconds of wall time on a shared CPU) before its
        ROUTER, heartbeats and timers get a turn, and leases expire. So at most
        ``MAX_MESSAGES_PER_TURN`` messages are handled per turn (the rest stays
        buffered, ``backlog``), and after a large read or with a backlog reading
        pauses until the next loop iteration. Measured with bench/fanout.py at 50k
        ticks/s to 8 subscriber processes on 2 cores: status round trips of up to
        5 s and expired SDK leases before, see the commit for after.
        """
        if transport is None or self._reads_paused:
            return
        self._reads_paused = True
        transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._resume_reads, transport, backlog)

    def _resume_reads(self, transport: Any, backlog: bool) -> None:
        self._reads_paused = False
        if transport.is_closing() or self._ib is None:
            return
        transport.resume_reading()
        if backlog:
            self._on_socket_data(b"")

    def _make_tick_price_handler(self) -> Callable[[list[bytes]], None]:
        get = self._sinks.get

        def tick_price(fields: list[bytes]) -> None:
            # [1, version, reqId, tickType, price, size, attrMask]
            sink = get(fields[2])
            if sink is not None and fields[4]:
                sink.price(int(fields[3]), float(fields[4]), float(fields[5] or 0.0))

        return tick_price

    def _make_tick_size_handler(self) -> Callable[[list[bytes]], None]:
        get = self._sinks.get

        def tick_size(fields: list[bytes]) -> None:
            # [2, version, reqId, tickType, size]
            sink = get(fields[2])
            if sink is not None:
                sink.size(int(fields[3]), float(fields[4] or 0.0))

        return tick_size

    def _make_bar_handler(self) -> Callable[[list[bytes]], None]:
        get = self._sinks.get

        def realtime_bar(fields: list[bytes]) -> None:
            # [50, version, reqId, time, open, high, low, close, volume, wap, count]
            sink = get(fields[2])
            if sink is not None:
                f = float
                sink.bar(
                    int(fields[3]), f(fields[4]), f(fields[5]), f(fields[6]), f(fields[7]),
                    f(fields[8] or 0.0), f(fields[9] or 0.0), int(fields[10] or 0),
                )

        return realtime_bar

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

    # ------------------------------------------------------------------ requests

    async def _query(
        self,
        start: Callable[[], Awaitable[Any]],
        *,
        historical_key: Any = None,
        historical_group: Any = None,
        label: str = "",
    ) -> Any:
        if self.pacer is None:
            return await start()
        return await self.pacer.call(
            Priority.QUERY,
            start,
            historical_key=historical_key,
            historical_group=historical_group,
            label=label,
            bounded=True,  # a script's query: refused (PacerBusy) when the queue is full
        )

    def _require(self) -> IB:
        ib = self._ib
        if ib is None or not ib.client.isReady():
            raise UpstreamDown(f"upstream is {self.state}; try again when it is CONNECTED")
        return ib

    async def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        """Every contract matching ``spec`` (empty if none)."""
        ib = self._require()
        try:
            # asyncio.timeout rather than wait_for: on 3.11 wait_for can swallow a
            # cancellation that coincides with the reply (hub shutdown would then wait).
            async with asyncio.timeout(self.settings.request_timeout):
                details = await self._query(
                    lambda: ib.reqContractDetailsAsync(spec_to_contract(spec)),
                    label=f"contract details {spec.symbol or spec.con_id}",
                )
        except RequestError as exc:
            if exc.code == 200:  # "No security definition has been found"
                return []
            raise UpstreamRequestError(exc.code, exc.message) from None
        except ConnectionError as exc:
            raise UpstreamDown(_session_ended(exc)) from None
        return [details_to_info(d, spec.exchange) for d in details]

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
        ib = self._require()
        timeout = self.settings.request_timeout
        started = time.monotonic()

        def request() -> Awaitable[list[Any]]:
            nonlocal started
            started = time.monotonic()  # the timeout runs from the send, not the queue
            return ib.reqHistoricalDataAsync(
                info_to_contract(contract),
                end,
                duration,
                bar_size,
                what_to_show,
                use_rth,
                formatDate=2,
                timeout=timeout,
            )

        try:
            # IB's historical pacing (identical request within 15 s, 5 per contract in
            # 2 s, 60 in 10 min) is honoured by waiting in the pacer, never by failing.
            bars = await self._query(
                request,
                historical_key=(contract.con_id, end, duration, bar_size, what_to_show, use_rth),
                historical_group=(contract.con_id, contract.exchange, what_to_show),
                label=f"historical {contract.symbol} {duration} {bar_size}",
            )
        except RequestError as exc:
            raise UpstreamRequestError(exc.code, exc.message) from None
        except ConnectionError as exc:
            raise UpstreamDown(_session_ended(exc)) from None
        if not bars and time.monotonic() - started >= timeout * 0.99:
            raise TimeoutError(f"no historical data within {timeout:g}s")
        return [bar_to_bardata(b) for b in bars]


_LENGTH = struct.Struct(">I")
YIELD_READ_BYTES = 64 * 1024  # a read this large means the hub is behind the Gateway
MAX_MESSAGES_PER_TURN = 1000  # ~4 ms of parsing and publishing per loop turn


def _from_str(
    handler: Callable[[list[bytes]], None], flush: Callable[[], None]
) -> Callable[[list[str]], None]:
    """A fast handler for ib_insync's own reader (before the session is ready): str fields
    and no end-of-read hook there, so each message is published at once."""

    def from_str(fields: list[str]) -> None:
        handler([f.encode() for f in fields])
        flush()

    return from_str


def _no_reader(data: bytes) -> None:  # pragma: no cover - replaced in start()
    raise RuntimeError("upstream not started")


class _AttemptFailed(Exception):
    """A connect attempt ended early (326, socket closed, ...)."""


def _log_failed_send(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("paced upstream send failed: %s", fut.exception())


def _session_ended(exc: BaseException) -> str:
    """The error for a request whose Gateway session ended before its answer came."""
    return (f"the Gateway session ended before the answer came ({exc or 'not connected'}); "
            "the request was not answered: send it again once upstream is CONNECTED")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out (no handshake or startup sync)"
    text = str(exc) or type(exc).__name__
    return text
