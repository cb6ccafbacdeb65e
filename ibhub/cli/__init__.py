"""The ``ibhub`` command.

Each sub-command lives in the module that owns its job and is imported only when
it runs, so ``ibhub --help`` or ``ibhub explain`` never pays for ``ib_insync``.
To add a command, add one line to ``COMMANDS``: ``name -> "module:click_command"``.
"""

from __future__ import annotations

import importlib

import click

COMMANDS: dict[str, str] = {
    "sim": "ibhub.sim.cli:sim",
    "sim-fault": "ibhub.sim.cli:sim_fault",
    "run": "ibhub.cli.run:run",
    "explain": "ibhub.cli.ops:explain_cmd",
    "doctor": "ibhub.cli.ops:doctor_cmd",
    "status": "ibhub.cli.client:status",
    "tail": "ibhub.cli.client:tail",
    "lease": "ibhub.cli.client:lease",
    "names": "ibhub.cli.client:names",
    "orders": "ibhub.cli.orders:orders",
    "config": "ibhub.cli.config:config",
    "top": "ibhub.cli.top:top",
    "keys": "ibhub.cli.keys:keys",
    "record": "ibhub.cli.record:record",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ibhub")
def main() -> None:
    """ibhub: one Interactive Brokers API connection shared by many scripts."""
