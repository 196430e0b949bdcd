"""A class on one server, in real browsers: three sessions on Activation maximization (tiny-gpt2,
2000 steps). Two with the same settings share one job and get identical numbers; the third,
with another seed, queues or runs beside them, and its Stop gives its page back quickly
without touching the other two."""
import re
import time

import pytest

from conftest import open_page, screenshot, wait_idle

pytestmark = pytest.mark.browser


# The page is back when it shows no Stop button and no "Running" widget. Timed in the browser,
# from the click event to the DOM change (a MutationObserver), so the test's own polling over
# Playwright (0.2-0.4 s a query on a loaded 2-core machine) does not count.
_TIME_STOP = """() => {
  const busy = () => document.querySelector("[data-testid='stStatusWidget']") ||
    [...document.querySelectorAll("[data-testid='stBaseButton-secondary']")]
      .some(b => b.innerText.includes("Stop"));
  window.__back = null;
  document.addEventListener("click", e => {
    if (window.__clicked == null && e.target.closest("button")?.innerText.includes("Stop"))
      window.__clicked = performance.now();
  }, true);
  new MutationObserver((_, obs) => {
    if (window.__clicked != null && !busy()) {
      window.__back = (performance.now() - window.__clicked) / 1000;
      obs.disconnect();
    }
  }).observe(document, {subtree: true, childList: true, characterData: true});
}"""


def _session(browser, url: str, seed: int):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    open_page(page, f"{url}/activation_max")
    thumb = page.locator(".st-key-am_steps input[type='range']")
    thumb.focus()
    page.keyboard.press("End")                       # 2000 steps: long enough to watch
    wait_idle(page, 30)
    box = page.get_by_role("spinbutton", name="Seed")
    box.fill(str(seed))
    box.press("Enter")
    wait_idle(page, 30)
    return ctx, page


def _final(page) -> str:
    metric = page.locator("[data-testid='stMetric']").filter(has_text="Final activation")
    return metric.first.locator("[data-testid='stMetricValue']").inner_text()


def _wait_for(page, pattern, timeout=120) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if page.get_by_text(re.compile(pattern)).count():
            return True
        time.sleep(0.1)
    return False


def test_three_sessions_share_queue_and_stop(fresh_app_url, browser):
    sessions = [_session(browser, fresh_app_url, seed) for seed in (0, 0, 5)]
    (_, a), (_, b), (_, c) = sessions
    for page in (a, b, c):
        page.get_by_role("button", name="Run", exact=True).click()
    assert _wait_for(b, r"Shared with 1 other session"), "the same settings did not share a job"
    assert _wait_for(c, r"Queued|Step \d+ of")       # c is shown where it stands at once

    c.evaluate(_TIME_STOP)
    c.get_by_test_id("stBaseButton-secondary").filter(has_text="Stop").click()
    back = c.wait_for_function("window.__back", timeout=10000).json_value()
    assert back < 2.0, f"the stopped page came back after {back:.1f} s"
    screenshot(c, "class-stopped")

    for page in (a, b):                               # the shared job ran on to the end
        wait_idle(page, 300)
        assert page.get_by_text("Stopped before the end").count() == 0
        assert page.locator("[data-testid='stException']").count() == 0
    assert _final(a) == _final(b)
    screenshot(a, "class-shared-done")
    for ctx, _ in sessions:
        ctx.close()
