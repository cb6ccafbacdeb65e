"""ibhub.tasks.eager_task: a coroutine's first step runs inside the call, as a task, on
every Python (3.11: our own; 3.12+: asyncio's ``eager_start``), and the RpcServer's
eager routes reply inside the receive call when the handler needs no wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import zmq

from ibhub import wire
from ibhub.hub.leases import Peer
from ibhub.hub.registry import Context
from ibhub.hub.requests import RpcServer
from ibhub.protocol import Ok, PlaceOrder, Reply
from ibhub.tasks import TaskSet, eager_task
from tests.unit.test_rpc_server import place


async def _from_a_callback(fn: Any) -> Any:
    """Run ``fn()`` as a plain loop callback (as a socket reader does; no task)."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[Any] = loop.create_future()
    loop.call_soon(lambda: out.set_result(fn()))
    return await asyncio.wait_for(out, 5)


async def test_first_step_runs_inside_the_call_as_a_task() -> None:
    loop = asyncio.get_running_loop()
    seen: list[Any] = []
    gate: asyncio.Future[int] = loop.create_future()

    async def quick() -> int:
        seen.append(("quick", asyncio.current_task() is not None))
        return 1

    async def waits() -> int:
        seen.append("waits starts")
        async with asyncio.timeout(5):  # needs a current task, on every Python
            value = await gate
        seen.append(("waits got", value))
        return value + 1

    async def fails() -> None:
        raise ValueError("from the first step")

    def start() -> tuple[asyncio.Task[Any], ...]:
        tasks = (eager_task(loop, quick()), eager_task(loop, waits()),
                 eager_task(loop, fails()))
        seen.append("call returned")
        return tasks

    t_quick, t_waits, t_fails = await _from_a_callback(start)
    assert seen == [("quick", True), "waits starts", "call returned"]
    gate.set_result(41)
    assert await asyncio.wait_for(t_quick, 5) == 1
    assert await asyncio.wait_for(t_waits, 5) == 42
    with pytest.raises(ValueError, match="from the first step"):
        await asyncio.wait_for(t_fails, 5)
    # from inside a task (3.11 cannot nest current tasks: an ordinary task then)
    assert await asyncio.wait_for(eager_task(loop, quick()), 5) == 1


async def test_a_task_waiting_after_its_first_step_can_be_cancelled() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def waits() -> None:
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    tasks = TaskSet()
    task = await _from_a_callback(lambda: tasks.spawn(waits(), eager=True))
    assert len(tasks) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert seen == ["cancelled inside"] and len(tasks) == 0


async def test_an_eager_route_replies_inside_the_receive_call() -> None:
    """A slow handler registered ``eager`` that needs no wait is answered before
    ``serve_payload`` returns; one that waits is answered when its wait ends; a plain
    slow route answers a loop turn later. ``Registry.after_reply`` runs after each."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # never started: serve_payload is called directly
    server = RpcServer(router)
    loop = asyncio.get_running_loop()
    hooked: list[list[int]] = []  # the replies sent when each after-reply hook ran
    try:
        for eager in (True, False):
            gate: asyncio.Future[None] = loop.create_future()
            sent: list[int] = []
            both = asyncio.Event()

            async def handler(req: PlaceOrder, ctx: Context, gate: Any = gate) -> Reply:
                if req.client_order_id == "waits":
                    await gate
                return Ok(id=req.id)

            def send(reply: Reply, sent: list[int] = sent, both: asyncio.Event = both) -> None:
                sent.append(reply.id)
                if len(sent) == 2:
                    both.set()

            server.register(PlaceOrder, handler, slow=True, eager=eager)
            def hook(sent: list[int] = sent) -> None:
                hooked.append(list(sent))

            server.registry.after_reply[:] = [hook]
            hooked.clear()

            def serve(rid: int, coid: str, sent: list[int] = sent) -> list[int]:
                server.serve_payload(wire.encode(place(rid, coid)), Peer(b"p"), send)
                return list(sent)

            assert await _from_a_callback(lambda: serve(1, "quick")) == ([1] if eager else [])
            assert 2 not in await _from_a_callback(lambda: serve(2, "waits"))
            gate.set_result(None)
            await asyncio.wait_for(both.wait(), 5)
            assert sorted(sent) == [1, 2]
            # the hook runs right after each reply (the order service's acknowledged
            # events go out behind their reply, in the same step)
            assert hooked == [sent[:1], sent[:2]]
    finally:
        await server.close()
        router.close(0)
        ctx.term()
