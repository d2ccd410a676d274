"""`testbed` command line: a thin layer over the library. One module per command family."""
from __future__ import annotations

import sys

import click

from ..errors import TestbedError


class _Group(click.Group):
    """Prints TestbedError (bad input, missing capability) as one line, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TestbedError as exc:
            click.echo(f"testbed: error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("testbed: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compute-hub-testbed")
def main() -> None:
    """Network emulation and benchmarking testbed for interconnected compute hubs."""


def _register() -> None:
    from . import demo, netcmds, report, run, topo

    for module in (topo, netcmds, run, report, demo):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
