"""deploy/prometheus (alert rules) and deploy/grafana (dashboard) name only metrics a
running hub exports: every ``ibhub_*`` / ``process_*`` name and every ``label="value"``
matcher in them is checked against a live hub's /metrics. (``promtool check rules`` and
``promtool test rules`` run in tests/unit/test_deploy_files.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ibhub.hub.server import HubServer
from tests.e2e.conftest import HubFactory, wait_until
from tests.e2e.test_health import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "ibhub-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "ibhub-dashboard.json"
NAME = re.compile(r"\b((?:ibhub|process)_[a-z_]+)\b(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)="([^"]*)"')


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule and every dashboard target."""
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((f"rule {rule['alert']}", rule["expr"]))
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            out.append((f"panel {panel['title']!r}", target["expr"]))
    for var in dash["templating"]["list"]:
        out.append((f"variable {var['name']}", var["definition"]))
    return out


async def test_rules_and_dashboard_name_existing_metrics(make_hub: HubFactory, clients) -> None:
    hub: HubServer = await make_hub(http_port=free_port(), orders=True)
    c = clients(hub.rpc_endpoint)
    await c.hello("metrics-check")
    await c.subscribe("AAPL")
    await wait_until(lambda: hub.subs.all() and hub.subs.all()[0].stream.ticks >= 1, 5.0,
                     "a tick")
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{hub.ops.http_port}/metrics") as resp:
        text = await resp.text()
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s.labels)

    exprs = expressions()
    assert len(exprs) > 20
    checked = set()
    for where, expr in exprs:
        for name, braces in NAME.findall(expr):
            assert name in samples, f"{where}: {name} is not on /metrics ({expr})"
            checked.add(name)
            for label, value in MATCHER.findall(braces or ""):
                if label in ("job", "instance"):
                    continue  # added by Prometheus when it scrapes
                assert any(lab.get(label) == value for lab in samples[name]), \
                    f"{where}: no {name} sample with {label}={value!r}"
    # The four the issue names are covered.
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {"IbhubGatewayDown", "IbhubNoTicksWhileConnected", "IbhubPacerBacklog",
            "IbhubSlowSubscribers"} <= rules
    assert {"ibhub_upstream_connected", "ibhub_last_tick_seconds", "ibhub_pacing_queued",
            "ibhub_events_dropped_total", "ibhub_ticks_in_total"} <= checked
