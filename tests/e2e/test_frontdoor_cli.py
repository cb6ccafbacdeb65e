"""``ibhub run --sim --tws-port 0`` as a real process: an unmodified ib_insync script
connects to the printed TWS port and gets market data through the hub."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

from tests.e2e.frontdoor_support import quiet_ib_insync
from tests.helpers import wait_until
from tests.ibclient import IB, Stock


async def test_run_with_tws_port(ipc_dir: str) -> None:
    quiet_ib_insync()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()",
        "run", "--sim", "--tws-port", "0", "--pub", f"ipc://{ipc_dir}/pub",
        "--rpc", f"ipc://{ipc_dir}/rpc", "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "IBHUB_DATA_DIR": ipc_dir},
    )
    ib = IB()
    try:
        assert proc.stdout is not None
        text = ""
        while "state " not in text:
            async with asyncio.timeout(15):
                raw = await proc.stdout.readline()
            assert raw, f"ibhub run exited early: {text}"
            text += raw.decode()
        m = re.search(r"tws  127\.0\.0\.1:(\d+)", text)
        assert m, text
        await ib.connectAsync("127.0.0.1", int(m.group(1)), clientId=3, timeout=5)
        # qualified first: ib_async cannot hash a contract without its conId
        [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        ticker = ib.reqMktData(aapl)
        await wait_until(lambda: ticker.bid > 0, 10.0, "ticks through ibhub run")
        ib.disconnect()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        ib.disconnect()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
