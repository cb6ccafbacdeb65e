"""Operator commands: ``ibhub explain`` (IB error codes) and ``ibhub doctor`` (pre-flight).

Kept apart from the hub so that both start fast and import neither ib_insync nor
the hub: they must work exactly when the hub or the Gateway does not.
"""

from __future__ import annotations

import json
import textwrap

import click

from ibhub import errors


def _explanation_text(exp: errors.Explanation) -> str:
    flags = [str(exp.category)]
    if errors.is_warning(exp.code):
        flags.append("does not end a request")
    if errors.concerns_everyone(exp.code):
        flags.append("sent to every client")
    if not exp.known:
        flags.append("not in ibhub's table")
    wrap = textwrap.TextWrapper(width=88, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(
        [
            f"{exp.code}  ({', '.join(flags)})",
            wrap.fill(f"meaning: {exp.meaning}"),
            wrap.fill(f"action:  {exp.action}"),
        ]
    )


@click.command("explain")
@click.argument("codes", nargs=-1)
@click.option("--all", "show_all", is_flag=True, help="List every code in the table.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def explain_cmd(codes: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Explain IB error/status codes: meaning, what to do, category.

    Example: ibhub explain 326 2104 10197
    """
    if show_all:
        found = errors.all_codes()
    else:
        if not codes:
            raise click.UsageError("give one or more IB error codes, or --all")
        found = []
        for raw in codes:
            try:
                found.append(errors.explain(int(raw)))
            except ValueError:
                raise click.BadParameter(
                    f"{raw!r} is not an integer IB error code", param_hint="CODES"
                ) from None
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in found], indent=2))
    else:
        click.echo("\n\n".join(_explanation_text(e) for e in found))
