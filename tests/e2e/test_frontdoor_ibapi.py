"""Front door with IB's official client: an unmodified ibapi EClient/EWrapper script
(tests/e2e/ibapi_script.py) in a subprocess connects, takes market data (with the
last-trade timestamp), places and cancels an order, gets news providers and family
codes (id-less requests) and soft-dollar tiers, has a refused request ended by its
error, and reads positions.

ibapi (PyPI ``ibapi-stable``, imports as ``ibapi``) is in the ``test`` extra: it
installs no ``eventkit`` and so does not clash with ib_insync or ib_async; it offers
server versions up to 226 and the front door answers 176, below its protobuf framing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from ibhub.hub.server import HubServer
from ibhub.sim.reference import NEWS_PROVIDERS
from tests.e2e import frontdoor_support
from tests.e2e.frontdoor_support import door_of

pytest.importorskip("ibapi")

door_hub = frontdoor_support.door_hub
SCRIPT = Path(__file__).with_name("ibapi_script.py")


async def test_unmodified_ibapi_script_through_the_front_door(door_hub: HubServer) -> None:
    port = door_of(door_hub).tws_port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), str(port), "41",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert out, err.decode()[-2000:]
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert "failed" not in seen, (seen, err.decode()[-2000:])
    assert proc.returncode == 0
    assert seen["server_version"] == 176
    assert seen["bid"] > 0
    assert abs(seen["last_timestamp"] - time.time()) < 120
    assert seen["order_status"] in ("Submitted", "PreSubmitted")
    assert seen["cancelled"] == "Cancelled"
    assert seen["news_providers"] == [code for code, _ in NEWS_PROVIDERS]
    assert seen["family_accounts"] == door_of(door_hub).accounts_known
    assert seen["soft_dollar_tiers"] == 0
    code, text, seconds = seen["refused"]
    assert code == 320 and "reqWshMetaData is not supported" in text and seconds < 2
    assert seen["positions_end"] is True
