"""A real browser on the two activation-maximization pages (tiny-gpt2): the live chart appears
while the job runs, Stop keeps what was computed, and the reproducibility page renders."""
import re
import time

import pytest

from conftest import open_page, screenshot, wait_idle

pytestmark = pytest.mark.browser


def _goto(page, app_url: str, path: str) -> None:
    open_page(page, f"{app_url}/{path}")
    assert page.get_by_role("button", name="Run", exact=True).count() == 1


def _slider_to(page, key: str, key_press: str) -> None:
    thumb = page.locator(f".st-key-{key} input[type='range']")
    thumb.focus()
    page.keyboard.press(key_press)
    wait_idle(page, 30)


def _progress_step(page) -> int:
    text = page.locator("[data-testid='stProgress']").inner_text()
    m = re.search(r"Step (\d+) of", text)
    return int(m.group(1)) if m else -1


def _rendered_charts(page) -> int:
    """Charts that vega has actually drawn (a canvas or svg inside the chart element)."""
    return page.locator("[data-testid='stVegaLiteChart'] canvas, "
                        "[data-testid='stVegaLiteChart'] svg.marks").count()


def test_live_chart_appears_and_stop_keeps_the_partial_result(app_url, page):
    _goto(page, app_url, "activation_max")
    _slider_to(page, "am_steps", "End")          # 2000 steps: long enough to watch and stop
    assert page.locator(".st-key-am_steps input[type='range']").input_value() == "2000"
    page.get_by_role("button", name="Run", exact=True).click()

    deadline, seen = time.time() + 120, []
    while time.time() < deadline:
        if page.locator("[data-testid='stProgress']").count() and _rendered_charts(page):
            step = _progress_step(page)
            if step > 0 and (not seen or step > seen[-1]):
                seen.append(step)
            if len(seen) >= 3:                    # the chart and the bar moved on twice
                break
        time.sleep(0.2)
    assert len(seen) >= 3, f"live progress not seen: {seen}"
    assert page.locator("[data-testid='stStatusWidget']").count() == 1   # still running
    screenshot(page, "actmax-live")

    # our Stop button (Streamlit's own header also has one, which would stop everything)
    page.get_by_test_id("stBaseButton-secondary").filter(has_text="Stop").click()
    wait_idle(page, 60)
    assert page.get_by_text("Stopped before the end").count() == 1
    caption = page.get_by_text(re.compile(r"of 2000 steps")).first.inner_text()
    done = int(re.search(r"(\d+) of 2000 steps", caption).group(1))
    assert seen[-1] <= done < 2000
    assert page.get_by_text("Nearest real tokens").count() == 1
    assert page.locator("[data-testid='stDataFrame']").count() >= 1
    assert _rendered_charts(page) >= 2             # final curves and the gap meter
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, "actmax-stopped")


def test_reproducibility_page_runs_to_the_end(app_url, page):
    _goto(page, app_url, "reproducibility")
    _slider_to(page, "rp_steps", "Home")         # 10 steps, 10 restarts
    page.get_by_role("button", name="Run", exact=True).click()
    wait_idle(page, 120)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Unique tokens, null control").count() == 1
    assert page.get_by_text("Stopped before the end").count() == 0
    assert _rendered_charts(page) >= 5             # curves, unique, frequencies, Jaccard, cosine
    screenshot(page, "repro-done")
