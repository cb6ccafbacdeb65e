"""Shared machinery of the ibhub benchmarks (not a test, not part of the package).

Every benchmark runs each party in its own process, as in production: the
simulated Gateway (:class:`SimProcess`, a SimGateway on uvloop in a child), the
hub (:class:`HubProcess`, the real ``ibhub run`` command) and the scripts. A
2-core machine shared with other work is noisy, so each script compares figures
measured in the same run, and ``--repeat`` gives min/median/max.

Latency comes from the simulator's ``stamp_sizes`` mode: every streamed tickPrice
carries the simulator's wall clock (integer microseconds, taken when the 10 ms
streaming slice starts, before its batch is built and written) in its size field.
A receiver subtracts it from its own wall clock (the same machine's
``CLOCK_REALTIME``), so the figure is simulator-send -> receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import psutil
import zmq

SPAWN = mp.get_context("spawn")

# Latency histogram: 1 us buckets up to HIST_MAX_US, then one overflow bucket.
HIST_MAX_US = 200_000


# ---------------------------------------------------------------------------- numbers


class LatencyHist:
    """A 1-microsecond histogram: cheap to fill per tick, mergeable across processes."""

    __slots__ = ("buckets", "count")

    def __init__(self) -> None:
        self.buckets = array("q", bytes(8 * (HIST_MAX_US + 1)))
        self.count = 0

    def add(self, us: int) -> None:
        if us < 0:
            us = 0
        elif us > HIST_MAX_US:
            us = HIST_MAX_US
        self.buckets[us] += 1
        self.count += 1

    def merge(self, other: LatencyHist) -> None:
        b = self.buckets
        for i, n in enumerate(other.buckets):
            if n:
                b[i] += n
        self.count += other.count

    def percentile(self, q: float) -> float:
        """The q-th percentile in microseconds (NaN when empty)."""
        if not self.count:
            return float("nan")
        rank = q / 100.0 * self.count
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank and n:
                return float(i)
        return float(HIST_MAX_US)

    def __getstate__(self) -> tuple[bytes, int]:
        return (self.buckets.tobytes(), self.count)

    def __setstate__(self, state: tuple[bytes, int]) -> None:
        self.buckets = array("q")
        self.buckets.frombytes(state[0])
        self.count = state[1]


def pct(values: Sequence[float], q: float) -> float:
    """q-th percentile of raw samples (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * len(s) + 0.5) - 1))
    return s[k]


def spread(values: Iterable[float], fmt: str = "{:,.0f}") -> str:
    """``median [min-max]`` of repeated measurements (just the value for one run)."""
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(vals))}-{fmt.format(max(vals))}]"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                markdown: bool = False) -> None:
    if markdown:  # for docs/performance.md
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        sys.stdout.flush()
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    sys.stdout.flush()


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores, {model}, Python {sys.version.split()[0]}, "
            f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}), load avg {load}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(proc: psutil.Process) -> float:
    """On-CPU time of a process's threads in seconds (0 if it is gone).

    From the scheduler's nanosecond counters (``/proc/<pid>/task/*/schedstat``), not
    ``cpu_times()``: those come in 10 ms clock ticks, and a 3 s window of a subscriber
    that runs ~0.3 ms per 10 ms is ~70 ms of CPU, so one tick either way at each end is
    a 15-30 % error per process (sessions before 7 used them). A thread that ends
    inside the window takes its time with it; the benchmarks' processes keep theirs.
    """
    task = f"/proc/{proc.pid}/task"
    try:
        total = 0
        for tid in os.listdir(task):
            with open(f"{task}/{tid}/schedstat") as f:
                total += int(f.read().split(maxsplit=1)[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / (1 << 20)
    except psutil.Error:
        return float("nan")


def sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


# ---------------------------------------------------------------------------- simulator


@dataclass(frozen=True)
class Instrument:
    con_id: int
    symbol: str
    sec_type: str


# Stamp mode "write": the simulator builds a slice's batch with this placeholder as the
# stamp and the bench replaces it with the clock just before the socket write.
PLACEHOLDER_US = 9_999_999_999_999_999
_PLACEHOLDER = str(PLACEHOLDER_US).encode()


def _stamp_at_write() -> None:
    """Make stamped sizes mean "simulator socket write" instead of "slice start".

    The simulator stamps every tickPrice of a 10 ms slice with the time the slice
    *starts*, before it steps the walks and builds the batch (~6 us of Python per
    message: ~0.6 ms for a 100-message slice, more at higher rates), so the stamp
    would charge the simulator's own batch-building to whoever receives. Issue 7
    defines latency from the simulator's socket write, so this benchmark-only
    patch (in the simulator's child process; the package is unchanged) makes the
    slice's clock return a same-width placeholder and replaces it in each batch
    with the wall clock right before ``transport.write``.
    """
    import types

    from ibhub.sim import session, streaming

    fake_time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time)
                                         if not k.startswith("__")})
    fake_time.time_ns = lambda: PLACEHOLDER_US * 1000
    streaming.time = fake_time  # type: ignore[attr-defined]
    write_raw = session.ClientSession.write_raw

    def stamped_write_raw(self: Any, data: bytes) -> None:
        if _PLACEHOLDER in data:
            data = data.replace(_PLACEHOLDER, str(time.time_ns() // 1000).encode())
        write_raw(self, data)

    session.ClientSession.write_raw = stamped_write_raw  # type: ignore[method-assign]


BENCH_OPTIONS = 10  # option contracts in the benchmark set


def bench_set(universe: Any) -> list[Any]:
    """The 41 instruments the benchmarks stream: every stock, ETF and FX pair, one
    month of each future and the first 10 options. Fixed as the universe grew
    (option chains, the ES quarterly cycle) so figures stay comparable over time."""
    out, futures, options = [], set(), 0
    for inst in universe:
        if inst.sec_type == "FUT":
            if inst.symbol in futures:
                continue
            futures.add(inst.symbol)
        elif inst.sec_type in ("OPT", "FOP"):
            if options >= BENCH_OPTIONS:
                continue
            options += 1
        out.append(inst)
    return out


def _sim_main(conn: Connection, kwargs: dict[str, Any], stamp: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    if stamp == "write":
        _stamp_at_write()

    async def serve() -> None:
        from ibhub.sim import SimConfig, SimGateway

        cfg = SimConfig(**kwargs)
        async with SimGateway(cfg) as sim:
            insts = [Instrument(i.con_id, i.symbol, i.sec_type) for i in bench_set(sim.universe)]
            conn.send((sim.port, insts))
            loop = asyncio.get_running_loop()
            while True:
                cmd, *args = await loop.run_in_executor(None, conn.recv)
                if cmd == "rate":
                    sim.set_tick_rate(float(args[0]))
                    conn.send(None)
                elif cmd == "counts":
                    conn.send((sim.streams.events, sim.streams.messages, time.time()))
                elif cmd == "call":  # ("call", attribute path, *args) on the sim's loop
                    obj: Any = sim
                    for part in args[0].split("."):
                        obj = getattr(obj, part)
                    result = obj(*args[1:])
                    if asyncio.iscoroutine(result):
                        result = await result
                    conn.send(result)
                elif cmd == "stop":
                    conn.send(None)
                    return

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve())
    else:
        uvloop.run(serve())


class SimProcess:
    """The simulated Gateway in a child process (its own core, its own GIL).

    Stamped sizes (``stamp="write"``: the clock at the socket write, see
    :func:`_stamp_at_write`; ``"slice"``: the simulator's own stamp), tick rate 0
    until :meth:`rate` (so subscribers can settle first),
    enough lines, clients and request rate for eight direct ib_insync scripts.
    """

    def __init__(self, stamp: str = "write", **overrides: Any) -> None:
        kwargs: dict[str, Any] = dict(seed=1, tick_rate=0.0, stamp_sizes=True, max_lines=1000,
                                      max_msg_rate=100_000.0, max_clients=32)
        kwargs.update(overrides)
        self._conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=_sim_main, args=(child, kwargs, stamp),
                                daemon=True)
        self.proc.start()
        if not self._conn.poll(30):
            raise TimeoutError("simulator process did not start within 30 s")
        self.port, self.instruments = self._conn.recv()
        self.ps = psutil.Process(self.proc.pid)

    def _ask(self, *cmd: Any) -> Any:
        self._conn.send(cmd)
        if not self._conn.poll(30):
            raise TimeoutError(f"simulator did not answer {cmd[0]!r}")
        return self._conn.recv()

    def rate(self, hz: float) -> None:
        self._ask("rate", hz)

    def counts(self) -> tuple[int, int, float]:
        """(market events stepped, streamed messages written, wall time)."""
        result: tuple[int, int, float] = self._ask("counts")
        return result

    def call(self, path: str, *args: Any) -> Any:
        return self._ask("call", path, *args)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ask("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def per_instrument_rate(ticks_per_s: float, n_instruments: int) -> float:
    """Market events/s per instrument for a total of ``ticks_per_s`` streamed messages.

    Every simulated event is two messages (a quote: bid and ask tickPrice; a trade:
    last tickPrice and volume tickSize)."""
    return ticks_per_s / (2.0 * n_instruments)


# ---------------------------------------------------------------------------- hub


def ibhub_command() -> list[str]:
    exe = shutil.which("ibhub", path=os.path.dirname(sys.executable)) or shutil.which("ibhub")
    if exe:
        return [exe]
    return [sys.executable, "-c", "from ibhub.cli import main; main()"]


def rpc_call(endpoint: str, request: Any, timeout: float = 5.0) -> Any:
    """One request over a fresh DEALER; returns the decoded reply (raises TimeoutError)."""
    from ibhub import wire

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart([b"", wire.encode(request)])
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply from {endpoint} within {timeout} s")
        return wire.decode_reply(sock.recv_multipart()[-1])
    finally:
        sock.close(0)


class HubProcess:
    """``ibhub run`` as a subprocess, connected to a gateway; endpoints on free ports."""

    def __init__(self, gateway_port: int | None = None, *, sim: bool = False,
                 extra: Sequence[str] = (), env: dict[str, str] | None = None,
                 ready_timeout: float = 30.0) -> None:
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        self.rpc = f"tcp://127.0.0.1:{free_port()}"
        # its own order journal and no /health port: benchmark hubs must not touch the
        # user's journal or collide with another hub's HTTP port
        self._data_dir = tempfile.TemporaryDirectory(prefix="ibhub-bench-")
        args = [*ibhub_command(), "run", "--pub", self.pub, "--rpc", self.rpc,
                "--log-level", "WARNING", "--data-dir", self._data_dir.name,
                "--http-port", "off", *extra]
        if sim:
            args.append("--sim")
        else:
            args += ["--gateway", f"127.0.0.1:{gateway_port}"]
        self.log_path = f"/tmp/ibhub-bench-hub-{os.getpid()}-{free_port()}.log"
        self._log = open(self.log_path, "wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.ps = psutil.Process(self.proc.pid)
        self.ready_seconds = self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> float:
        """Seconds from process start until a status request says CONNECTED."""
        from ibhub.protocol import GetStatus, StatusReply

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ibhub run exited with {self.proc.returncode}; "
                                   f"see {self.log_path}")
            try:
                reply = rpc_call(self.rpc, GetStatus(id=1), timeout=0.2)
            except TimeoutError:
                continue
            if isinstance(reply, StatusReply) and reply.connected:
                return time.perf_counter() - self.started_at
            time.sleep(0.01)
        raise TimeoutError(f"hub not ready within {timeout} s; see {self.log_path}")

    def status(self, timeout: float = 30.0) -> Any:
        from ibhub.protocol import GetStatus

        return rpc_call(self.rpc, GetStatus(id=1), timeout)

    def published_ticks(self) -> float:
        """Ticks published so far (NaN if the hub does not answer within 30 s)."""
        try:
            return float(sum(s.ticks for s in self.status().subscriptions))
        except TimeoutError:
            return float("nan")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: clean shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        self._data_dir.cleanup()

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- workers


class Worker:
    """A child process running ``target(conn, *args)`` with a ready / window / report protocol.

    The target sends ``("ready", info)`` once set up, then receives the measurement
    window ``(t0, t1)`` (wall clock), and answers a ``"report"`` with its results.
    """

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        self.ps = psutil.Process(self.proc.pid)
        self.info: Any = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"worker {self.proc.pid} not ready within {timeout} s")
        msg = self.conn.recv()
        if msg[0] != "ready":
            raise RuntimeError(f"worker {self.proc.pid} failed: {msg}")
        self.info = msg[1]

    def send(self, obj: Any) -> None:
        self.conn.send(obj)

    def report(self, timeout: float = 60.0) -> Any:
        self.conn.send("report")
        if not self.conn.poll(timeout):
            raise TimeoutError(f"worker {self.proc.pid} did not report within {timeout} s")
        return self.conn.recv()

    def close(self) -> None:
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def start_workers(target: Callable[..., None], arg_list: Sequence[tuple[Any, ...]],
                  timeout: float = 90.0) -> list[Worker]:
    workers = [Worker(target, *args) for args in arg_list]
    try:
        for w in workers:
            w.wait_ready(timeout)
    except BaseException:
        for w in workers:
            w.proc.terminate()
        raise
    return workers


async def recv_async(conn: Connection) -> Any:
    """Receive from a pipe without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)
