"""Connect, handshake and contract details with unmodified ib_insync and raw sockets."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import pytest

from ibhub.sim import SimConfig, SimGateway
from tests.helpers import wait_until
from tests.ibclient import IB, ContFuture, Contract, Forex, Future, Option, Stock
from tests.sim.core_support import RawClient, connected


async def test_connect_is_fast_and_complete(sim: SimGateway) -> None:
    ib = IB()
    errors: list[int] = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
    t0 = time.perf_counter()
    try:
        await ib.connectAsync("127.0.0.1", sim.port, clientId=5, timeout=3)
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.5, f"connect took {elapsed:.3f} s"
        assert ib.isConnected()
        assert ib.managedAccounts() == ["DU1234567"]
        assert ib.client.serverVersion() == 176
        assert sim.connected_client_ids() == [5]
        await wait_until(lambda: {2104, 2106, 2158} <= set(errors), 2, "farm status 210x")
        now = await ib.reqCurrentTimeAsync()
        assert abs(now.timestamp() - time.time()) < 5
        assert ib.client.getReqId() >= 1
    finally:
        ib.disconnect()
    await wait_until(lambda: sim.connected_client_ids() == [], 2, "disconnect seen by sim")


async def test_several_clients_and_multiple_accounts() -> None:
    cfg = SimConfig(seed=3, accounts=("DU1111111", "DU2222222"))
    async with SimGateway(cfg) as sim:
        async with connected(sim, 1) as a, connected(sim, 2) as b:
            assert sorted(a.managedAccounts()) == ["DU1111111", "DU2222222"]
            assert b.isConnected()
            assert sim.connected_client_ids() == [1, 2]


async def test_qualify_every_kind(sim: SimGateway) -> None:
    async with connected(sim) as ib:
        aapl = Stock("AAPL", "SMART", "USD")
        es = ContFuture("ES", exchange="CME")
        eur = Forex("EURUSD")
        spy = Stock("SPY", "SMART", "USD")
        got = await ib.qualifyContractsAsync(aapl, es, eur, spy)
        assert len(got) == 4
        assert aapl.conId == 265598 and aapl.primaryExchange == "NASDAQ"
        assert es.conId and es.multiplier == "50" and es.localSymbol.startswith("ES")
        assert eur.conId == 12087792 and eur.localSymbol == "EUR.USD"
        assert spy.conId == 756733
        months = await ib.reqContractDetailsAsync(Future("ES", exchange="CME"))
        assert len(months) == 4 and es.conId in {d.contract.conId for d in months}
        chain = await ib.reqContractDetailsAsync(Option("SPY", "", 590, "C", "SMART"))
        front = min(d.contract.lastTradeDateOrContractMonth for d in chain)
        assert len(chain) == 3  # one per monthly expiry
        opt = Option("SPY", front, 590, "C", "SMART")
        details = await ib.reqContractDetailsAsync(opt)
        assert len(details) == 1
        cd = details[0]
        assert cd.contract.right == "C" and cd.contract.multiplier == "100"
        assert cd.underConId == 756733
        sessions = cd.tradingSessions()
        assert sessions and sessions[0].start < sessions[0].end
        puts = await ib.reqContractDetailsAsync(Option("SPY", right="P", exchange="SMART"))
        assert len(puts) == 3 * 17  # the whole chain: 3 expiries x 17 strikes
        cont = ContFuture("NQ", "CME")
        await ib.qualifyContractsAsync(cont)
        nq = Future("NQ", exchange="CME")
        await ib.qualifyContractsAsync(nq)
        assert cont.secType == "CONTFUT" and cont.conId == nq.conId
        isld = Stock("AAPL", "ISLAND", "USD")
        await ib.qualifyContractsAsync(isld)
        assert isld.conId == 265598 and isld.exchange == "ISLAND"


async def test_contract_details_fields(sim: SimGateway) -> None:
    async with connected(sim) as ib:
        [cd] = await ib.reqContractDetailsAsync(Stock("MSFT", "SMART", "USD"))
        assert cd.longName == "MICROSOFT CORP"
        assert cd.minTick == 0.01
        assert cd.timeZoneId == "US/Eastern"
        assert cd.stockType == "COMMON"
        assert "LMT" in cd.orderTypes.split(",")
        assert cd.contract.conId == 272093
        [jpy] = await ib.reqContractDetailsAsync(Forex("USDJPY"))
        assert jpy.minTick == 0.005 and jpy.contract.secType == "CASH"


async def test_unknown_contract_gets_error_200(sim: SimGateway) -> None:
    async with connected(sim) as ib:
        errors: list[tuple[int, int]] = []
        ib.errorEvent += lambda req_id, code, msg, contract: errors.append((req_id, code))
        unknown = Stock("NOSUCH", "SMART", "USD")
        result = await asyncio.wait_for(ib.qualifyContractsAsync(unknown), 2)
        assert [c for c in result if c is not None] == []  # ib_async: [None], ib_insync: []
        assert any(code == 200 for _, code in errors)
        assert await asyncio.wait_for(ib.reqContractDetailsAsync(Contract(conId=1)), 2) == []


async def test_duplicate_client_id_gets_326(sim: SimGateway) -> None:
    async with connected(sim, client_id=9):
        second = IB()
        codes: list[int] = []
        second.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        with pytest.raises((TimeoutError, ConnectionError, asyncio.TimeoutError)):
            await second.connectAsync("127.0.0.1", sim.port, clientId=9, timeout=1)
        second.disconnect()
        assert 326 in codes
        assert sim.connected_client_ids() == [9]


async def test_version_range_without_176_is_refused(sim: SimGateway) -> None:
    raw = await RawClient.open(sim.port, client_id=None, version=b"v100..150")
    assert await raw.closed_by_server()
    await raw.close()
    raw = await RawClient.open(sim.port, client_id=None, version=b"v177..200")
    assert await raw.closed_by_server()
    await raw.close()
    raw = await RawClient.open(sim.port, client_id=None, version=b"v100..226 +PACEAPI")
    hello = await raw.recv()
    assert hello[0] == "176" and len(hello) == 2
    await raw.close()


async def test_start_api_answers_exact_fields(sim: SimGateway) -> None:
    raw = await RawClient.open(sim.port, client_id=11)
    got = [await raw.recv() for _ in range(5)]
    assert [m[0] for m in got[:2]] == ["9", "15"]
    assert len(got[0]) == 3 and len(got[1]) == 3 and got[1][2] == "DU1234567"
    assert [(m[0], m[2], m[3], len(m)) for m in got[2:]] == [
        ("4", "-1", "2104", 6), ("4", "-1", "2106", 6), ("4", "-1", "2158", 6)]
    raw.send(8, 1, 1)  # reqIds
    msg = await raw.recv()
    assert msg[0] == "9" and int(msg[2]) >= int(got[0][2])
    await raw.close()
    raw = await RawClient.open(sim.port, client_id=12)
    next_id, accounts = await raw.startup()
    assert next_id >= 1 and accounts == ["DU1234567"]
    await raw.close()


async def test_max_clients_refused() -> None:
    async with SimGateway(SimConfig(seed=1, max_clients=2)) as sim:
        async with connected(sim, 1), connected(sim, 2):
            # the third is told why and its connect fails at once, not at its time-out
            third = IB()
            errors: list[tuple[int, str]] = []
            third.errorEvent += lambda _rid, code, msg, _c: errors.append((code, msg))
            started = time.monotonic()
            with pytest.raises(ConnectionError):
                await third.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=3)
            assert time.monotonic() - started < 1.5
            assert errors and errors[0][0] == 502 and "max 2" in errors[0][1], errors
            third.disconnect()
            assert sim.connected_client_ids() == [1, 2]


async def test_runs_under_uvloop() -> None:
    """The simulator on a uvloop loop (as `ibhub sim` runs it), client on this loop."""
    uvloop = pytest.importorskip("uvloop")
    ports: queue.Queue[int] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with SimGateway(SimConfig(seed=1, tick_rate=50)) as sim:
            ports.put(sim.port)
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    thread = threading.Thread(target=uvloop.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        port = await asyncio.get_running_loop().run_in_executor(None, ports.get, True, 5)
        ib = IB()
        try:
            await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=3)
            c = Stock("AAPL", "SMART", "USD")
            await ib.qualifyContractsAsync(c)
            ticker = ib.reqMktData(c)
            await wait_until(lambda: ticker.bid > 0, 2, "a quote from a uvloop simulator")
        finally:
            ib.disconnect()
    finally:
        stop.set()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
