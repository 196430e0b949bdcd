"""`info` and `download`: model facts, and pre-fetching for an offline workshop."""
from __future__ import annotations

from lab.cli import emit
from lab.models import DEVICES, MODEL_NAMES, download, load_model


def register(sub) -> None:
    p = sub.add_parser("info", help="load a model and print its facts")
    p.add_argument("--model", required=True, help=f"one of {MODEL_NAMES} or a folder")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)
    d = sub.add_parser("download", help="pre-fetch a model so it loads offline later")
    d.add_argument("name", help=f"one of {MODEL_NAMES}")
    d.set_defaults(func=_download)


def _info(args) -> int:
    emit(load_model(args.model, args.device).facts(), args.json)
    return 0


def _download(args) -> int:
    print(download(args.name))
    return 0
