"""The SDK must not pull in ib_insync or the hub's internals."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_sdk_does_not_import_ib_insync_or_hub_internals() -> None:
    code = (
        "import sys\n"
        "from ibhub.client import Hub, AsyncHub\n"
        "import ibhub.client_cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ib_insync', 'eventkit')\n"
        "             or m in ('ibhub.hub', 'ibhub.upstream', 'ibhub.config')\n"
        "             or m.startswith('ibhub.sim'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "", f"the SDK imported: {result.stdout.strip()}"
    assert "ib_insync" not in result.stdout
