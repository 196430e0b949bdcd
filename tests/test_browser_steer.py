"""The steering page in a real browser: press Run, the continuations stream in (a screenshot
mid-stream when the model is slow enough to catch one: LAB_BROWSER_MODEL=smollm2-135m), then
both charts and the three shaded continuations are drawn, with no exception."""
import time

import pytest

from conftest import open_page, screenshot, wait_idle
from test_browser_lens import drawn_charts, wait_for_charts

pytestmark = pytest.mark.browser

N_CHARTS = 2  # the token strip, the sweep (two panels, one chart)


def test_run_streams_then_draws_every_chart(app_url, page):
    open_page(page, f"{app_url}/steer")
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Press Run").count() == 1
    screenshot(page, "steer-before-run")
    page.get_by_role("button", name="Run").click()
    t0, streamed = time.time(), False
    while time.time() - t0 < 240 and drawn_charts(page) < N_CHARTS:
        live = page.locator("[data-testid='stCode']").count()
        if live >= 3 and page.get_by_role("button", name="Stop").count() and not streamed:
            streamed = True
            screenshot(page, "steer-mid-stream")
        time.sleep(0.1)
    assert wait_for_charts(page, N_CHARTS) == N_CHARTS
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Look for a gap on the left").count() == 1
    assert page.get_by_text("steered x 2", exact=True).count() >= 1
    assert page.get_by_text("control x 2", exact=True).count() >= 1
    screenshot(page, "steer-after-run")


def test_bad_input_is_one_sentence(app_url, page):
    open_page(page, f"{app_url}/steer")
    box = page.get_by_role("textbox", name="Contrast A|B")
    box.fill(" Love|")
    box.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Run").click()
    wait_idle(page)
    assert page.get_by_text("side B is empty").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
