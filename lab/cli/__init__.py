"""`python -m lab <command> ...`: the experiments headless.

Each module in this package defines `register(subparsers)`, adding one or more commands
whose handler is `set_defaults(func=handler)`; a handler returns an exit code.
Bad arguments or input: exit code 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lab", description=__doc__.splitlines()[0])
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
    from lab.models import ModelUnavailable
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except UsageError as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        return 2
    except (ValueError, ModelUnavailable, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
