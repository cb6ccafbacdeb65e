"""The one door to the IB client library (ibhub.ib.lib): which library, its private
internals checked at start-up, and the hub answering the same with either library.

Runs with whichever library this Python has (ib_insync on 3.11, ib_async on 3.12+).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from ibhub.hub.server import HubServer
from ibhub.ib import lib as iblib
from ibhub.ib.reader import TickReader
from ibhub.ib.trade_cache import TradeCache
from ibhub.protocol import ContractSpec, Error, ErrorCode, GetHistoricalBars, HistoricalBarsReply
from ibhub.sim import SimGateway
from tests.e2e.conftest import HubFactory
from tests.sim.core_support import connected


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_the_library_is_the_one_for_this_python() -> None:
    """The pyproject markers' rule: ib_insync on 3.11, ib_async on 3.12 and newer."""
    if os.environ.get(iblib.ENV_VAR):
        pytest.skip(f"{iblib.ENV_VAR} forces the library")
    first, second = iblib.preferred()
    expected = first if _installed(first) else second
    assert iblib.NAME == expected
    assert iblib.preferred((3, 11)) == ("ib_insync", "ib_async")
    assert iblib.preferred((3, 12))[0] == iblib.preferred((3, 14))[0] == "ib_async"
    assert iblib.describe() == f"{iblib.NAME} {iblib.VERSION}"


def _import_iblib(env_value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, iblib.ENV_VAR: env_value}
    return subprocess.run(
        [sys.executable, "-c", "from ibhub.ib import lib; print(lib.NAME)"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_forcing_a_library() -> None:
    ok = _import_iblib(iblib.NAME)
    assert ok.returncode == 0 and ok.stdout.strip() == iblib.NAME, ok.stderr
    bad = _import_iblib("ibapi")
    assert bad.returncode != 0 and f"{iblib.ENV_VAR}='ibapi'" in bad.stderr
    other = "ib_async" if iblib.NAME == "ib_insync" else "ib_insync"
    if _installed(other):
        return  # both here (a developer's machine): nothing is missing to test
    missing = _import_iblib(other)
    assert missing.returncode != 0
    assert f"no IB client library for {iblib.ENV_VAR}={other}: install {other}" in missing.stderr


def test_this_library_has_every_internal_the_hub_uses() -> None:
    ib = iblib.new_ib()
    assert iblib.missing_internals(ib) == []


class _MovedReader(iblib.IB):
    """A library 'release' that renamed the reader's buffer and changed its caches."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.client._buffer = self.client._data
        del self.client._data
        self.wrapper.fills = []


async def test_a_moved_internal_stops_the_hub_naming_it(
    make_hub: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(iblib, "IB", _MovedReader)
    with pytest.raises(iblib.LibraryMismatch) as err:
        await make_hub(wait_connected=False)
    text = str(err.value)
    assert f"{iblib.NAME} {iblib.VERSION} is not a version ibhub can run on" in text
    assert "ib.client._data is gone" in text
    assert "ib.wrapper.fills is no longer a dict" in text


def test_the_order_cache_checks_its_internals() -> None:
    ib = iblib.new_ib()
    del ib.wrapper._futures  # an instance attribute: the class has none
    with pytest.raises(iblib.LibraryMismatch, match=r"ib\.wrapper\._futures is gone"):
        TradeCache(ib, book=None).install()  # type: ignore[arg-type]
    assert "execDetails" not in vars(ib.wrapper)  # nothing was patched


def test_the_fast_reader_check_covers_what_it_touches() -> None:
    """Every private ``client.`` attribute the reader uses is listed (guards the list)."""
    import inspect
    import re

    src = inspect.getsource(TickReader.on_socket_data) + inspect.getsource(TickReader.install)
    used = set(re.findall(r"client\.(_[A-Za-z]+)", src))
    listed = {p.split(".")[1] for p in iblib.FAST_READER if p.startswith("client._")}
    assert used and used <= listed, used - listed


async def test_refused_historical_request_fails_at_once_not_after_a_timeout(
    sim: SimGateway,
) -> None:
    """321 ("error validating request"): ib_insync fails the request, ib_async calls it
    a warning and leaves it waiting; ibhub's IB fails it with either library."""
    async with connected(sim) as client:
        [contract] = await client.qualifyContractsAsync(iblib.module.Stock("AAPL", "SMART", "USD"))
    ib = iblib.new_ib()
    ib.RaiseRequestErrors = True
    await ib.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=5)
    try:
        started = time.monotonic()
        with pytest.raises(iblib.RequestError) as err:
            await ib.reqHistoricalDataAsync(contract, "", "1 D", "7 parsecs", "TRADES", True,
                                            timeout=30)  # fmt: skip
        assert err.value.code == 321
        assert time.monotonic() - started < 10
        ib.RaiseRequestErrors = False  # then the request ends empty, at once, as in ib_insync
        started = time.monotonic()
        bars = await ib.reqHistoricalDataAsync(contract, "", "1 D", "7 parsecs", "TRADES", True,
                                               timeout=30)  # fmt: skip
        assert list(bars) == [] and time.monotonic() - started < 10
    finally:
        ib.disconnect()


async def test_hub_reports_ibs_refusal_of_a_historical_request_with_either_library(
    make_hub: HubFactory, clients: Any
) -> None:
    hub: HubServer = await make_hub(request_timeout=30.0)
    c = clients(hub.rpc_endpoint)
    started = time.monotonic()
    r = await c.request(
        GetHistoricalBars(id=1, contract=ContractSpec(symbol="AAPL"), duration="1 D",
                          bar_size="7 parsecs"),
        timeout=25.0,
    )  # fmt: skip
    assert isinstance(r, Error), r
    assert (r.code, r.ib_code) == (ErrorCode.IB_ERROR, 321), r
    assert "bar size" in r.message
    assert time.monotonic() - started < 10  # IB's answer, not the 30 s request timeout
    ok = await c.request(GetHistoricalBars(id=2, contract=ContractSpec(symbol="AAPL"),
                                           duration="1 D", bar_size="1 hour"))  # fmt: skip
    assert isinstance(ok, HistoricalBarsReply) and ok.bars


def test_an_order_error_reaches_the_hub_alike_and_sets_no_status_ib_never_sends() -> None:
    """321 about an order: ib_insync marks the trade Cancelled itself, ib_async sets
    ``ValidationError``; either way the status event carries the error code (so the hub
    forwards no synthetic status, ibhub.ib.orders) and the error reaches the hub
    through errorEvent; ibhub's IB never leaves ib_async's ``ValidationError`` behind."""
    lib = iblib.module
    ib = iblib.new_ib()
    w = ib.wrapper
    w.clientId = 1
    order = lib.LimitOrder("BUY", 1, 10.0, orderId=5, clientId=1)
    trade = lib.Trade(lib.Stock("AAPL", "SMART", "USD"), order,
                      lib.OrderStatus(orderId=5, status="Submitted"))  # fmt: skip
    w.trades[(1, 5)] = trade
    errors: list[tuple[int, int]] = []
    statuses: list[tuple[str, int]] = []
    ib.errorEvent += lambda req_id, code, *_: errors.append((req_id, code))
    ib.orderStatusEvent += lambda t: statuses.append((t.orderStatus.status, t.log[-1].errorCode))
    w.error(5, 321, "Error validating request.-'bN' : cause - price out of range", "")
    assert errors == [(5, 321)]
    assert trade.orderStatus.status in ("Submitted", "Cancelled")  # ib_async / ib_insync
    assert all(code == 321 for _, code in statuses), statuses
