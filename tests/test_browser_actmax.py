"""A real browser on the two activation-maximization pages (tiny-gpt2): the live chart appears
while the job runs, Stop keeps what was computed, the reproducibility page renders; the
discrete and EPO-lite methods show their prompts, the corpus's bar and the frontier."""
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


def _run_method(page, app_url: str, path: str, prefix: str, label: str, settle: float) -> None:
    """Open a page, pick a method, 10 steps, Run, wait for the result."""
    _goto(page, app_url, path)
    page.locator(f".st-key-{prefix}_method").get_by_text(label, exact=True).click()
    wait_idle(page, 30)
    _slider_to(page, f"{prefix}_steps", "Home")          # 10 steps
    page.get_by_role("button", name="Run", exact=True).click()
    wait_idle(page, settle)
    assert page.locator("[data-testid='stException']").count() == 0


def test_discrete_run_shows_prompts_beside_the_corpus_bar(app_url, page):
    _run_method(page, app_url, "activation_max", "am", "discrete (token swaps)", 180)
    assert page.get_by_text("Best prompt's activation").count() == 1
    assert page.get_by_text("Optimized prompts").count() >= 1
    assert page.get_by_text(re.compile(r"The corpus's best windows of 5 tokens")).count() == 1
    assert page.get_by_text(re.compile(r"Look for: whether the best prompt beats")).count() == 1
    assert _rendered_charts(page) >= 2             # curves and the gap meter
    screenshot(page, "actmax-discrete")


def test_epo_run_draws_the_frontier(app_url, page):
    _run_method(page, app_url, "activation_max", "am", "EPO-lite (fluency frontier)", 240)
    assert page.get_by_text("EPO-lite: activation against cross-entropy").count() == 1
    assert _rendered_charts(page) >= 3             # curves, frontier, gap meter
    screenshot(page, "actmax-epo")


def test_reproducibility_page_with_discrete(app_url, page):
    _run_method(page, app_url, "reproducibility", "rp", "discrete (token swaps)", 240)
    assert page.get_by_text("Unique tokens, null control").count() == 1
    assert page.get_by_text(re.compile(r"random tokens, like discrete's starts")).count() == 1
    assert _rendered_charts(page) >= 5
    screenshot(page, "repro-discrete")
