"""``ibhub run --sim`` as a real process: prints endpoints and state, serves, exits on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import zmq

from ibhub.protocol import GetStatus, StatusReply
from tests.e2e.conftest import RawClient


async def test_run_sim_serves_and_exits_cleanly(ipc_dir: str, zctx) -> None:
    pub, rpc = f"ipc://{ipc_dir}/pub", f"ipc://{ipc_dir}/rpc"
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()",
        "run", "--sim", "--sim-seed", "7", "--pub", pub, "--rpc", rpc, "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.strip().startswith("state") for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), 15.0)
            assert raw, f"ibhub run exited early: {lines}"
            lines.append(raw.decode())
        ready = time.monotonic() - started
        text = "".join(lines)
        assert f"pub  {pub}" in text and f"rpc  {rpc}" in text
        assert "simulated Gateway on 127.0.0.1:" in text
        assert "state CONNECTED" in text, text
        print(f"ibhub run --sim ready in {ready:.2f} s")

        client = RawClient(zctx, rpc, zmq.REQ)
        reply = await client.request(GetStatus(id=1))
        await client.close()
        assert isinstance(reply, StatusReply) and reply.connected
        assert reply.server_version == 176

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10.0)
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
