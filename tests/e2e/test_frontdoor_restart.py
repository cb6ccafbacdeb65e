"""Front door: a Gateway restart under the hub is ridden through.

Downstream scripts stay connected to the hub, see 1100 while the hub has no
Gateway, then 1101 (their market data was lost and the hub re-requested it on
their request ids) or 1102 (nothing of theirs was lost), and data resumes.
"""

from __future__ import annotations

from typing import Any

from ibhub.hub.server import HubServer
from ibhub.sim import SimGateway
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import ClientFactory, quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import IB, Stock

# fixtures shared by the front-door tests
door_hub = frontdoor_support.door_hub
ib_clients = frontdoor_support.ib_clients


def codes_of(ib: IB) -> list[int]:
    seen: list[int] = []
    ib.errorEvent += lambda _rid, code, _msg, _c: seen.append(code)
    return seen


async def test_gateway_restart_underneath(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    watcher, idle = await ib_clients(71), await ib_clients(72)
    watcher_codes, idle_codes = codes_of(watcher), codes_of(idle)
    c = Stock("AAPL", "SMART", "USD")
    await watcher.qualifyContractsAsync(c)
    ticker = watcher.reqMktData(c)
    updates: list[Any] = []
    ticker.updateEvent += lambda t: updates.append(t.time)
    await wait_until(lambda: len(updates) >= 2, 5.0, "ticks before the restart")
    up = door_hub.upstream
    assert up is not None
    count = up.reconnect_count

    await hub_sim.restart(0.3)
    await wait_until(lambda: 1100 in watcher_codes and 1100 in idle_codes, 5.0, "1100")
    await wait_until(lambda: up.reconnect_count > count and up.connected, 10.0, "hub back")
    await wait_until(lambda: 1101 in watcher_codes, 5.0, "1101 for the script with data")
    await wait_until(lambda: 1102 in idle_codes, 5.0, "1102 for the idle script")
    assert 1101 not in idle_codes
    # still connected (never dropped), data resumes on the same request id
    assert watcher.isConnected() and idle.isConnected()
    before = len(updates)
    await wait_until(lambda: len(updates) >= before + 2, 10.0, "ticks after the restart")
    # one line upstream again, for the hub's client id
    await wait_until(lambda: len(hub_sim.market_data_subscriptions()) == 1, 5.0, "one line")
    # requests work again too
    assert (await idle.reqContractDetailsAsync(Stock("MSFT", "SMART", "USD")))


async def test_request_during_outage_gets_an_error_not_a_hang(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    quiet_ib_insync()
    ib = await ib_clients(73)
    codes = codes_of(ib)
    await hub_sim.close_port()
    hub_sim.broadcast_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
    await wait_until(lambda: 1100 in codes, 5.0, "1100 relayed")
    # the upstream still has its socket during an IB-side outage, so contract details
    # still pass through; a request that needs a session the hub does not have fails fast
    for s in list(hub_sim.started_sessions()):
        s.abort()
    await wait_until(lambda: door_hub.upstream is not None
                     and not door_hub.upstream.connected, 5.0, "hub lost its session")
    assert await ib.reqContractDetailsAsync(Stock("IBM", "SMART", "USD")) == []
    assert 504 in codes
    await hub_sim.open_port()
    await wait_until(lambda: 1102 in codes or 1101 in codes, 10.0, "restored")
    assert ib.isConnected()


async def test_ib_side_outage_data_kept_then_lost(
    ib_clients: ClientFactory, door_hub: HubServer, hub_sim: SimGateway
) -> None:
    """IB's own link drops while the hub's socket stays up: 1100, then 1102 when IB kept
    the data; on a data-lost restore the hub re-requests and scripts with data get 1101."""
    quiet_ib_insync()
    ib = await ib_clients(74)
    codes = codes_of(ib)
    c = Stock("MSFT", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    ticker = ib.reqMktData(c)
    updates: list[Any] = []
    ticker.updateEvent += lambda t: updates.append(t.time)
    await wait_until(lambda: updates, 5.0, "ticks")
    await hub_sim.connectivity_lost("data_kept", after=0.2)
    await wait_until(lambda: codes.count(1102) == 1, 5.0, "1102")
    assert codes.count(1100) == 1 and 1101 not in codes
    await hub_sim.connectivity_lost("data_lost", after=0.2)
    await wait_until(lambda: codes.count(1101) == 1, 5.0, "1101 (hub re-requested)")
    before = len(updates)
    await wait_until(lambda: len(updates) > before + 1, 5.0, "ticks after data-lost restore")
    assert ib.isConnected()
