"""The broker's messages on the wire, read with a raw TWS socket: exact field counts, the §5.3
order of a fill, the echoed client id, and the connect-time answers with their end markers."""

from __future__ import annotations

from tests.ibclient import LimitOrder, MarketOrder, Stock
from tests.sim.broker_support import gateway, place_order_fields
from tests.sim.core_support import RawClient

ACCOUNT = "DU1234567"


def _is_notice(msg: list[str]) -> bool:
    """Farm-status notices (2104/2106/2158 on reqId -1) that arrive after START_API."""
    return msg[0] == "4" and msg[2] == "-1" and msg[3].startswith("21")


async def _recv(raw: RawClient) -> list[str]:
    while True:
        msg = await raw.recv()
        if not _is_notice(msg):
            return msg


async def _drain_until(raw: RawClient, end: list[str]) -> list[list[str]]:
    """Messages up to and including the one equal to `end` (notices skipped)."""
    out = []
    while True:
        msg = await _recv(raw)
        out.append(msg)
        if msg == end:
            return out


async def test_connect_time_answers_end_with_their_markers() -> None:
    async with gateway() as sim:
        raw = await RawClient.open(sim.port, client_id=7)
        try:
            await raw.recv_until(lambda m: m[0] == "15")
            raw.send(61, 1)
            assert await _drain_until(raw, ["62", "1"]) == [["62", "1"]]
            raw.send(5, 1)
            assert await _drain_until(raw, ["53", "1"]) == [["53", "1"]]
            raw.send(99, 0)
            assert await _drain_until(raw, ["102"]) == [["102"]]
            raw.send(6, 2, 1, ACCOUNT)
            msgs = await _drain_until(raw, ["54", "1", ACCOUNT])
            values = {m[2]: m for m in msgs if m[0] == "6"}
            assert all(len(m) == 6 and m[5] == ACCOUNT for m in values.values())
            assert values["NetLiquidation"][3:5] == ["1000000.00", "USD"]
            assert msgs[-2][0] == "8" and len(msgs[-2]) == 3  # updateAccountTime "HH:MM"
            raw.send(76, 1, 5, ACCOUNT, "", 0)
            msgs = await _drain_until(raw, ["74", "1", "5"])
            assert all(m[0] == "73" and len(m) == 8 and m[2] == "5" for m in msgs[:-1])
            raw.send(7, 3, 6, 0, "", "", "", "", "", "")
            assert await _drain_until(raw, ["55", "1", "6"]) == [["55", "1", "6"]]
            raw.send(15, 1, 1)  # reqAutoOpenOrders: accepted, no reply
            raw.send(62, 1, 8, "All", "NetLiquidation,AccountType,$LEDGER")
            msgs = await _drain_until(raw, ["64", "1", "8"])
            rows = {(m[4], m[6]): m[5] for m in msgs[:-1]}
            assert rows[("NetLiquidation", "USD")] == "1000000.00"
            assert rows[("AccountType", "")] == "INDIVIDUAL"
            assert rows[("CashBalance", "BASE")] == "1000000.00"
        finally:
            await raw.close()


async def test_a_fill_on_the_wire() -> None:
    async with gateway() as sim:
        raw = await RawClient.open(sim.port, client_id=7)
        try:
            next_id = int((await raw.recv_until(lambda m: m[0] == "9"))[2])
            await raw.recv_until(lambda m: m[0] == "15")
            aapl = Stock("AAPL", "SMART", "USD")
            raw.send(*place_order_fields(aapl, MarketOrder("BUY", 100), next_id))
            msgs = [await _recv(raw) for _ in range(6)]
            assert [(m[0], len(m)) for m in msgs] == [
                ("5", 128), ("3", 12), ("11", 31), ("3", 12), ("5", 128), ("59", 8)]
            open1, status1, execd, status2, open2, report = msgs
            assert open1[1] == str(next_id) and open1[24] == "7" and open1[86] == "Submitted"
            assert status1[2] == "Submitted" and status1[9] == "7"
            assert execd[1] == "-1" and execd[2] == str(next_id) and execd[22] == "7"
            assert execd[18] == "BOT" and execd[15].endswith(" UTC")
            assert status2[2:5] == ["Filled", "100.0", "0.0"]
            assert open2[86] == "Filled" and report[2] == execd[14] and report[3] == "1.0"
            # positions, executions and completed orders now report the fill
            raw.send(61, 1)
            msgs = await _drain_until(raw, ["62", "1"])
            assert [(m[0], len(m), m[2], m[-2]) for m in msgs[:-1]] == [
                ("61", 16, ACCOUNT, "100.0")]
            raw.send(7, 3, 42, 0, "", "", "AAPL", "", "", "")
            msgs = await _drain_until(raw, ["55", "1", "42"])
            assert [(m[0], m[1]) for m in msgs] == [("11", "42"), ("59", "1"), ("55", "1")]
            raw.send(99, 0)
            msgs = await _drain_until(raw, ["102"])
            assert [(m[0], len(m)) for m in msgs[:-1]] == [("101", 97)]
            raw.send(5, 1)  # nothing open any more
            assert await _drain_until(raw, ["53", "1"]) == [["53", "1"]]
        finally:
            await raw.close()


async def test_another_client_sees_the_order_only_through_all_open_orders() -> None:
    async with gateway() as sim:
        owner = await RawClient.open(sim.port, client_id=7)
        other = await RawClient.open(sim.port, client_id=8)
        try:
            next_id = int((await owner.recv_until(lambda m: m[0] == "9"))[2])
            await other.recv_until(lambda m: m[0] == "15")
            limit = round(sim.market.quote(265598).bid * 0.5, 2)
            owner.send(*place_order_fields(Stock("AAPL", "SMART", "USD"),
                                           LimitOrder("BUY", 1, limit), next_id))
            await owner.recv_until(lambda m: m[0] == "3" and m[2] == "Submitted")
            other.send(5, 1)
            assert await _drain_until(other, ["53", "1"]) == [["53", "1"]]
            other.send(16, 1)
            msgs = await _drain_until(other, ["53", "1"])
            assert [(m[0], m[1]) for m in msgs[:-1]] == [("5", str(next_id)),
                                                         ("3", str(next_id))]
            assert msgs[0][24] == "7"  # the owner's client id, not the asker's
        finally:
            await owner.close()
            await other.close()
