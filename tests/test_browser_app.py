"""A real browser: every page renders, shows no exception; screenshots in test-artifacts/."""
import pytest

from conftest import open_page, screenshot

pytestmark = pytest.mark.browser

PAGES = ["", "hidden_states", "activation_max", "reproducibility", "sae_text", "laminar"]


def test_every_page_renders(app_url, page):
    for path in PAGES:
        open_page(page, f"{app_url}/{path}")
        assert page.locator("h1").count() >= 1, path
        assert page.locator("[data-testid='stException']").count() == 0, path
        screenshot(page, f"app-{path or 'home'}")
    open_page(page, app_url)
    assert page.get_by_text("Layers (blocks)").count() == 1
