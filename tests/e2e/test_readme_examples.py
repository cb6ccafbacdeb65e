"""README.md's examples, taken from the README itself and run twice in a row against
``ibhub run --sim`` (issue 18: the trading example failed on its second run, and the
lease example released an id other than the one printed). Also: what ``ibhub run
--sim`` prints has the lines, in the order, the README shows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_statuspage_browser import free_port, stop

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
HUB_LOG = "hub.log"  # the hub's stderr, in the test's tmp_path


def blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block in the README."""
    out: list[tuple[str, str]] = []
    lang: str | None = None
    lines: list[str] = []
    for line in README.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                out.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    return out


def block(lang: str, must: str) -> str:
    found = [text for kind, text in blocks() if kind == lang and must in text]
    assert len(found) == 1, f"one ```{lang} block with {must!r} in README.md"
    return found[0]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    env = {**os.environ, "IBHUB_RPC": f"ipc://{tmp_path}/rpc",
           "IBHUB_PUB": f"ipc://{tmp_path}/pub"}
    log = (tmp_path / HUB_LOG).open("wb")  # shown when a step fails (hub_log)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ibhub", "run", "--sim", "--http-port", str(free_port()),
         "--sim-control-port", str(free_port()), "--data-dir", str(tmp_path / "data"),
         "--log-level", "INFO"],
        env=env, stdout=subprocess.PIPE, stderr=log)
    log.close()
    try:
        assert proc.stdout is not None
        out: list[str] = []
        while not any(line.strip().startswith("trading") for line in out):
            line = proc.stdout.readline().decode()
            assert line, f"ibhub run --sim exited: {out}"
            out.append(line)
        yield env, out
    finally:
        stop(proc)


def hub_log(tmp_path: Path) -> str:
    """The hub's log lines about leases and raw ids (the last 40), for a failure message."""
    lines = (tmp_path / HUB_LOG).read_text(errors="replace").splitlines()
    return "\nhub log:\n" + "\n".join([ln for ln in lines if "lease" in ln or "raw" in ln][-40:])


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_readme_examples_run_twice(hub: tuple[dict[str, str], list[str]],
                                   tmp_path: Path) -> None:
    env, printed = hub
    # `ibhub run --sim` prints the lines the README shows, in its order.
    shown = block("", "ibhub 0.1.0 running").splitlines()
    assert [ln.split()[0] for ln in printed] == [ln.split()[0] for ln in shown], printed

    script = tmp_path / "trade.py"
    script.write_text(block("python", "OrderRejectedError"))  # the trading example
    leases = [ln.split("#")[0].strip() for ln in block("bash", "ibhub lease").splitlines()]
    for attempt in (1, 2):
        done = run([sys.executable, str(script)], env)
        assert done.returncode == 0, f"run {attempt}: {done.stderr[-2000:]}"
        first = done.stdout.splitlines()[0]
        assert first.startswith("Filled 10.0"), done.stdout
        assert "quantity_limit" in done.stdout

        lease = run(shlex.split(leases[0].replace("ibhub", f"{sys.executable} -m ibhub", 1)),
                    env)
        assert lease.returncode == 0, lease.stderr
        client_id = lease.stdout.strip()
        token = re.search(r"token (\S+)", lease.stderr)
        assert client_id.isdigit() and token, lease.stderr
        for line in leases[1:]:
            cmd = line.replace("TOKEN", token.group(1)).replace("ID", client_id)
            done = run(shlex.split(cmd.replace("ibhub", f"{sys.executable} -m ibhub", 1)), env)
            assert done.returncode == 0, f"{line}: {done.stderr}{hub_log(tmp_path)}"
        assert f"released client id {client_id}" in done.stderr
