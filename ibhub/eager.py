"""Eager tasks: run a coroutine's first step now, as a task, on every Python.

Why: the hub's order requests (``PlaceOrder`` and the rest) run as tasks, so each paid
one loop turn (the task's first step is ``call_soon``'d: 90-140 us at the median on
the 2-vCPU test host, more when the turn has other work queued) before the handler even
started, and a place that needs no wait at all (its contract known, its journal insert
committed and fsynced inside the first step: ``JournalWriter``) still answered a turn
later. An eager task runs its first step inside the call that creates it; a handler
that finishes in that step has replied before the call returns. A handler that waits
goes on as an ordinary task from where it stopped. docs/performance.md, "Order path,
hub side (session 5)", has the measurements.

Python 3.12+ has this built in (``asyncio.Task(..., eager_start=True)``). On 3.11 the
first step is run here with the new task entered as the current task (so
``asyncio.timeout`` and ``current_task`` inside it work as in any task), and the task's
own first step then resumes the coroutine where that step left it (or just returns the
result it already has). Called from inside another task (no loop callback), 3.11 cannot
enter a second current task, so the task starts the ordinary way.

Imports nothing of ibhub (like :mod:`ibhub.tasks`, which uses it).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def eager_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], name: str | None = None
) -> asyncio.Task[T]:
    """A task of ``loop`` running ``coro``, its first step already run (see module doc)."""
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)
    if asyncio.current_task(loop) is not None:  # 3.11 cannot nest current tasks
        return loop.create_task(coro, name=name)
    first = _FirstStep(coro)
    task = loop.create_task(_resume(first), name=name)
    asyncio.tasks._enter_task(loop, task)
    try:
        first.run()
    finally:
        asyncio.tasks._leave_task(loop, task)
    return task


class _FirstStep(Generic[T]):
    """A coroutine's first step, run outside its task, and what came of it."""

    __slots__ = ("coro", "error", "finished", "result", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.yielded: Any = None  # what the step yielded to the task (a future, or None)
        self.finished = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.yielded = self.coro.send(None)
        except StopIteration as stop:
            self.finished, self.result = True, stop.value
        except BaseException as exc:  # the task raises it when it runs, as any task
            self.finished, self.error = True, exc
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise

    def __await__(self) -> Generator[Any, Any, T]:
        """The rest of the coroutine, driven by the task that awaits this."""
        if self.finished:
            if self.error is not None:
                raise self.error
            return self.result  # type: ignore[return-value]
        coro, value = self.coro, self.yielded
        self.yielded = None
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # thrown in by the task (a cancellation)
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _resume(first: _FirstStep[T]) -> T:
    return await first
