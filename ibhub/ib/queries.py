"""One-off queries over the Gateway session: contract details, historical bars.

Each waits its turn in the hub's one upstream budget (:mod:`ibhub.tws.pacing`, bounded:
a full queue refuses with ``PacerBusy``) and answers in the hub's types
(:mod:`ibhub.ib.convert`). A session that ends before the answer, or is not up, is
:class:`UpstreamDown`; an IB refusal is :class:`UpstreamRequestError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ibhub.config import HubSettings
from ibhub.ib.convert import bar_to_bardata, details_to_info, to_ib_contract
from ibhub.ib.lib import IB, RequestError
from ibhub.protocol import BarData, ContractInfo, ContractSpec, HistoricalTick
from ibhub.tws.pacing import HistoricalRules, Pacer, Priority

NAN = float("nan")


class UpstreamDown(Exception):
    """The Gateway session is not connected."""


class UpstreamRequestError(Exception):
    """IB refused a request; ``code`` is IB's error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"IB error {code}: {message}")
        self.code = code
        self.message = message


class Queries:
    """Contract details and historical bars for a session.

    ``require()`` returns the session's ready library object or raises
    :class:`UpstreamDown`; ``pacer()`` the upstream budget (None: unpaced).
    """

    def __init__(
        self,
        settings: HubSettings,
        require: Callable[[], IB],
        pacer: Callable[[], Pacer | None],
    ) -> None:
        self.settings = settings
        self._require = require
        self._pacer = pacer
        # IB forbids an identical historical request within 15 s (the pacer would hold
        # the second one that long): within that window the hub answers it with the
        # first one's answer, which is what the Gateway would have sent, and a request
        # identical to one in flight waits for that one instead of queueing its own.
        self._identical_window = HistoricalRules().identical_interval
        self._answers: dict[Any, tuple[float, Any]] = {}
        self._in_flight: dict[Any, asyncio.Future[Any]] = {}

    async def _historical(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """``fetch()``'s answer, shared by identical requests in flight and reused for
        IB's identical-request window (errors are never reused: a retry asks again)."""
        now = time.monotonic()
        found = self._answers.get(key)
        if found is not None and now - found[0] < self._identical_window:
            return found[1]
        pending = self._in_flight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled
                return await self._historical(key, fetch)  # the first asker's was: ask
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            answer = await fetch()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(answer)
            if len(self._answers) > 256:  # forget what can no longer be reused
                horizon = now - self._identical_window
                self._answers = {k: v for k, v in self._answers.items() if v[0] > horizon}
            self._answers[key] = (time.monotonic(), answer)
            return answer
        finally:
            del self._in_flight[key]

    async def _query(
        self,
        start: Callable[[], Awaitable[Any]],
        *,
        historical_key: Any = None,
        historical_group: Any = None,
        label: str = "",
    ) -> Any:
        """``start()`` in the upstream budget; the library's errors in the hub's terms
        (:class:`UpstreamRequestError`, :class:`UpstreamDown`)."""
        pacer = self._pacer()
        try:
            if pacer is None:
                return await start()
            return await pacer.call(
                Priority.QUERY,
                start,
                historical_key=historical_key,
                historical_group=historical_group,
                label=label,
                bounded=True,  # a script's query: refused (PacerBusy) when the queue is full
            )
        except RequestError as exc:
            raise UpstreamRequestError(exc.code, exc.message) from None
        except ConnectionError as exc:
            raise UpstreamDown(_session_ended(exc)) from None

    async def run(self, start: Callable[[], Awaitable[Any]], *, label: str) -> Any:
        """A one-off query (``start()`` sends it and awaits the library's answer) in the
        upstream budget, with the session's time-out and errors (for
        :mod:`ibhub.ib.option_queries`)."""
        async with asyncio.timeout(self.settings.request_timeout):
            return await self._query(start, label=label)

    async def contract_details(self, spec: ContractSpec) -> list[ContractInfo]:
        """Every contract matching ``spec`` (empty if none)."""
        ib = self._require()
        try:
            # asyncio.timeout rather than wait_for: on 3.11 wait_for can swallow a
            # cancellation that coincides with the reply (hub shutdown would then wait).
            async with asyncio.timeout(self.settings.request_timeout):
                details = await self._query(
                    lambda: ib.reqContractDetailsAsync(to_ib_contract(spec)),
                    label=f"contract details {spec.symbol or spec.con_id}",
                )
        except UpstreamRequestError as exc:
            if exc.code == 200:  # "No security definition has been found"
                return []
            raise
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
                to_ib_contract(contract),
                end,
                duration,
                bar_size,
                what_to_show,
                use_rth,
                formatDate=2,
                timeout=timeout,
            )

        key = (contract.con_id, end, duration, bar_size, what_to_show, use_rth)

        async def fetch() -> list[BarData]:
            # IB's historical pacing (identical request within 15 s, 5 per contract in
            # 2 s, 60 in 10 min) is honoured by waiting in the pacer, never by failing;
            # an identical request within 15 s is answered by _historical.
            bars = await self._query(
                request,
                historical_key=key,
                historical_group=(contract.con_id, contract.exchange, what_to_show),
                label=f"historical {contract.symbol} {duration} {bar_size}",
            )
            if not bars and time.monotonic() - started >= timeout * 0.99:
                raise TimeoutError(f"no historical data within {timeout:g}s")
            return [bar_to_bardata(b) for b in bars]

        answer: list[BarData] = await self._historical(key, fetch)
        return answer

    async def historical_ticks(self, contract: ContractInfo, *, what_to_show: str, count: int,
                               start: str, end: str, use_rth: bool) -> list[HistoricalTick]:
        """reqHistoricalTicks through the pacer (IB's historical pacing applies)."""
        ib = self._require()
        timeout = self.settings.request_timeout

        def request() -> Awaitable[list[Any]]:
            return asyncio.wait_for(ib.reqHistoricalTicksAsync(
                to_ib_contract(contract), start, end, count, what_to_show, use_rth), timeout)

        key = (contract.con_id, "ticks", start, end, count, what_to_show, use_rth)

        async def fetch() -> list[HistoricalTick]:
            ticks = await self._query(
                request,
                historical_key=key,
                historical_group=(contract.con_id, contract.exchange, what_to_show),
                label=f"historical ticks {contract.symbol} {what_to_show}",
            )
            return [_tick(t) for t in ticks]

        answer: list[HistoricalTick] = await self._historical(key, fetch)
        return answer


def _tick(t: Any) -> HistoricalTick:
    """ib_insync's HistoricalTick / HistoricalTickBidAsk / HistoricalTickLast."""
    when = int(t.time.timestamp())
    if hasattr(t, "priceBid"):
        return HistoricalTick(when, NAN, NAN, t.priceBid, t.priceAsk, t.sizeBid, t.sizeAsk)
    exchange = getattr(t, "exchange", "")
    return HistoricalTick(when, t.price, t.size, NAN, NAN, NAN, NAN, exchange,
                          getattr(t, "specialConditions", ""))


def _session_ended(exc: BaseException) -> str:
    """The error for a request whose Gateway session ended before its answer came."""
    return (f"the Gateway session ended before the answer came ({exc or 'not connected'}); "
            "the request was not answered: send it again once upstream is CONNECTED")
