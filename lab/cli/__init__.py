"""`python -m lab <command> ...`: the experiments headless.

Each module in this package defines `register(subparsers)`, adding one or more commands
whose handler is `set_defaults(func=handler)`; a handler returns an exit code.
Bad arguments or input: exit code 2 and one line on stderr, never a traceback; anything
unforeseen also ends in one line (exit 2), and `--debug` (anywhere on the line) prints the
traceback before it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import re
import sys
import traceback

DEBUG = "--debug"
_NO_TRACEBACK = f"run with {DEBUG} for the traceback"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse takes "-1,2" or "-1e-3" for an option and says "expected one argument";
        # no flag here starts with a digit, so a dash then a digit is always a value
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lab", description=__doc__.splitlines()[0])
    parser.add_argument(DEBUG, action="store_true", help="on an error, print the traceback too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def emit(payload, as_json: bool) -> None:
    """Print a result: JSON for machines, `key: value` lines for people."""
    if as_json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        for key, value in payload.items():
            print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG in argv
    argv = [a for a in argv if a != DEBUG]   # accepted anywhere, not only before the command
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(one_line(e), file=sys.stderr)
        return 2


def one_line(e: Exception) -> str:
    """The sentence an error ends the CLI with: a bad input's own; anything unforeseen its
    first line and the way to the traceback."""
    from lab.models import ModelUnavailable
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, UsageError):
        return first
    if isinstance(e, (ValueError, ModelUnavailable, OSError)):
        return f"error: {first}"
    if isinstance(e, MemoryError) or "allocate" in first or "out of memory" in first:
        return f"error: out of memory ({first}); try smaller settings ({_NO_TRACEBACK})."
    return f"error: {type(e).__name__}: {first} ({_NO_TRACEBACK})."
