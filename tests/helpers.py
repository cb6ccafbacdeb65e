"""Shared test helpers: explicit waits instead of sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ibhub.hub.server import HubServer
    from ibhub.ib.session import Upstream


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
                     what: str = "condition", interval: float = 0.005) -> None:
    """Poll ``predicate`` (while the loop keeps running everything else) until it is
    truthy; fail with a message naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def upstream_of(hub: HubServer) -> Upstream:
    """The started hub's upstream session (None only before start)."""
    assert hub.upstream is not None, "the hub is not started"
    return hub.upstream
