"""A real browser on the laminar page: the curves render, the x-axis toggles, Stop keeps the
finished layers. Screenshots in test-artifacts/screens/."""
import re

import pytest

from conftest import open_page, screenshot, wait_idle

pytestmark = pytest.mark.browser


def _set(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page, 60)


def _adjust(page, windows: int, tokens: int, epochs: int) -> None:
    page.get_by_text("Adjust the preset").click()
    _set(page, "Windows", windows)
    _set(page, "Tokens per window", tokens)
    _set(page, "Epochs per layer", epochs)


def _charts(page):
    return page.locator("[data-testid='stVegaLiteChart']")


def test_curves_render_and_axis_toggles(app_url, page):
    open_page(page, f"{app_url}/laminar")
    assert page.locator("h1").filter(has_text="Laminar profile").count() == 1
    assert page.get_by_text(re.compile(r"Estimated time: about")).count() == 1
    _adjust(page, 2, 24, 2)
    page.get_by_role("button", name="Run").click()
    page.get_by_text(re.compile(r"Wall time .* for 3 layers")).wait_for(timeout=120_000)
    wait_idle(page, 60)
    assert page.locator("[data-testid='stException']").count() == 0
    charts = _charts(page)
    assert charts.count() == 4
    for i in range(4):  # vega-embed drew each chart (canvas or svg), with its axis titles
        assert charts.nth(i).locator("canvas, svg").count() >= 1
    assert page.get_by_text(re.compile(r"tiny-gpt2: density")).count() == 1
    screenshot(page, "laminar-layers")
    page.get_by_role("radiogroup", name="x-axis").get_by_text("relative depth").click()
    wait_idle(page, 60)
    assert _charts(page).count() == 4
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, "laminar-relative-depth")


def test_stop_keeps_finished_layers(app_url, page):
    open_page(page, f"{app_url}/laminar")
    _adjust(page, 4, 64, 300)   # seconds per layer on tiny-gpt2: time to press Stop
    page.get_by_role("button", name="Run").click()
    page.get_by_text(re.compile(r"[12]/3 layers done")).first.wait_for(timeout=300_000)
    page.locator("[data-testid='stMain']").get_by_role("button", name="Stop").click()
    wait_idle(page, 60)
    assert page.get_by_text(re.compile("Stopped before the end")).count() == 1
    assert page.get_by_text(re.compile(r"stopped: [12] of 3 layers")).count() == 1
    assert _charts(page).count() == 4
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, "laminar-stopped")
