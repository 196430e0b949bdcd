"""A class on one server: N headless Chromium sessions press Run on Activation maximization
together, against one fresh `streamlit run app.py`.

    python bench/class_load.py --sessions 8 --mode same      # everyone on the defaults
    python bench/class_load.py --sessions 8 --mode seeds     # session i uses seed i
    python bench/class_load.py --sessions 30 --running 8     # 30 open, 8 of them press Run
    python bench/class_load.py --board --sessions 30         # 30 share to the class board at once

Prints the solo time (one session alone, on a seed nobody else uses, so no cache helps), each
session's time to its queue note and to its result, the ratio to solo, the server's peak RSS,
and whether the numbers are right: same settings -> identical numbers in every session;
different seeds -> each equal to that seed's solo run (computed headless here first).

Needs playwright and /usr/bin/chromium (as the browser tests). Model: smollm2-135m.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE = "activation_max"
RESULT = "Final activation"        # the metric that appears with a result
QUEUED = re.compile(r"Queued|Step|Starting")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(model: str):
    port = free_port()
    env = {**os.environ, "LAB_DEFAULT_MODEL": model}
    srv = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless",
                            "true", "--server.port", str(port), "--server.address", "127.0.0.1"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    return srv, f"http://127.0.0.1:{port}"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_idle(page, settle: float = 180, quiet: float = 2.0) -> None:
    t0, idle = time.time(), None
    while time.time() - t0 < settle:
        if page.locator("[data-testid='stStatusWidget']").count():
            idle = None
        elif idle is None:
            idle = time.time()
        elif time.time() - idle >= quiet:
            return
        time.sleep(0.2)


def open_session(browser, url: str, seed: int):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{url}/{PAGE}", timeout=120000)
    page.wait_for_selector("[data-testid='stSidebar']", timeout=120000)
    wait_idle(page)
    box = page.get_by_role("spinbutton", name="Seed")
    box.fill(str(seed))
    box.press("Enter")
    wait_idle(page)
    return page


def final_activation(page) -> str | None:
    metric = page.locator("[data-testid='stMetric']").filter(has_text=RESULT)
    if not metric.count():
        return None
    return metric.first.locator("[data-testid='stMetricValue']").inner_text()


def press_run_together(pages) -> list[dict]:
    """Click Run on every page (a few ms apart), then poll until each shows its result."""
    rows = [{"clicked": None, "noted": None, "done": None, "value": None} for _ in pages]
    for page, row in zip(pages, rows):
        page.get_by_role("button", name="Run", exact=True).click()
        row["clicked"] = time.perf_counter()
    while any(r["done"] is None for r in rows):
        for page, row in zip(pages, rows):
            if row["done"] is not None:
                continue
            if row["noted"] is None and page.get_by_text(QUEUED).count():
                row["noted"] = time.perf_counter()
            value = final_activation(page)
            if value is not None and not page.locator("[data-testid='stStatusWidget']").count():
                row["done"], row["value"] = time.perf_counter(), value
        if time.perf_counter() - rows[0]["clicked"] > 1800:
            raise TimeoutError("no result after 30 min")
        time.sleep(0.1)
    return rows


def headless_values(model: str, seeds) -> dict[int, str]:
    """Each seed's solo number, as the page formats it ({:.3f}), at the server's thread count
    per job (another count sums in another order: the numbers drift apart over the steps)."""
    import torch
    from lab.actmax import ActMaxConfig, run
    from lab.models import load_model
    from lab.runner import THREADS_PER_JOB
    torch.set_num_threads(THREADS_PER_JOB)
    lm = load_model(model, "cpu")
    return {s: f"{run(lm, ActMaxConfig(seed=s)).final.mean():.3f}" for s in seeds}



# ---------------------------------------------------------------- the class board (--board)

BOARD_COUNT = re.compile(r"(\d+) shares on the board")


def board_records(n: int) -> list[dict]:
    """n real activation-maximization records (tiny-gpt2's smoke settings, seeds 0..n-1)."""
    import dataclasses
    import torch
    from lab import registry
    from lab.board import share_record
    from lab.models import load_model
    torch.set_num_threads(1)
    lm, exp = load_model("tiny-gpt2", "cpu"), registry.get("actmax")
    return [share_record(exp.run(lm, dataclasses.replace(exp.smoke_config(), seed=s)))
            for s in range(n)]


def share_at_once(path: str, records: list[dict]) -> tuple[list[float], list[Exception]]:
    """One thread per student (as the server's sessions), released together by a barrier;
    each share also clicked twice. Returns each first share's acknowledgement time."""
    import threading
    from lab.board import Board
    go, acks, errors = threading.Barrier(len(records)), [0.0] * len(records), []

    def student(i: int) -> None:
        board = Board(path)
        go.wait()
        try:
            for _ in range(2):
                board.share(records[i], f"student {i}", share_id=f"bench-{i}")
                acks[i] = acks[i] or time.perf_counter()
        except Exception as e:   # noqa: BLE001  (counted and printed)
            errors.append(e)

    threads = [threading.Thread(target=student, args=(i,)) for i in range(len(records))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acks, errors


def board_count(page) -> int:
    m = BOARD_COUNT.search(" ".join(page.locator("[data-testid='stCaptionContainer']")
                                    .all_inner_texts()))
    return int(m.group(1)) if m else 0


def board_load(sessions: int, viewers: int) -> None:
    """30 students share at once while `viewers` browsers watch the board page: rows, lost,
    duplicated, how long after the last share each viewer shows them all, exceptions."""
    import tempfile
    from lab.board import Board
    records = board_records(sessions)
    path = str(Path(tempfile.mkdtemp()) / "board.sqlite")
    os.environ["LAB_BOARD"] = path           # the server (started below) inherits it
    from playwright.sync_api import sync_playwright
    srv, url = start_server("tiny-gpt2")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
            pages = []
            for _ in range(viewers):
                page = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
                page.goto(f"{url}/board", timeout=120000)
                page.get_by_text("Nothing shared yet").wait_for(timeout=120000)
                pages.append(page)
            acks, errors = share_at_once(path, records)
            last = max(acks)
            seen = [None] * viewers
            while any(s is None for s in seen) and time.perf_counter() - last < 60:
                for i, page in enumerate(pages):
                    if seen[i] is None and board_count(page) == sessions:
                        seen[i] = time.perf_counter() - last
                time.sleep(0.05)
            wait_idle(pages[0], settle=30)
            shown = [board_count(pg) for pg in pages]
            exceptions = sum(pg.locator("[data-testid='stException']").count() for pg in pages)
            browser.close()
    finally:
        rss = peak_rss_mb(srv.pid)
        srv.terminate()
    rows = Board(path).rows(hidden=True)
    ids = [r["share_id"] for r in rows]
    want = {f"bench-{i}" for i in range(sessions)}
    print(f"{sessions} sharers at once (threads, each share clicked twice): first to last "
          f"acknowledgement {last - min(acks):.2f} s; errors {len(errors)} {errors[:1]}")
    print(f"rows on the board: {len(rows)}; lost {len(want - set(ids))}; duplicated "
          f"{len(ids) - len(set(ids))}")
    print(f"viewers showing all {sessions}: " + ", ".join(
        "never" if s is None else f"{s:.2f} s" for s in seen) + " after the last share; "
          f"counts shown {shown}; exceptions on the pages {exceptions}")
    print(f"server peak RSS: {rss:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=8, help="browser sessions open")
    ap.add_argument("--running", type=int, help="of those, how many press Run (default: all)")
    ap.add_argument("--mode", choices=["same", "seeds"], default="same")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--board", action="store_true",
                    help="the class board instead: --sessions sharers at once, --viewers watching")
    ap.add_argument("--viewers", type=int, default=3, help="with --board: browsers on the board page")
    args = ap.parse_args()
    if args.board:
        return board_load(args.sessions, args.viewers)
    running = args.running or args.sessions
    seeds = [0] * running if args.mode == "same" else list(range(running))
    expected = headless_values(args.model, sorted(set(seeds))) if args.mode == "seeds" else {}

    from playwright.sync_api import sync_playwright
    srv, url = start_server(args.model)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
            solo_page = open_session(browser, url, seed=999)
            solo = press_run_together([solo_page])[0]
            solo_s = solo["done"] - solo["clicked"]
            print(f"solo: {solo_s:.1f} s (seed 999)")
            pages = [open_session(browser, url, seed=s) for s in seeds]
            idle = [open_session(browser, url, seed=0) for _ in range(args.sessions - running)]
            print(f"{len(pages)} sessions press Run, {len(idle)} more open; mode {args.mode}")
            rows = press_run_together(pages)
            errors = sum(pg.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
                         .count() for pg in [solo_page, *pages, *idle])
            browser.close()
    finally:
        rss = peak_rss_mb(srv.pid)
        srv.terminate()
    t0 = min(r["clicked"] for r in rows)
    for i, (s, r) in enumerate(zip(seeds, rows)):
        note = f"{r['noted'] - r['clicked']:.1f} s" if r["noted"] else "never"
        ok = "" if not expected else ("  = solo" if r["value"] == expected[s] else f"  != solo {expected[s]}")
        print(f"session {i} seed {s}: note after {note}, result after {r['done'] - r['clicked']:.1f} s "
              f"({(r['done'] - r['clicked']) / solo_s:.2f}x solo), value {r['value']}{ok}")
    last = max(r["done"] for r in rows) - t0
    print(f"last result {last:.1f} s after the first click = {last / solo_s:.2f}x solo "
          f"({last / (solo_s * len(rows)):.2f}x of {len(rows)} x solo)")
    values = {r["value"] for r in rows}
    if args.mode == "same":
        print(f"identical numbers in every session: {len(values) == 1} ({values})")
    else:
        print(f"every session equals its seed's solo run: {all(r['value'] == expected[s] for s, r in zip(seeds, rows))}")
    print(f"exceptions or errors shown on the {len(pages) + len(idle) + 1} pages: {errors}")
    print(f"server peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
