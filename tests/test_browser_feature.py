"""A real browser: the feature view runs on the default SAE, and the SAE page's latent table
opens a latent in it with the SAE and the latent filled in."""
import pytest

from conftest import open_page, screenshot, wait_idle

pytestmark = pytest.mark.browser


def _no_exception(page):
    assert page.locator("[data-testid='stException']").count() == 0


def test_run_shows_the_three_kinds_of_evidence(app_url, page):
    open_page(page, f"{app_url}/feature")
    assert page.get_by_role("heading", name="Feature view").count() == 1
    _no_exception(page)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("What it writes: the output effect").wait_for(timeout=300000)
    wait_idle(page)
    _no_exception(page)
    for text in ("What it fires on", "What ablating it changes", "context (peak token highlighted)"):
        assert page.get_by_text(text).count() >= 1, text
    assert page.locator("mark").count() == 20                  # the peak token of each example
    assert page.locator("[data-testid='stVegaLiteChart']").count() >= 4
    screenshot(page, "feature-view")


def test_the_sae_page_opens_a_latent_in_the_feature_view(app_url, page):
    open_page(page, f"{app_url}/sae_text")
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("3")
    epochs.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Train").click()
    page.get_by_text("survive the control").first.wait_for(timeout=120000)
    wait_idle(page)
    page.get_by_role("button", name="Open in the feature view").click()
    page.get_by_role("heading", name="Feature view").wait_for(timeout=60000)
    wait_idle(page)
    _no_exception(page)
    sae = page.get_by_role("textbox", name="Folder or hub id")
    assert "/saes/" in sae.input_value()
    latent = page.get_by_role("spinbutton", name="Latent (empty: picked for the target words)")
    assert latent.input_value() != ""
    assert page.get_by_text("Load SAE:").count() == 1           # the preview read the folder
    screenshot(page, "feature-from-sae-page")
