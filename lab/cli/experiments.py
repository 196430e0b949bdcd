"""One command per registry experiment, its arguments generated from the config's fields.

    python -m lab NAME --model M [--device D] [--FIELD VALUE ...] [--json] [--out DIR] [--quiet]

A field becomes `--field-name` (underscores as dashes) with the field's type, default and
help; a `Literal` field gets its choices, a bool `--x/--no-x`, a tuple a comma-separated
list, a `param(file=True)` text `--NAME-file PATH`. A nested config's fields are flattened
(`LaminarConfig.sae.k` is `--k`), prefixed with the nested field's name only where two names
would clash; a nested `seed` is not offered: the experiment's own `--seed` is the one seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from lab.cli import emit
from lab.experiment import Progress, build, field_of, fields, replace_paths
from lab.models import DEVICES, MODEL_NAMES, load_model
from lab.registry import EXPERIMENTS, Experiment

_RESERVED = {"model", "device", "json", "out", "quiet", "threads", "cache"}


def register(sub) -> None:
    for exp in EXPERIMENTS:
        p = sub.add_parser(exp.name, help=exp.summary, description=exp.summary)
        p.add_argument("--model", default="smollm2-135m", help=f"one of {MODEL_NAMES} or a folder")
        p.add_argument("--device", default="auto", choices=DEVICES)
        p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
        p.add_argument("--json", action="store_true", help="print the whole record as JSON")
        p.add_argument("--out", type=Path, help="write record.json and every table as CSV here")
        p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        p.add_argument("--cache", action="store_true",
                       help="use the lab's disk cache (the one `warm` fills and the app's server "
                            "reads): serve a result it holds for these settings, else compute it "
                            "(at the server's threads per job) and keep it there")
        try:
            dests = add_config_arguments(p, exp.config_class)
            presets = getattr(exp.load(), "PRESETS", None)
            if presets:
                p.add_argument("--preset", choices=list(presets), help="start from these settings "
                               "(the other flags adjust them; default: the config's defaults)")
        except (ImportError, AttributeError) as e:   # one broken module must not take the CLI down
            p.set_defaults(func=lambda args, exp=exp, e=e: _unavailable(exp, e))
            continue
        p.set_defaults(func=lambda args, exp=exp, dests=dests: _run(exp, dests, args))


def _unavailable(exp: Experiment, error: Exception) -> int:
    raise ValueError(f"the {exp.name} experiment cannot load here: {error}")


# ---------------------------------------------------------------- arguments from fields

def cli_paths(cls, prefix: str = "", taken: set[str] | None = None) -> list[tuple[str, str]]:
    """(field path like "sae.k", flag name like "k") for every CLI field of `cls`, nested
    configs flattened."""
    taken = set(_RESERVED) if taken is None else taken
    top = {f.name for f in fields(cls)}
    out = []
    for f in fields(cls):
        if not f.meta.get("cli", True):
            continue
        if dataclasses.is_dataclass(f.base):
            continue
        flag = f.name if f.name not in taken else f"{prefix.rstrip('.').replace('.', '_')}_{f.name}"
        out.append((prefix + f.name, flag))
        taken.add(flag)
    for f in fields(cls):
        if dataclasses.is_dataclass(f.base):
            nested = [(p, fl) for p, fl in cli_paths(f.base, f"{prefix}{f.name}.", taken | top)
                      if not (p.endswith(".seed") and "seed" in top)]
            out += nested
            taken |= {fl for _, fl in nested}
    return out


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> list[tuple[str, str]]:
    """Add one argument per field; returns the (field path, dest) pairs `config_from` reads."""
    pairs = cli_paths(cls)
    for path, flag in pairs:
        f = field_of(cls, path)
        name = "--" + flag.replace("_", "-")
        kw = {"dest": flag, "default": argparse.SUPPRESS}
        help_ = f.help.replace("%", "%%")
        if f.meta.get("file"):
            parser.add_argument(name + "-file", type=Path, metavar="PATH",
                                help=f"{help_} (a UTF-8 text file)", **kw)
        elif f.base is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction,
                                help=f"{help_} (default: {f.default})", **kw)
        elif f.choices is not None:
            parser.add_argument(name, choices=f.choices, help=f"{help_} (default: {f.default})", **kw)
        else:
            parser.add_argument(name, type=_parser_of(f), metavar=_metavar(f),
                                help=f"{help_} (default: {f.default})", **kw)
    return pairs


def _parser_of(f):
    base = f.base
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        return lambda text: _split(text, item)
    return {int: int, float: float}.get(base, str)


def _split(text: str, item):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(item(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}")


def _metavar(f) -> str:
    if typing.get_origin(f.base) is tuple:
        return "A,B,..."
    return {int: "N", float: "X"}.get(f.base, "TEXT")


def config_from(cls, pairs: list[tuple[str, str]], args: argparse.Namespace, base=None):
    """The config the arguments describe: `base` (a preset) or the defaults for what was not
    given (validated)."""
    given = {}
    for path, flag in pairs:
        if hasattr(args, flag):
            value = getattr(args, flag)
            if field_of(cls, path).meta.get("file"):
                value = read_text_file(f"--{flag.replace('_', '-')}-file", value)
            given[path] = value
    return build(cls, given) if base is None else replace_paths(base, given)


def read_text_file(flag: str, path: Path) -> str:
    """A `--NAME-file` as text, or one sentence naming the file: the app's upload check
    (lab.hidden.decode_upload: binary, not UTF-8) with the flag and the path in front."""
    from lab.hidden import decode_upload
    try:
        data = path.expanduser().read_bytes()
    except OSError as e:
        raise ValueError(f"{flag} {path}: {_why(e)}; give a UTF-8 text file.") from None
    try:
        text = decode_upload(data)
    except ValueError as e:
        raise ValueError(f"{flag} {path}: {e}") from None
    if not text:   # "" means the bundled text: an empty file must not
        raise ValueError(f"{flag} {path} is empty: give a file with some text.")
    return text


def _why(e: OSError) -> str:
    """An OSError in words, without Python's "[Errno 2]" and the repeated path."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "a folder, not a file"
    return (e.strerror or str(e)).lower()


# ---------------------------------------------------------------- running

class _Printer:
    """Progress on stderr: about twenty lines a run, not one per step."""

    def __init__(self, quiet: bool):
        self.quiet, self.last = quiet, -1.0

    def __call__(self, p: Progress) -> None:
        if self.quiet or not (p.fraction - self.last >= 0.05 or p.done >= p.total):
            return
        self.last = p.fraction
        print(p.message or f"{p.unit} {p.done:g}/{p.total:g}", file=sys.stderr)


def _run(exp: Experiment, pairs, args) -> int:
    preset = getattr(args, "preset", None)
    base = exp.load().PRESETS[preset] if preset else None
    cfg = config_from(exp.config_class, pairs, args, base)   # bad values fail before the model loads
    if args.cache and args.threads is not None:
        raise ValueError("--cache computes at the server's threads per job (a thread count "
                         "changes a result's last bits): leave out --threads.")
    if args.cache:
        from lab.runner import THREADS_PER_JOB
        args.threads = THREADS_PER_JOB
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    lm = load_model(args.model, args.device)
    result = _cached_run(exp, lm, cfg, args)
    record = result.to_record()
    if args.out:
        write_outputs(result, record, args.out)
    if args.json:
        emit(record, True)
    else:
        brief = getattr(result, "brief", None)
        emit(brief() if brief else {k: v for k, v in record.items() if not isinstance(v, (list, dict))},
             False)
    return 0


def _cached_run(exp: Experiment, lm, cfg, args):
    """`exp.run`, through the disk cache with --cache (its key is the runner's: run options
    such as laminar's --ray are not in it; a run that writes a folder always runs)."""
    from lab.cache import DiskCache
    disk = DiskCache() if args.cache and not getattr(cfg, "writes_files", False) else None
    key = (lm.name, str(lm.device), exp.name, cfg)
    result = disk.get(key) if disk is not None else None
    if result is not None:
        if not args.quiet:
            print(f"{exp.name}: served from the disk cache ({disk.folder}).", file=sys.stderr)
        return result
    result = exp.run(lm, cfg, _Printer(args.quiet))
    if disk is not None:
        disk.put(key, result)
    return result


def write_outputs(result, record: dict, folder: Path) -> None:
    """record.json, one CSV per table, and whatever the result exports itself (e.g. weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record, indent=2, default=str))
    for name, frame in result.frames().items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    export = getattr(result, "export", None)
    if export is not None:
        export(folder)
