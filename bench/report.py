"""Where a bench's measured table goes: bench/results/NAME.md, headed by the machine, the UTC
date and the commit it was measured on (so the numbers are never re-typed into a docstring).

    from bench.report import tee, write_result
    with tee() as lines:          # what main prints, still printed
        main()
    write_result("laminar_bench", lines)
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def commit() -> str:
    """Short hash, '+dirty' when the tree has uncommitted changes (the numbers may not match it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "no git"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def header() -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"machine: {platform.node()}, {cpu_model()}, {os.cpu_count()} cores; "
            f"{when}; commit {commit()}")


def write_result(name: str, lines: list[str]) -> Path:
    """Write bench/results/<name>.md (header, then the lines as one block); print its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(f"{header()}\n\n```\n" + "\n".join(lines) + "\n```\n")
    print(f"results: {path}")
    return path


class _Tee(io.TextIOBase):
    def __init__(self, out):
        self.out, self.buf = out, []

    def write(self, s: str) -> int:
        self.out.write(s)
        self.buf.append(s)
        return len(s)

    def flush(self) -> None:
        self.out.flush()


@contextlib.contextmanager
def tee():
    """Collect what is printed inside (still printing it); yields the list of lines, filled on exit."""
    lines: list[str] = []
    t = _Tee(sys.stdout)
    with contextlib.redirect_stdout(t):
        yield lines
    lines.extend("".join(t.buf).splitlines())
