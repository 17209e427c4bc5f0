"""The ``npllm`` command: train | generate | eval | gradcheck | bench | assignment | info.

Each subcommand is a module here holding its parser (``add_parser``) and its handler (``run``); this
package is the only place that configures the process (:func:`npllm.process.configure`), and nothing in
the library imports it.  A user mistake ends with one line naming the flag and exit status 2, never a
traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from npllm.errors import CheckpointError, UsageError

COMMANDS = ("train", "generate", "eval", "gradcheck", "bench", "assignment", "info")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (argparse prints the whole usage block first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _module(name: str):
    return importlib.import_module(f"npllm.commands.{'eval_' if name == 'eval' else name}")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``npllm`` argument parser."""
    parser = _Parser(prog="npllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        _module(name).add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``npllm`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = _module(args.command).run(args)
    except UsageError as exc:
        print(f"npllm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"npllm {args.command}: error: --checkpoint: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:          # `npllm info | head`: the reader left early; not worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # so exit's flush cannot fail again
        return 1
    return int(status or 0)
