"""The class server's memory promise: N sessions open, M of them working through the pages that
keep the most, against one fresh `streamlit run app.py`; the server's peak RSS against the
bound the code enforces.

    python bench/class_memory.py --sessions 30 --running 8

Each working session: the hidden-states page (its default forward), then the SAE page at its
widest expansion (32x) trained three times (seeds 0, 1, 2: three runs the page keeps), then
a rescore (other target words). The others sit on the home page. Prints the server's peak RSS
(VmHWM), the bound (the model's share measured before any session, plus the runner's cache,
lab.hidden's forwards, lab.corpus's tokens and SESSION_BYTES per open session), the number of
exception boxes seen, and writes the table to bench/results/class_memory.md.

Needs playwright and /usr/bin/chromium (as the browser tests). Model: smollm2-135m.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from class_load import FLAGS, ROOT, start_server, wait_idle  # noqa: E402


def rss_mb(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def exceptions(pages) -> int:
    return sum(p.locator("[data-testid='stException']").count() for p in pages)


def all_idle(pages, settle: float = 1800) -> None:
    for p in pages:
        wait_idle(p, settle=settle)


def set_seed(page, seed: int) -> None:
    box = page.get_by_role("spinbutton", name="Seed")
    box.fill(str(seed))
    box.press("Enter")


def sae_settings(page) -> str:
    """The widest expansion (the slider's last stop) and a few epochs: memory, not time."""
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("3")
    epochs.press("Enter")
    wait_idle(page)
    thumb = page.locator("[data-testid='stSlider']").filter(
        has_text="Latents (x input width)").get_by_role("slider")
    thumb.focus()
    thumb.press("End")
    wait_idle(page)
    return page.get_by_text(re.compile(r"\d+ latents on \d+-wide")).first.inner_text().rstrip(".")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--running", type=int, default=8)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from lab.cache import ResultCache  # noqa: F401  (the bound's parts, read from the code)
    from lab.corpus.windows import TOKEN_BYTES
    from lab.hidden import FORWARD_BYTES
    from lab.runner import CACHE_BYTES
    from ui.jobs import SESSION_BYTES

    srv, url = start_server(args.model)
    samples = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
            first = browser.new_context().new_page()
            first.goto(url, timeout=180000)
            first.wait_for_selector("[data-testid='stSidebar']", timeout=180000)
            # the model loads on first use: one hidden-states visit, then the server's base
            first.goto(f"{url}/hidden_states", timeout=180000)
            wait_idle(first, settle=600)
            base = rss_mb(srv.pid)
            pages = [first] + [browser.new_context().new_page() for _ in range(args.sessions - 1)]
            for p in pages[1:]:
                p.goto(url, timeout=180000)
            all_idle(pages)
            work = pages[:args.running]
            t0 = time.time()
            for p in work:
                p.goto(f"{url}/hidden_states", timeout=180000)
            all_idle(work)
            samples.append(rss_mb(srv.pid))
            for p in work:
                p.goto(f"{url}/sae_text", timeout=180000)
            all_idle(work)
            shapes = {sae_settings(p) for p in work}
            print("SAE shape:", shapes, file=sys.stderr)
            for seed in range(3):
                for i, p in enumerate(work):
                    set_seed(p, 100 * i + seed)     # every run distinct: no cache hit
                all_idle(work)
                for p in work:
                    p.get_by_role("button", name="Train").click()
                for p in work:
                    p.get_by_text("survive the control").first.wait_for(timeout=1800000)
                all_idle(work)
                samples.append(rss_mb(srv.pid))
            for p in work:                           # a rescore: other target words
                box = p.get_by_role("textbox", name="Target words (comma separated)")
                box.fill("France, Germany")
                box.press("Enter")
            all_idle(work)
            samples.append(rss_mb(srv.pid))
            boxes = exceptions(pages)
            wall = time.time() - t0
            browser.close()
        peak = rss_mb(srv.pid, "VmHWM:")
    finally:
        srv.terminate()
    mib = 1 << 20
    bound = base + (CACHE_BYTES + FORWARD_BYTES + TOKEN_BYTES + args.sessions * SESSION_BYTES) / mib
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [
        f"# class memory, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit {commit}, {platform.node()} ({platform.machine()}, {__import__('os').cpu_count()} cores)",
        "",
        f"{args.sessions} sessions open, {args.running} working (hidden states; SAE page 32x trained "
        f"3 times: {', '.join(sorted(shapes))}; a rescore), model {args.model}, {wall:.0f} s.",
        "",
        "| measure | MB |", "|---|---|",
        f"| server RSS after the model loaded (base) | {base:,.0f} |",
        *[f"| RSS after step {i + 1} | {s:,.0f} |" for i, s in enumerate(samples)],
        f"| **peak RSS (VmHWM)** | **{peak:,.0f}** |",
        f"| bound: base + cache {CACHE_BYTES / mib:.0f} + forwards {FORWARD_BYTES / mib:.0f} + tokens "
        f"{TOKEN_BYTES / mib:.0f} + {args.sessions} x {SESSION_BYTES / mib:.0f} MiB | {bound:,.0f} |",
        "",
        f"exception boxes: {boxes}; peak under the bound: {peak < bound}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / "class_memory.md"
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
