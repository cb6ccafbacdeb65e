"""The status page in a real headless browser (Debian's chromium driven by Playwright)
against ``ibhub run --sim`` in a subprocess: connected, subscribed symbols with
advancing tick times, a Gateway restart injected with ``ibhub sim-fault restart``
turns it red and back to green without a reload; with JavaScript off the same page is
readable (server-rendered).

``IBHUB_SCREENSHOTS=DIR`` saves the screenshots used in docs/operations.md
(docs/img/statuspage-*.png) while the test runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_sync = pytest.importorskip("playwright.sync_api",
                                      reason="playwright not installed (the test extra)")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's)"),
    pytest.mark.timeout(60),
]
SHOTS = os.environ.get("IBHUB_SCREENSHOTS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ibhub(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ibhub", *args], **kw)  # type: ignore[call-overload]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def sim_hub(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``ibhub run --sim`` on free ports, and an ``ibhub tail`` subscribed to two symbols."""
    http, control = free_port(), free_port()
    ends = {"pub": f"ipc://{tmp_path}/pub", "rpc": f"ipc://{tmp_path}/rpc",
            "http": f"http://127.0.0.1:{http}/", "control": f"http://127.0.0.1:{control}"}
    hub = ibhub("run", "--sim", "--sim-seed", "3", "--pub", ends["pub"], "--rpc", ends["rpc"],
                "--http-port", str(http), "--sim-control-port", str(control),
                "--data-dir", str(tmp_path / "data"), "--log-level", "WARNING",
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    tail = None
    try:
        assert hub.stdout is not None
        out: list[str] = []
        deadline = time.monotonic() + 20
        while not any(line.strip().startswith("state") for line in out):
            line = hub.stdout.readline().decode()
            assert line and time.monotonic() < deadline, f"ibhub run --sim: {out}"
            out.append(line)
        assert "state CONNECTED" in "".join(out), out
        assert f"sim-fault control {ends['control']}" in "".join(out), out
        tail = ibhub("tail", "--rpc", ends["rpc"], "--pub", ends["pub"], "-s", "AAPL",
                     "-s", "MSFT", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield ends
    finally:
        if tail is not None:
            stop(tail)
        stop(hub)


def tick_ts(page: object, symbol: str) -> float:
    row = page.locator("table.instruments tr", has_text=symbol)  # type: ignore[attr-defined]
    return float(row.locator(".tick-time").get_attribute("data-ts") or 0)


def test_status_page_live_in_chromium(sim_hub: dict[str, str]) -> None:
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(sim_hub["http"])
            badge = page.locator("#upstream-state")
            playwright_sync.expect(badge).to_have_attribute("data-state", "CONNECTED")
            playwright_sync.expect(badge).to_have_class("badge up")
            playwright_sync.expect(page.locator("#live")).to_have_text("live", timeout=5000)
            # A marker on the window: gone if the page ever reloads.
            page.evaluate("window.__noReload = 42")
            # Both symbols subscribed by `ibhub tail`, their tick times advancing live.
            for symbol in ("AAPL", "MSFT"):
                row = page.locator("table.instruments tr", has_text=symbol)
                playwright_sync.expect(row).to_have_count(1, timeout=10000)
            first = tick_ts(page, "AAPL")
            page.wait_for_function(
                "t => Number(document.querySelector('table.instruments tbody tr "
                ".tick-time').dataset.ts) > t", arg=first, timeout=10000)
            assert tick_ts(page, "AAPL") > first and tick_ts(page, "MSFT") > 0
            playwright_sync.expect(page.locator("#lines")).to_have_text("2 / 100")
            playwright_sync.expect(page.locator("#leases")).to_contain_text("ibhub-tail")
            if SHOTS:
                page.screenshot(path=f"{SHOTS}/statuspage-connected.png")

            fault = subprocess.run(
                [sys.executable, "-m", "ibhub", "sim-fault", "restart", "--seconds", "2",
                 "--control", sim_hub["control"]], capture_output=True, text=True, timeout=15)
            assert fault.returncode == 0, fault.stderr
            playwright_sync.expect(badge).to_have_class("badge down", timeout=10000)
            assert badge.get_attribute("data-state") in ("RECONNECTING", "CONNECTING")
            if SHOTS:
                page.screenshot(path=f"{SHOTS}/statuspage-down.png")
            playwright_sync.expect(badge).to_have_class("badge up", timeout=20000)
            playwright_sync.expect(page.locator("#upstream")).to_contain_text("RECONNECTING")
            playwright_sync.expect(page.locator("#alerts")).to_contain_text("upstream_restored")
            assert page.evaluate("window.__noReload") == 42, "the page reloaded"
            # Ticks flow again after the resubscription.
            again = tick_ts(page, "AAPL")
            page.wait_for_function(
                "t => Number(document.querySelector('table.instruments tbody tr "
                ".tick-time').dataset.ts) > t", arg=again, timeout=10000)
            assert not errors, errors

            # Without JavaScript: the same sections, rendered by the server.
            plain = browser.new_context(java_script_enabled=False).new_page()
            plain.goto(sim_hub["http"])
            playwright_sync.expect(plain.locator("#upstream-state")).to_have_attribute(
                "data-state", "CONNECTED")
            playwright_sync.expect(plain.locator("table.instruments")).to_contain_text("MSFT")
            playwright_sync.expect(plain.locator("#live")).to_contain_text("static page")
        finally:
            browser.close()
