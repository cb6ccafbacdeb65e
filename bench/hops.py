"""One hop between two processes: ZeroMQ DEALER->ROUTER against a plain socket.

Not a test. The floor under every latency figure of the hub: a server process (uvloop)
answers each message with its own receive time; the client sends one message every
``--gap`` seconds and records, with CLOCK_MONOTONIC (one clock for every process on
the host), the time from its send to the server's receive ("in") and from the
server's stamp to its own receive of the answer ("out"):

    python bench/hops.py [--count 150] [--gap 0.02]

A ZeroMQ message crosses three threads (the sender's I/O thread, the receiver's I/O
thread, the receiver's loop) where a plain socket wakes only the receiver. With
``--gap`` well above zero every hop starts from idle CPUs, as an order does when a
script places one every few seconds; ``--gap 0`` shows the warm case. This is why
the hub has a plain-socket lane for its local clients (docs/architecture.md, "The
lane"; docs/performance.md section 8).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import tempfile
import time

import zmq
import zmq.asyncio
from benchlib import machine

STAMP = 20  # bytes of the server's decimal receive time


def _serve(kind: str, endpoint: str) -> None:
    async def main() -> None:
        if kind == "zmq":
            ctx = zmq.asyncio.Context()
            sock = ctx.socket(zmq.ROUTER)
            sock.bind(endpoint)
            while True:
                frames = await sock.recv_multipart()
                now = time.perf_counter_ns()
                await sock.send_multipart([frames[0], str(now).encode()])

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(64):
                writer.write(str(time.perf_counter_ns()).encode().ljust(STAMP))

        if kind == "unix":
            server = await asyncio.start_unix_server(answer, endpoint)
        else:
            host, port = endpoint.rsplit(":", 1)
            server = await asyncio.start_server(answer, host, int(port))
        await server.serve_forever()

    import uvloop

    uvloop.run(main())


async def _client(kind: str, endpoint: str, count: int, gap: float) -> tuple[list[float], ...]:
    ins: list[float] = []
    outs: list[float] = []
    await asyncio.sleep(0.3)  # the server binds
    if kind == "zmq":
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.connect(endpoint)
        await asyncio.sleep(0.2)

        async def round_trip() -> int:
            await sock.send(b"x")
            return int(await sock.recv())
    else:
        if kind == "unix":
            reader, writer = await asyncio.open_unix_connection(endpoint)
        else:
            host, port = endpoint.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))

        async def round_trip() -> int:
            writer.write(b"x")
            return int(await reader.readexactly(STAMP))

    for _ in range(count):
        t0 = time.perf_counter_ns()
        stamp = await round_trip()
        t2 = time.perf_counter_ns()
        ins.append((stamp - t0) / 1000)
        outs.append((t2 - stamp) / 1000)
        await asyncio.sleep(gap)
    if kind == "zmq":
        ctx.destroy(linger=0)
    else:
        writer.close()
    return ins, outs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=150)
    p.add_argument("--gap", type=float, default=0.02, help="seconds between messages")
    args = p.parse_args()
    print(machine())
    print(f"command: python bench/hops.py --count {args.count} --gap {args.gap}")
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ibhub-hops-") as tmp:
        cases = [
            ("zmq", f"tcp://127.0.0.1:{_free_port()}", "ZeroMQ tcp://"),
            ("zmq", f"ipc://{os.path.join(tmp, 'z.ipc')}", "ZeroMQ ipc://"),
            ("tcp", f"127.0.0.1:{_free_port()}", "plain TCP socket"),
            ("unix", os.path.join(tmp, "u.sock"), "plain Unix socket"),
        ]
        print(f"\none message every {args.gap * 1000:g} ms, {args.count} messages; us")
        print(f"{'transport':>20} {'in p50':>8} {'in p90':>8} {'out p50':>8} {'out p90':>8}")
        for kind, endpoint, label in cases:
            server = spawn.Process(target=_serve, args=(kind, endpoint), daemon=True)
            server.start()
            try:
                ins, outs = asyncio.run(_client(kind, endpoint, args.count, args.gap))
            finally:
                server.terminate()
                server.join()
            print(f"{label:>20} {_pct(ins, 0.5):8.0f} {_pct(ins, 0.9):8.0f} "
                  f"{_pct(outs, 0.5):8.0f} {_pct(outs, 0.9):8.0f}")


if __name__ == "__main__":
    main()
