"""Run a SimGateway on its own event loop in a daemon thread.

For synchronous code and benchmarks, where the client's loop must not also carry
the simulator (so figures measure a separate "Gateway"). Attribute reads are
forwarded to the gateway; anything that changes it should go through
:meth:`ThreadedSim.call` so it runs on the simulator's loop:

    with SimGateway.in_thread(SimConfig(seed=1)) as sim:
        IB().connect("127.0.0.1", sim.port, clientId=1)
        sim.call(sim.restart, 2.0)      # coroutine functions are awaited
        sim.call(sim.set_tick_rate, 50) # plain functions are called on the loop
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibhub.sim.config import SimConfig
    from ibhub.sim.server import SimGateway

__all__ = ["ThreadedSim"]


class ThreadedSim:
    def __init__(self, cls: type[SimGateway], config: SimConfig | None, **kwargs: Any) -> None:
        self._cls = cls
        self._config = config
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.gateway: SimGateway | None = None

    def start(self, timeout: float = 10.0) -> ThreadedSim:
        self._thread = threading.Thread(target=self._main, name="ibhub-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"simulator thread did not start within {timeout} s")
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        return self

    def _main(self) -> None:
        # A Runner, not a bare loop: closing it cancels the tasks still running and runs
        # the loop until they end, so nothing the gateway left is cut off mid-way (its
        # stop already gives aborted transports the turns that close their sockets).
        with asyncio.Runner() as runner:
            self._loop = runner.get_loop()
            runner.run(self._serve())

    async def _serve(self) -> None:
        try:
            self.gateway = self._cls(self._config, **self._kwargs)
            await self.gateway.start()
            self._stop = asyncio.Event()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.gateway.stop()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 60.0) -> Any:
        """Run ``fn(*args)`` on the simulator's loop and return its (awaited) result."""
        async def invoke() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        assert self._loop is not None, "simulator thread not started"
        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule ``fn(*args)`` on the simulator's loop without waiting."""
        assert self._loop is not None, "simulator thread not started"
        self._loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ThreadedSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        gateway = self.__dict__.get("gateway")
        if gateway is None:
            raise AttributeError(name)
        return getattr(gateway, name)
