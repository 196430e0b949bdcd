"""A real browser trains a tiny SAE on the page and checks the token x latent heatmap."""
import pytest

from conftest import open_page, screenshot, wait_idle

pytestmark = pytest.mark.browser


def _charts(page):
    return page.locator("[data-testid='stVegaLiteChart']")


def test_train_then_heatmap_follows_the_latent_picker(app_url, page):
    open_page(page, app_url)            # the frame first: it registers the navigation
    open_page(page, f"{app_url}/sae_text")
    assert page.get_by_role("heading", name="Sparse autoencoder on a text").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
    epochs = page.get_by_label("Epochs")
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
    box = heat.bounding_box()
    assert box["width"] > 400 and box["height"] > 150, box
    # the 8 default latents as chips in the picker; the chart shrinks when one is removed
    picker = page.locator("[data-testid='stMultiSelect']").last
    chips = picker.locator("[data-tag]")
    assert chips.count() == 8
    screenshot(page, "sae-heatmap")
    picker.locator("button[aria-label^='Remove']").first.click()
    wait_idle(page)
    assert chips.count() == 7
    smaller = _charts(page).last.bounding_box()
    assert smaller["height"] < box["height"] - 10, (smaller, box)
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, "sae-heatmap-7")
