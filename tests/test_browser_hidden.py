"""The hidden-states page in a real browser: every chart is drawn; uploads, good and binary."""
import time

import pytest

from conftest import open_page, screenshot, wait_idle
from lab.hidden import default_text

pytestmark = pytest.mark.browser

N_CHARTS = 6  # two scatters, the histogram grid, the spread line, two heatmaps


def drawn_charts(page) -> int:
    """Charts whose vega canvas is laid out and has ink on it (not just an empty element)."""
    return page.evaluate("""() => [...document.querySelectorAll("[data-testid='stVegaLiteChart']")]
        .filter(chart => {
            const c = chart.querySelector("canvas");
            if (!c || c.width < 50 || c.height < 50) return false;
            const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let ink = 0;
            for (let i = 0; i < px.length; i += 4 * 97)  // a sample of pixels
                if (px[i + 3] > 0 && (px[i] < 200 || px[i + 1] < 200 || px[i + 2] < 200)) ink++;
            return ink > 20;
        }).length""")


def wait_for_charts(page, n: int, limit: float = 90) -> int:
    t0 = time.time()
    while drawn_charts(page) < n and time.time() - t0 < limit:
        time.sleep(0.3)
    return drawn_charts(page)


def full_screenshot(page, name: str):
    """Streamlit scrolls inside its main block: grow the viewport so the shot has it all."""
    tall = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": int(tall) + 50})
    time.sleep(1.5)
    path = screenshot(page, name)
    page.set_viewport_size({"width": 1400, "height": 1000})
    return path


def open_hidden(page, app_url):
    open_page(page, f"{app_url}/hidden_states")
    assert page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").count() >= 1


def test_every_chart_is_drawn(app_url, page):
    open_hidden(page, app_url)
    assert page.locator("[data-testid='stException']").count() == 0
    assert wait_for_charts(page, N_CHARTS) == N_CHARTS
    assert page.get_by_text("Tokens in the text").count() == 1
    assert page.get_by_text("Counts on a log axis show the tails").count() == 1
    full_screenshot(page, "hidden-states-default")


def test_uploads_binary_is_one_sentence_text_is_analysed(app_url, page, tmp_path, tiny):
    open_hidden(page, app_url)
    upload = page.locator("[data-testid='stFileUploader'] input[type='file']")
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    upload.set_input_files(str(binary))
    wait_idle(page)
    assert page.get_by_text("This file looks binary").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stVegaLiteChart']").count() == 0

    text = default_text().split("\n\n")[0]  # the first paragraph only: a different token count
    good = tmp_path / "paragraph.txt"
    good.write_text(text, encoding="utf-8")
    upload.set_input_files(str(good))
    wait_idle(page)
    assert wait_for_charts(page, N_CHARTS) == N_CHARTS
    n_tokens = len(tiny.tokenizer(text)["input_ids"])
    metric = page.locator("[data-testid='stMetric']").filter(has_text="Tokens in the text")
    assert metric.inner_text().split()[-1] == str(n_tokens)
    full_screenshot(page, "hidden-states-upload")
