"""Helpers for the broker tests: a SimGateway on a free port and unmodified ib_insync clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ib_insync import IB, Contract, Stock

from ibhub.sim.config import SimConfig
from ibhub.sim.server import SimGateway

SEED = 20240102


@asynccontextmanager
async def gateway(**overrides: object) -> AsyncIterator[SimGateway]:
    """tick_rate=0 by default: the market only moves when a test steps it, so fills are exact."""
    cfg = SimConfig(**{"seed": SEED, "tick_rate": 0.0, "max_msg_rate": 1000.0,
                       **overrides})  # type: ignore[arg-type]
    async with SimGateway(cfg) as sim:
        yield sim


@asynccontextmanager
async def client(sim: SimGateway, client_id: int = 1, **kwargs: object) -> AsyncIterator[IB]:
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=5,
                          **kwargs)  # type: ignore[arg-type]
    try:
        yield ib
    finally:
        ib.disconnect()


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Poll `predicate` while the loop runs the client and the simulator; fail after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


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
