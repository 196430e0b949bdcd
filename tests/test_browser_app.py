"""A real browser: every page renders, shows no exception; screenshots in test-artifacts/."""
import pytest

from conftest import open_page, screenshot
from lab.registry import EXPERIMENTS

pytestmark = pytest.mark.browser

PAGES = [""] + [e.url_path for e in EXPERIMENTS]


def test_every_page_renders(app_url, page):
    for path in PAGES:
        open_page(page, f"{app_url}/{path}")
        assert page.locator("h1").count() >= 1, path
        assert page.locator("[data-testid='stException']").count() == 0, path
        screenshot(page, f"app-{path or 'home'}")
    open_page(page, app_url)
    assert page.get_by_text("Layers (blocks)").count() == 1


def test_first_visit_to_a_deep_link_has_the_frame(fresh_app_url, page):
    """A link shared in class (e.g. /laminar) opened first on a fresh server gets the model
    picker and the full menu, not a bare page (what a pages/ folder would serve)."""
    open_page(page, f"{fresh_app_url}/laminar")
    assert page.get_by_role("heading", name="Laminar profile").count() == 1
    sidebar = page.locator("[data-testid='stSidebar']")
    assert sidebar.locator("[data-testid='stSelectbox']").count() >= 1       # the model picker
    assert sidebar.get_by_text("Activation maximization").count() == 1       # the whole menu
    assert page.locator("[data-testid='stException']").count() == 0
