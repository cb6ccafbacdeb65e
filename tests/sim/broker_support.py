"""Helpers for the broker tests: a SimGateway on a free port and unmodified ib_insync clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ibhub.sim import SimConfig, SimGateway
from tests.helpers import wait_until
from tests.ibclient import IB, Client, Contract, Order, Stock

__all__ = ["SEED", "client", "gateway", "place_order_fields", "qualified", "step_until",
           "wait_until"]

SEED = 20240102


@asynccontextmanager
async def gateway(**overrides: object) -> AsyncIterator[SimGateway]:
    """tick_rate=0 by default: the market only moves when a test steps it, so fills are exact."""
    print(f"sim seed {SEED}")
    cfg = SimConfig(**{"seed": SEED, "tick_rate": 0.0, "max_msg_rate": 1000.0,
                       **overrides})  # type: ignore[arg-type]
    async with SimGateway(cfg) as sim:
        yield sim


@asynccontextmanager
async def client(sim: SimGateway, client_id: int = 1, **kwargs: object) -> AsyncIterator[IB]:
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=5,
                          **kwargs)
    try:
        yield ib
    finally:
        ib.disconnect()


async def qualified(ib: IB, symbol: str = "AAPL") -> Contract:
    contract = Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    assert contract.conId, f"{symbol} did not qualify"
    return contract


def step_until(sim: SimGateway, con_id: int, done: Callable[[], bool], max_steps: int = 100_000
               ) -> int:
    """Step the seeded walk of `con_id` until `done()`; returns the steps taken."""
    for n in range(1, max_steps + 1):
        sim.market.step(con_id)
        if done():
            return n
    raise AssertionError(f"walk of {con_id} never reached the condition in {max_steps} steps")


class _CapturingClient(Client):
    """ib_insync's real Client encoding, with the socket replaced by a list."""

    def __init__(self) -> None:
        super().__init__(wrapper=None)
        self._serverVersion = 176
        self.sent: list[list[str]] = []

    def isConnected(self) -> bool:
        return True

    def sendMsg(self, msg: str) -> None:
        self.sent.append(msg.split("\0")[:-1])


def place_order_fields(contract: Contract, order: Order, order_id: int) -> list[str]:
    """The exact placeOrder fields ib_insync 0.9.86 sends at server version 176."""
    client = _CapturingClient()
    client.placeOrder(order_id, contract, order)
    return client.sent[-1]
