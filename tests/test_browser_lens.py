"""The layer-by-layer page in a real browser: press Run, every chart is drawn, no exception;
the attention controls redraw. (LAB_BROWSER_MODEL=smollm2-135m runs it on real weights.)"""
import time

import pytest

from conftest import open_page, screenshot, wait_idle

pytestmark = pytest.mark.browser

N_CHARTS = 6  # lens heatmap, two per-layer lines, one head, all heads, token-0 share


def drawn_charts(page) -> int:
    """Charts whose vega canvas is laid out and has ink on it."""
    return page.evaluate("""() => [...document.querySelectorAll("[data-testid='stVegaLiteChart']")]
        .filter(chart => {
            const c = chart.querySelector("canvas");
            if (!c || c.width < 50 || c.height < 50) return false;
            const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let ink = 0;
            for (let i = 0; i < px.length; i += 4 * 97)
                if (px[i + 3] > 0 && (px[i] < 200 || px[i + 1] < 200 || px[i + 2] < 200)) ink++;
            return ink > 20;
        }).length""")


def wait_for_charts(page, n: int, limit: float = 240) -> int:
    t0 = time.time()
    while drawn_charts(page) < n and time.time() - t0 < limit:
        time.sleep(0.5)
    return drawn_charts(page)


def test_run_draws_every_chart(app_url, page):
    open_page(page, f"{app_url}/lens")
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Press Run").count() == 1
    screenshot(page, "lens-before-run")
    page.get_by_role("button", name="Run").click()
    assert wait_for_charts(page, N_CHARTS) == N_CHARTS
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Look for the row where the colour changes").count() == 1
    screenshot(page, "lens-after-run")
    page.get_by_role("radiogroup", name="Colour").get_by_text("KL(final layer").click()
    wait_idle(page)
    assert wait_for_charts(page, N_CHARTS) == N_CHARTS
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, "lens-kl")
