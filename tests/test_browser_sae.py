"""A real browser trains a tiny SAE on the page and checks the token x latent heatmap."""
import re
import time

import pytest

from conftest import open_page, screenshot, wait_idle

pytestmark = pytest.mark.browser


def _charts(page):
    return page.locator("[data-testid='stVegaLiteChart']")


def _box(locator, timeout: float = 30):
    """The element's bounding box once it is laid out (a redrawn chart is briefly detached)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        box = locator.bounding_box() if locator.count() else None
        if box and box["height"] > 0:
            return box
        time.sleep(0.3)
    raise AssertionError("element never got a layout box")


def test_train_then_heatmap_follows_the_latent_picker(app_url, page):
    open_page(page, f"{app_url}/sae_text")
    assert page.get_by_role("heading", name="Sparse autoencoder on a text").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
    epochs = page.get_by_role("spinbutton", name="Epochs")   # not its help button
    epochs.fill("3")
    epochs.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Train").click()
    page.get_by_text("survive the control").first.wait_for(timeout=120000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Token x latent heatmap").count() == 1

    heat = _charts(page).last
    heat.scroll_into_view_if_needed()
    box = _box(heat)
    assert box["width"] > 400 and box["height"] > 150, box
    # the 8 default latents as chips in the picker; the chart shrinks when one is removed
    picker = page.locator("[data-testid='stMultiSelect']").last
    chips = picker.locator("[data-tag]")
    assert chips.count() == 8
    screenshot(page, "sae-heatmap")
    picker.locator("button[aria-label^='Remove']").first.click()
    wait_idle(page)
    assert chips.count() == 7
    deadline = time.time() + 60      # the chart is redrawn once the rerun's data arrives
    while (smaller := _box(_charts(page).last))["height"] >= box["height"] - 10:
        assert time.time() < deadline, (smaller, box)
        time.sleep(0.5)
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, "sae-heatmap-7")


def _wait_epoch(page, n: int, timeout: float = 120) -> None:
    """Until the progress text says at least epoch n (epochs can tick faster than frames)."""
    deadline = time.time() + timeout
    progress = page.get_by_text(re.compile(r"Epoch \d+/5000"))
    while time.time() < deadline:
        if progress.count():
            m = re.search(r"Epoch (\d+)/", progress.first.inner_text())
            if m and int(m.group(1)) >= n:
                return
        time.sleep(0.2)
    raise AssertionError(f"never reached epoch {n}")


def test_stop_keeps_the_model_trained_so_far(app_url, page):
    open_page(page, f"{app_url}/sae_text")
    epochs = page.get_by_role("spinbutton", name="Epochs")   # not its help button
    epochs.fill("5000")
    epochs.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Train").click()
    _wait_epoch(page, 3)                                              # the live progress text
    _charts(page).first.wait_for(timeout=30000)     # the live curves (vega loads lazily)
    # the page's Stop (not the header's, which stops the script without our handling)
    page.locator("[data-testid='stBaseButton-secondary']", has_text="Stop").click()
    page.get_by_text("Stopped at epoch").first.wait_for(timeout=60000)
    page.get_by_text("survive the control").first.wait_for(timeout=120000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    banner = page.locator("[data-testid='stAlert']", has_text="Stopped at epoch").first.inner_text()
    done = int(re.search(r"Stopped at epoch (\d+) of 5000", banner).group(1))
    assert 3 <= done < 5000
    screenshot(page, "sae-stopped")
