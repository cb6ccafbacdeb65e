"""Background tasks owned by one object: :class:`TaskSet`.

The event loop keeps only a weak reference to a task, so a task nobody holds may be
collected mid-flight, and an exception in a task nobody awaits is lost (at best a
"Task exception was never retrieved" at collection time). A ``TaskSet`` holds each
task until it ends, logs an unexpected exception on the owner's logger when it ends,
and cancels and awaits them all when the owner closes.

It lives at the top of the package, importing nothing of ibhub, because the SDK
(``client/``), the simulator (``sim/``), the order service (``orders/``), the hub and
the front door all spawn tasks and none of them may import the others.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine, Generator, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_log = logging.getLogger(__name__)


class TaskSet:
    """Spawned tasks, held until they end; cancelled and awaited together on close."""

    __slots__ = ("_log", "_tasks", "what")

    def __init__(self, logger: logging.Logger | None = None, what: str = "background task"):
        self._log = logger if logger is not None else _log
        self.what = what  # how a failure is named in the log ("background fault", ...)
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None, *,
              eager: bool = False) -> asyncio.Task[T]:
        """Run ``coro`` as a task of the running loop, held until it ends. ``eager``: its
        first step runs now, inside this call (:func:`eager_task`)."""
        loop = asyncio.get_running_loop()
        task = eager_task(loop, coro, name) if eager else loop.create_task(coro, name=name)
        if task.done():  # finished in its eager first step
            self._done(task)
            return task
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel every task (without waiting) but the one calling; returns them.

        A task of the set may close its owner (a script's callback closing the SDK):
        it is left to finish that close rather than cancel itself half-way.
        """
        try:
            current = asyncio.current_task()
        except RuntimeError:  # no running loop
            current = None
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        return tasks

    async def close(self) -> None:
        """Cancel every task and wait until they have all ended (their outcomes,
        cancellation or failure, are not raised here)."""
        tasks = self.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s %s failed", self.what, task.get_name(), exc_info=exc)

# ------------------------------------------------------------------ eager tasks
# An eager task runs its coroutine's first step inside the call that creates it; a
# handler that finishes in that step (an order whose contract is known and whose insert
# commits and fsyncs at once, JournalWriter) has replied before the call returns, and
# one that waits goes on as an ordinary task from where it stopped. The hub's order
# requests use it (Route.eager): their first step no longer waits for a loop turn behind
# whatever else the turn holds (docs/performance.md, "Order path, hub side" (section 8.3)).
#
# Python 3.12+ has it built in (``asyncio.Task(..., eager_start=True)``). On 3.11 the
# first step is run here with the new task entered as the current task (so
# ``asyncio.timeout`` and ``current_task`` inside it work as in any task), and the
# task's own first step then resumes the coroutine where that step left it (or returns
# the result it already has). Called from inside another task, 3.11 cannot enter a
# second current task, so the task then starts the ordinary way.


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
