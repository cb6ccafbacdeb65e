"""The SDK must not pull in the IB client library or the hub's internals."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_sdk_does_not_import_the_ib_library_or_hub_internals() -> None:
    code = (
        "import sys\n"
        "from ibhub.client import Hub, AsyncHub\n"
        "import ibhub.cli.client\n"
        "libs = ('ib_insync', 'ib_async', 'eventkit', 'aeventkit')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in libs\n"
        "             or m in ('ibhub.hub.server', 'ibhub.ib.session', 'ibhub.config')\n"
        "             or m.startswith('ibhub.sim'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "", f"the SDK imported: {result.stdout.strip()}"
