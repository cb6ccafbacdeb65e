"""``ibhub config show``: the effective settings and where each value came from.

Uses exactly the loader ``ibhub run`` uses (:func:`ibhub.config.load_settings_with_sources`),
so what it prints is what the hub would run with. Port auto-detection probes the
standard ports like ``ibhub run`` does; ``--no-detect`` skips it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ibhub.config import ConfigError, HubSettings, load_settings_with_sources


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def settings_table(settings: HubSettings, sources: dict[str, str]) -> list[dict[str, Any]]:
    """One row per setting: name, value (JSON-friendly), source."""
    return [
        {"name": name, "value": _plain(getattr(settings, name)), "source": sources[name]}
        for name in HubSettings.model_fields
    ]


@click.group("config")
def config() -> None:
    """Inspect the hub's configuration."""


@config.command("show")
@click.option("--config", "config_file", default=None, metavar="FILE",
              help="TOML config file (as for `ibhub run --config`).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-detect", is_flag=True, help="Do not probe the standard ports.")
@click.option("--changed", is_flag=True, help="Only settings that are not defaults.")
def show(config_file: str | None, as_json: bool, no_detect: bool, changed: bool) -> None:
    """Print the effective settings (defaults < config file < environment/.env < flags)."""
    try:
        settings, sources = load_settings_with_sources(
            config=config_file, detect_port=not no_detect
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    rows = settings_table(settings, sources)
    if changed:
        rows = [r for r in rows if r["source"] != "default"]
    if as_json:
        click.echo(json.dumps({r["name"]: {"value": r["value"], "source": r["source"]}
                               for r in rows}, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=0)
    vwidth = min(40, max((len(json.dumps(r["value"])) for r in rows), default=0))
    for r in rows:
        shown = json.dumps(r["value"]) if not isinstance(r["value"], str) else r["value"]
        click.echo(f"{r['name']:<{width}}  {shown:<{vwidth}}  # {r['source']}")
