"""Shared fixtures.

``sim``: a started simulated Gateway on a free loopback port with a fixed seed
(printed, so a failure can be replayed). Tests that need other settings build
their own ``SimGateway(SimConfig(...))``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator

import pytest

from ibhub.sim import SimConfig, SimGateway

SIM_SEED = 20240102

# Hubs started by tests (in-process or as `ibhub run` subprocesses) journal their
# orders here, never in the user's ~/.local/share/ibhub.
os.environ.setdefault("IBHUB_DATA_DIR", tempfile.mkdtemp(prefix="ibhub-tests-"))
# The SDK's script-name secrets (docs/security.md, "Script names"): one directory for
# the whole session, as the data dir above (whose names.db binds the names) is one.
os.environ.setdefault("IBHUB_NAMES_DIR", tempfile.mkdtemp(prefix="ibhub-test-names-"))
# `ibhub run --sim` hubs in tests open no fault-control port (the default 4010 would be
# shared by every test and by an operator's own simulator); a test that needs one names
# a free port (tests/e2e/test_statuspage_browser.py).
os.environ.setdefault("IBHUB_SIM_CONTROL_PORT", "-1")


@pytest.fixture
async def sim() -> AsyncIterator[SimGateway]:
    print(f"sim seed {SIM_SEED}")
    async with SimGateway(SimConfig(host="127.0.0.1", port=0, seed=SIM_SEED)) as gateway:
        yield gateway
