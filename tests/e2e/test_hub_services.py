"""HubServer.add_service: sibling services see lease and upstream events; faults stay theirs."""

from __future__ import annotations

from typing import Any

from ibhub.hub.server import HubServer
from ibhub.protocol import ContractInfo, ContractSpec, Error, Goodbye, Ok
from ibhub.sim import SimGateway
from tests.e2e.conftest import wait_until


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_hello(self, lease_id: str, name: str) -> None:
        self.calls.append(("hello", lease_id, name))

    def on_lease_gone(self, lease_id: str) -> None:
        self.calls.append(("gone", lease_id))

    def on_connected(self, port: int, accounts: list[str]) -> None:
        self.calls.append(("connected", port, tuple(accounts)))

    async def stop(self) -> None:
        self.calls.append(("stop",))


class Broken:
    def on_hello(self, lease_id: str, name: str) -> None:
        raise RuntimeError("plugin bug")


async def test_services_get_lease_and_upstream_events(hub: HubServer, hub_sim: SimGateway,
                                                      clients) -> None:
    rec = Recorder()
    hub.add_service(Broken())
    hub.add_service(rec)
    assert rec.calls == [("connected", hub_sim.port, tuple(hub_sim.config.accounts))]

    a, b = clients(hub.rpc_endpoint), clients(hub.rpc_endpoint)
    await a.hello("polite")  # the broken service's hook raises; hello still succeeds
    await b.hello("vanishing")
    assert ("hello", a.handle, "polite") in rec.calls
    assert ("hello", b.handle, "vanishing") in rec.calls
    assert isinstance(await a.request(Goodbye(id=a.next_id(), lease=a.lease)), Ok)
    assert ("gone", a.handle) in rec.calls
    await b.stop_heartbeat()
    await wait_until(lambda: ("gone", b.handle) in rec.calls, 3.0, "expiry reported")

    await hub_sim.restart(0.1)
    await wait_until(lambda: sum(c[0] == "connected" for c in rec.calls) == 2, 10.0,
                     "on_connected after the reconnect")

    info = await hub.resolve_contract(ContractSpec(symbol="AAPL"))
    assert isinstance(info, ContractInfo) and info.symbol == "AAPL"
    err = await hub.resolve_contract(ContractSpec(symbol="NOSUCHSYM"))
    assert isinstance(err, Error) and err.code == "unknown_contract"

    await hub.stop()
    assert rec.calls[-1] == ("stop",)
