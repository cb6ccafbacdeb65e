"""Hub, the blocking facade, used from plain threads against the fake hub."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from ibhub.client import AsyncHub, Hub, HubError, HubTimeout, NotConnected, Tick
from ibhub.protocol import Error, ErrorCode, Goodbye, HubStatus
from tests.unit.client_fakehub import FakeHub, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ibhub-sync-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def fake(ipc_dir: str) -> AsyncIterator[FakeHub]:
    async with FakeHub(f"ipc://{ipc_dir}/rpc", f"ipc://{ipc_dir}/pub") as hub:
        yield hub


async def test_blocking_hub_from_a_plain_thread(fake: FakeHub) -> None:
    """The test's loop runs the fake hub; the script side is an ordinary thread."""
    got: list[int] = []
    subscribed = threading.Event()
    release = threading.Event()

    def script() -> None:
        with Hub(pub=fake.pub, rpc=fake.rpc, name="plain") as hub:
            assert hub.lease is not None and hub.is_connected()
            assert hub.status().state == "CONNECTED"
            assert hub.contract_details("AAPL")[0].symbol == "AAPL"
            with hub.subscribe("AAPL") as sub:
                subscribed.set()
                for event in sub:
                    assert isinstance(event, Tick)
                    got.append(event.seq)
                    if len(got) == 3:
                        break
            assert release.wait(5)

    worker = asyncio.get_running_loop().run_in_executor(None, script)
    await asyncio.wait_for(asyncio.to_thread(subscribed.wait), 5)
    await fake.wait_subscribed("tick.AAPL")
    for price in (1.0, 2.0, 3.0):
        fake.tick("AAPL", price)
    await wait_until(lambda: len(got) == 3)
    release.set()
    await asyncio.wait_for(worker, 10)
    assert got == [1, 2, 3]
    assert len(fake.of_type(Goodbye)) == 1


async def test_many_threads_share_one_hub(fake: FakeHub) -> None:
    def script() -> list[str]:
        with Hub(pub=fake.pub, rpc=fake.rpc) as hub:
            results: list[str] = []
            lock = threading.Lock()

            def ask(symbol: str) -> None:
                info = hub.contract_details(symbol)[0]
                with lock:
                    results.append(info.symbol)

            threads = [threading.Thread(target=ask, args=(s,)) for s in "ABCDEFGH"]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return sorted(results)

    assert await asyncio.wait_for(asyncio.to_thread(script), 10) == list("ABCDEFGH")


async def test_blocking_get_timeout_callbacks_and_errors(fake: FakeHub) -> None:
    fake.refuse["historical_bars"] = Error(id=0, code=ErrorCode.IB_ERROR, message="pacing",
                                           ib_code=162)
    downs: list[HubStatus] = []
    ticks: list[float] = []

    def script() -> None:
        with Hub(pub=fake.pub, rpc=fake.rpc) as hub:
            hub.add_disconnect_handler(downs.append)
            assert hub.wait_connected(1) is True
            sub = hub.subscribe("MSFT")
            with pytest.raises(HubTimeout):
                sub.get(timeout=0.05)
            hub.subscribe("IBM", callback=lambda ev: ticks.append(ev.last))
            with pytest.raises(HubError) as info:
                hub.historical_bars("AAPL")
            assert info.value.ib_code == 162
            assert hub.lease_client_id("raw") == 101
            sub.close()
            with pytest.raises(StopIteration):
                sub.get(timeout=1)

    await asyncio.wait_for(asyncio.to_thread(script), 10)


async def test_methods_before_connect_raise_not_connected() -> None:
    hub = Hub(rpc="ipc:///nonexistent/rpc", pub="ipc:///nonexistent/pub")
    with pytest.raises(NotConnected):
        hub.status()
    with pytest.raises(NotConnected):
        hub.orders()
    with pytest.raises(NotConnected):
        hub.add_connect_handler(print)
    assert (hub.lease, hub.client_id, hub.upstream_state) == (None, None, "UNKNOWN")
    assert (hub.hub_reachable, hub.rehellos, hub.is_connected()) == (False, 0, False)
    with pytest.raises(AttributeError):
        hub.lease = "forged"
    hub.close()  # harmless


# Written by hand in client/sync_hub.py (each says why there); everything else public in
# AsyncHub is generated from it.
HAND_WRITTEN = {
    "connect", "close", "is_connected", "stats", "subscribe", "subscribe_batches", "unsubscribe",
}


def test_every_public_member_of_async_hub_has_its_blocking_counterpart() -> None:
    """A new public AsyncHub method or property without a Hub one fails here."""
    public = [name for name, _ in inspect.getmembers(AsyncHub) if not name.startswith("_")]
    assert "place_order" in public and "lease" in public
    missing = [name for name in public if not hasattr(Hub, name)]
    assert missing == [], f"add these to Hub (client/sync_hub.py): {missing}"
    for name in public:
        original = inspect.getattr_static(AsyncHub, name)
        mine = inspect.getattr_static(Hub, name)
        if name in HAND_WRITTEN:
            assert getattr(mine, "__wrapped__", None) is None, name
            continue
        assert mine.__wrapped__ is original, f"Hub.{name} is not generated from AsyncHub's"
        if isinstance(original, property):
            assert mine.__doc__ == original.__doc__, name
            continue
        blocking = getattr(Hub, name)
        assert not inspect.iscoroutinefunction(blocking), name
        assert inspect.signature(blocking) == inspect.signature(original), name
        assert blocking.__doc__ == original.__doc__ and blocking.__qualname__ == f"Hub.{name}"


async def test_failed_connect_stops_the_sdk_thread(ipc_dir: str) -> None:
    before = threading.active_count()

    def script() -> None:
        hub = Hub(rpc=f"ipc://{ipc_dir}/none", pub=f"ipc://{ipc_dir}/none-pub",
                  connect_timeout=0.1, connect_retries=1)
        with pytest.raises(HubTimeout):
            hub.connect()

    await asyncio.to_thread(script)
    await wait_until(lambda: not any(t.name == "ibhub-sdk" for t in threading.enumerate()))
    assert threading.active_count() <= before + 1  # to_thread's worker may linger


async def test_handlers_run_on_the_sdk_thread_and_cannot_block_it(fake: FakeHub) -> None:
    errors: list[BaseException] = []
    seen = threading.Event()

    def script() -> None:
        with Hub(pub=fake.pub, rpc=fake.rpc) as hub:
            def on_down(status: HubStatus) -> None:
                try:
                    hub.status()  # a blocking call on the SDK thread would deadlock
                except RuntimeError as exc:
                    errors.append(exc)
                seen.set()

            hub.add_disconnect_handler(on_down)
            ready.set()
            assert seen.wait(5)

    ready = threading.Event()
    worker = asyncio.ensure_future(asyncio.to_thread(script))
    await asyncio.wait_for(asyncio.to_thread(ready.wait), 5)
    await fake.wait_subscribed("hub.status")
    fake.status_event("RECONNECTING")
    await asyncio.wait_for(worker, 10)
    assert errors and "SDK callback" in str(errors[0])


async def test_blocking_iteration_ends_when_the_hub_refuses_or_the_hub_closes(
    fake: FakeHub,
) -> None:
    outcome: dict[str, object] = {}
    started = threading.Event()

    def script() -> None:
        with Hub(pub=fake.pub, rpc=fake.rpc) as hub:
            refused = hub.subscribe("GONE")
            kept = hub.subscribe("KEPT")
            started.set()
            outcome["refused"] = list(refused)  # ends when the hub refuses it for good
            outcome["error"] = refused.error.code if refused.error else None
            reader = threading.Thread(target=lambda: outcome.setdefault("kept", list(kept)))
            reader.start()
        reader.join(5)  # Hub.close() ended the other iterator too
        outcome["reader_alive"] = reader.is_alive()

    worker = asyncio.ensure_future(asyncio.to_thread(script))
    await asyncio.wait_for(asyncio.to_thread(started.wait), 5)
    fake.refuse_symbols["GONE"] = Error(id=0, code=ErrorCode.UNKNOWN_CONTRACT, message="delisted")
    fake.forget_leases()
    await asyncio.wait_for(worker, 10)
    assert outcome["refused"] == [] and outcome["error"] == ErrorCode.UNKNOWN_CONTRACT
    assert outcome["reader_alive"] is False and outcome["kept"] == []
