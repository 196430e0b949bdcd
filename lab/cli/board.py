"""`board`: the class board from the terminal: export it, clear it, hide a share, share a
record file (checked as the app checks one)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("board", help="the class board: export, clear, hide, or share a record")
    act = p.add_mutually_exclusive_group(required=True)
    act.add_argument("--export", metavar="FILE", help="write the board to FILE (.csv or .json)")
    act.add_argument("--clear", action="store_true", help="remove every share")
    act.add_argument("--hide", metavar="SHARE_ID", help="hide one share from the board")
    act.add_argument("--share", metavar="RECORD", help="share a result's record (a JSON file)")
    act.add_argument("--show", action="store_true", help="print what the board says")
    p.add_argument("--code", help="the class code (LAB_CLASS_CODE or .streamlit/secrets.toml)")
    p.add_argument("--nickname", help="who shares (with --share)")
    p.add_argument("--board", help="the board's file (default: board.sqlite in the lab's cache)")
    p.set_defaults(func=_board)


def _board(args) -> int:
    from lab.board import Board, configured_code
    board = Board(args.board, class_code=configured_code())
    if args.export:
        return _export(board, Path(args.export), args.code)
    if args.clear:
        print(f"cleared {board.clear(args.code)} share(s)")
    elif args.hide:
        board.hide(args.hide, args.code)
        print(f"hid {args.hide}")
    elif args.share:
        return _share(board, Path(args.share), args.nickname)
    else:
        _show(board)
    return 0


def _export(board, path: Path, code: str | None) -> int:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("csv", "json"):
        raise ValueError(f"--export writes .csv or .json, not {path.name!r}.")
    path.write_text(board.export(fmt, code), encoding="utf-8")
    print(path)
    return 0


def _share(board, path: Path, nickname: str | None) -> int:
    if not nickname:
        raise ValueError("--share needs --nickname NAME (up to 24 characters).")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a JSON record ({type(e).__name__}).") from None
    sid, new = board.share(record, nickname)
    print(sid if new else f"{sid} (already on the board)")
    return 0


def _show(board) -> None:
    from lab.board import agreement, groups, sae_agreement
    from lab.board.stats import feature_sentence
    for g in groups(board.rows()):
        say = {"actmax": lambda: agreement(g).sentence(), "repro": lambda: agreement(g).sentence(),
               "sae": lambda: sae_agreement(g).sentence(), "feature": lambda: feature_sentence(g)}
        print(f"{g.experiment} on {g.model}: {say[g.experiment]()}", file=sys.stdout)
