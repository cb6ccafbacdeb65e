"""`ibhub sim` as a process, the HTTP control port and `ibhub sim-fault`."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp
from click.testing import CliRunner

from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.cli import sim_fault
from ibhub.sim.control import ControlServer
from tests.helpers import wait_until
from tests.ibclient import IB
from tests.sim.core_support import connected


async def test_ibhub_sim_command_serves_clients() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ibhub.cli import main; main()", "sim", "--port", "0",
        "--control-port", "-1", "--seed", "3", "--accounts", "DU7654321,DU1111111",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, line
        ib = IB()
        try:
            await ib.connectAsync("127.0.0.1", int(m.group(1)), clientId=1, timeout=5)
            assert ib.managedAccounts() == ["DU7654321", "DU1111111"]
        finally:
            ib.disconnect()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_control_port_injects_faults() -> None:
    async with SimGateway(SimConfig(seed=2)) as sim:
        control = ControlServer(sim, "127.0.0.1", 0)
        await control.start()
        try:
            async with aiohttp.ClientSession() as http, connected(sim, 4) as ib:
                codes: list[int] = []
                ib.errorEvent += lambda rid, code, msg, c: codes.append(code)
                async with http.post(f"{control.url}/fault/farm_blip?seconds=0.2") as r:
                    assert r.status == 202
                await wait_until(lambda: 2103 in codes and 2104 in codes, 3, "farm blip")
                async with http.post(f"{control.url}/fault/hold_client_id?client_id=8"
                                     "&seconds=5") as r:
                    assert r.status == 202
                assert sim.client_id_in_use(8)
                async with http.post(f"{control.url}/tick_rate?hz=12") as r:
                    assert (await r.json()) == {"tick_rate": 12.0}
                async with http.post(f"{control.url}/fault/nonsense") as r:
                    assert r.status == 404
                async with http.post(f"{control.url}/fault/freeze?seconds=abc") as r:
                    assert r.status == 400
                async with http.get(f"{control.url}/status") as r:
                    status = await r.json()
                assert status["clients"] == [4] and status["tick_rate"] == 12.0
        finally:
            await control.stop()


async def test_sim_fault_command() -> None:
    async with SimGateway(SimConfig(seed=2)) as sim:
        control = ControlServer(sim, "127.0.0.1", 0)
        await control.start()
        loop = asyncio.get_running_loop()

        def run(*args: str):
            return CliRunner().invoke(sim_fault, [*args, "--control", control.url])

        try:
            result = await loop.run_in_executor(None, run, "stall_handshakes")
            assert result.exit_code == 0, result.output
            assert sim.handshakes_stalled
            result = await loop.run_in_executor(None, run, "unstall_handshakes")
            assert result.exit_code == 0 and not sim.handshakes_stalled
            result = await loop.run_in_executor(None, run, "close_port")
            assert result.exit_code == 0 and not sim.listening
            result = await loop.run_in_executor(None, run, "open_port")
            assert result.exit_code == 0 and sim.listening
            result = await loop.run_in_executor(None, run, "hold_client_id")
            assert result.exit_code != 0 and "--client-id" in result.output
        finally:
            await control.stop()
        bad = await loop.run_in_executor(
            None, lambda: CliRunner().invoke(sim_fault, ["freeze", "--control",
                                                         "http://127.0.0.1:1"]))
        assert bad.exit_code != 0 and "cannot reach" in bad.output
