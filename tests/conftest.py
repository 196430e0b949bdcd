"""Shared fixtures: seeded RNGs, the tiny and the real model, AppTest and a live app server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny tensors: a second intra-op thread only adds
    spin-waiting on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    from lab.models import load_model
    return load_model("tiny-gpt2", "cpu")


@pytest.fixture(scope="session")
def smol():
    """SmolLM2-135M with real weights (first run converts the GGUF, ~30 s; then ~2 s)."""
    from lab.models import load_model
    return load_model("smollm2-135m", "cpu")


def app_test(page: str | None = None, model: str = "tiny-gpt2", timeout: float = 120):
    """AppTest of the whole app (frame + sidebar), switched to `page` (e.g. "views/laminar.py")."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.session_state["model_name"] = model
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextmanager
def serve_app():
    """`streamlit run app.py` on a free loopback port, with tiny-gpt2 as the default model."""
    port = _free_port()
    env = {**os.environ, "LAB_DEFAULT_MODEL": os.environ.get("LAB_BROWSER_MODEL", "tiny-gpt2")}
    srv = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                            "--server.headless", "true", "--server.port", str(port),
                            "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.terminate()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()


@pytest.fixture(scope="session")
def app_url():
    """One app server shared by the browser tests."""
    with serve_app() as url:
        yield url


@pytest.fixture
def fresh_app_url():
    """A server nobody has visited yet (for first-visit behaviour)."""
    with serve_app() as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def open_page(pg, url: str, settle: float = 120) -> None:
    """Navigate and wait until Streamlit has finished running the script."""
    pg.goto(url, timeout=60000)
    pg.wait_for_selector("[data-testid='stSidebar']", timeout=60000)
    wait_idle(pg, settle)


def wait_idle(pg, settle: float = 120, quiet: float = 2.0) -> None:
    """Until the app has been idle (no running-status widget) for `quiet` seconds in a row.

    Streamlit shows its status widget only ~0.7 s after a rerun starts, so one look right after
    a click can see "idle" before the run has even shown up.
    """
    t0, idle_since = time.time(), None
    while time.time() - t0 < settle:
        if pg.locator("[data-testid='stStatusWidget']").count():
            idle_since = None
        elif idle_since is None:
            idle_since = time.time()
        elif time.time() - idle_since >= quiet:
            return
        time.sleep(0.2)


def screenshot(pg, name: str) -> Path:
    out = ARTIFACTS / "screens"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    # Streamlit scrolls inside its main block, so full_page alone shows one screen: grow the
    # viewport to the content first.
    height = pg.evaluate("() => { const m = document.querySelector(\"[data-testid='stMain']\");"
                         " return m ? m.scrollHeight : document.body.scrollHeight; }")
    size = pg.viewport_size or {"width": 1400, "height": 1000}
    pg.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 50, 12000))})
    time.sleep(0.5)
    pg.screenshot(path=str(path), full_page=True)
    pg.set_viewport_size(size)
    return path


def pytest_collection_modifyitems(config, items):
    """Ray and GPU tests run only when a `-m` names them: a `-m` of one's own (say
    `-m "not browser"`) replaces pyproject's default and would otherwise bring them back."""
    expr = config.getoption("markexpr") or ""
    off = [m for m in ("ray", "gpu") if m not in expr]
    drop = {id(i) for i in items if any(i.get_closest_marker(m) for m in off)}
    if drop:
        config.hook.pytest_deselected(items=[i for i in items if id(i) in drop])
        items[:] = [i for i in items if id(i) not in drop]


@pytest.fixture(scope="session")
def tiny_llama():
    """A random Llama with untied unembedding and grouped-query attention (4 heads, 2 kv)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from lab.arch import arch_for
    from lab.models import LabModel, tiny_tokenizer
    import torch
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return LabModel(name="tiny-llama", model=model, tokenizer=tok, arch=arch_for(model),
                    device=torch.device("cpu"), load_seconds=0.0, source="random (test)")
