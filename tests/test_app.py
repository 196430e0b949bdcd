"""AppTest: every page of the frame runs without exception."""
import pytest

from conftest import app_test
from lab.registry import EXPERIMENTS

PAGES = ["views/home.py"] + [e.view for e in EXPERIMENTS]


@pytest.mark.parametrize("page", PAGES)
def test_page_runs(page):
    at = app_test(page)
    assert not at.exception, at.exception
    assert at.title, "every page has a title"


def test_home_shows_model_facts():
    at = app_test()
    assert not at.exception
    labels = {m.label: m.value for m in at.metric}
    assert labels["Layers (blocks)"] == "3"
    assert labels["Residual width d_model"] == "64"


def test_sidebar_has_model_device_seed():
    at = app_test()
    assert at.selectbox(key="model_name").value == "tiny-gpt2"
    assert "cpu" in at.selectbox(key="device").options
    assert at.number_input(key="seed").value == 0


def test_unloadable_model_says_why_and_offers_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = app_test(model="gpt2-xl")
    assert not at.exception
    assert any("Could not load gpt2-xl" in e.value for e in at.error)
    assert any("smollm2-135m" in b.label for b in at.button)


def test_home_lists_every_experiment():
    at = app_test()
    text = " ".join(m.value for m in at.markdown)
    for e in EXPERIMENTS:
        assert e.title in text and e.summary in text
