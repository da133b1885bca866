"""The `latentforge` command: one module per command group, each with add_commands(sub).

A command module imports what its commands need only when they run, so `latentforge backends`
and `--help` stay instant. Flags that several commands share are spelled once, in `arguments`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from latentforge.errors import InputError, LatentforgeError

COMMAND_MODULES = ("demo", "train", "edit", "export", "run", "codec", "bench", "tune", "serve", "system")


class _OneLineErrorParser(argparse.ArgumentParser):
    """A usage error is a bad input like any other: one line on stderr and exit status 2, no usage dump."""

    def error(self, message: str):
        raise InputError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from latentforge import __version__

    parser = _OneLineErrorParser(prog="latentforge",
                                 description="Train VAEs and GANs, export them, run them as image makers.")
    parser.add_argument("--version", action="version", version=f"latentforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        options = build_parser().parse_args(args)
        options.argv = args
        options.func(options)
    except LatentforgeError as e:
        print(f"latentforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentforge: interrupted", file=sys.stderr)
        return 130
    return 0
