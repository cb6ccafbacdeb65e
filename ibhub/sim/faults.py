"""Faults a real Gateway shows, each observable from an unmodified client.

| fault              | what the client sees                                        |
|--------------------|-------------------------------------------------------------|
| restart(N)         | socket dropped; connects refused for N s; then accepted     |
| close/open_port    | socket dropped; connects refused until open_port()          |
| stall_handshakes   | TCP accepted, handshake never answered -> connect times out |
| connectivity_lost  | 1100, data stops; then 1101 (subscriptions gone) or 1102    |
| farm_blip(N)       | 2103 ...broken:usfarm, data stops; after N s 2104, resumes  |
| freeze(N)          | data stops for N s, socket up, no message (nightly reset)   |
| hold_client_id     | connects with that id get 326 and are closed                |
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["KINDS", "close_port", "connectivity_lost", "farm_blip", "freeze", "open_port",
           "restart"]

log = logging.getLogger(__name__)

LOST = "Connectivity between IB and Trader Workstation has been lost."
RESTORED_LOST = "Connectivity between IB and Trader Workstation has been restored - data lost."
RESTORED_KEPT = ("Connectivity between IB and Trader Workstation has been restored - data "
                 "maintained.")
FARM_BROKEN = "Market data farm connection is broken:usfarm"
FARM_OK = "Market data farm connection is OK:usfarm"

#: Fault names accepted by the control port and ``ibhub sim-fault``.
KINDS = ("restart", "close_port", "open_port", "stall_handshakes", "unstall_handshakes",
         "connectivity_lost", "farm_blip", "freeze", "hold_client_id")


async def restart(gw: SimGateway, down_seconds: float) -> None:
    """Drop every connection, refuse connects for ``down_seconds``, listen again."""
    log.warning("fault: Gateway restart, down for %.1f s", down_seconds)
    await gw._unlisten()
    await asyncio.sleep(down_seconds)
    await gw._listen()
    log.warning("fault: Gateway back up on port %d", gw.port)


async def close_port(gw: SimGateway) -> None:
    log.warning("fault: API port %d closed", gw.port)
    await gw._unlisten()


async def open_port(gw: SimGateway) -> None:
    if gw.listening:
        return
    await gw._listen()
    log.warning("fault: API port %d open again", gw.port)


async def connectivity_lost(gw: SimGateway, restored: str = "data_lost",
                            after: float = 0.5) -> None:
    """1100 to every client, data halted; after ``after`` s 1101 or 1102.

    With ``restored="data_lost"`` the simulator forgets every market data
    subscription before sending 1101, as IB does, so clients must resubscribe.
    """
    if restored not in ("data_lost", "data_kept"):
        raise ValueError(f"restored must be 'data_lost' or 'data_kept', not {restored!r}")
    log.warning("fault: connectivity to IB lost for %.1f s (%s)", after, restored)
    gw.streams.halt("connectivity")
    gw.ib_connected = False
    gw.broadcast_error(1100, LOST)
    try:
        await asyncio.sleep(after)
    finally:
        gw.ib_connected = True
        if restored == "data_lost":
            gw.streams.drop_all()
            gw.depth.drop_all()
            gw.broadcast_error(1101, RESTORED_LOST)
        else:
            gw.broadcast_error(1102, RESTORED_KEPT)
        gw.streams.resume("connectivity")


async def farm_blip(gw: SimGateway, seconds: float) -> None:
    log.warning("fault: market data farm down for %.1f s", seconds)
    gw.farm_ok = False
    gw.streams.halt("farm")
    gw.broadcast_error(2103, FARM_BROKEN)
    try:
        await asyncio.sleep(seconds)
    finally:
        gw.farm_ok = True
        gw.broadcast_error(2104, FARM_OK)
        gw.streams.resume("farm")


async def freeze(gw: SimGateway, seconds: float) -> None:
    log.warning("fault: data frozen for %.1f s (no message to clients)", seconds)
    gw.streams.halt("freeze")
    try:
        await asyncio.sleep(seconds)
    finally:
        gw.streams.resume("freeze")
