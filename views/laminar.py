"""Laminar profile (seed 004): a fresh sparse autoencoder on every layer's MLP output.

Corpus (lab.corpus: Wikipedia, bundled, pasted) -> LaminarConfig (preset + adjustments) ->
estimate -> lab.laminar.sweep (progress with ETA, curves growing layer by layer, Stop keeps
finished layers) -> charts of every model run in this session, overlaid -> CSV / JSON.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace

import pandas as pd
import streamlit as st

from lab import corpus, laminar
from lab.charts import laminar as charts
from ui.common import current_model, first_line, seed
from ui.jobs import Job, stop_button

RESULTS = "lam_results"    # session_state: {model name: {"rows", "config", "corpus", ...}}
SOURCES = ["Wikipedia article", "Bundled LED text", "Paste or upload"]
X_LABELS = {"layer index": "layer", "relative depth": "relative_depth"}

st.title("Laminar profile")
st.markdown(
    "Take ~10k tokens of an article, capture every layer's MLP output in one pass, train a "
    "**fresh sparse autoencoder (SAE) per layer**, and plot how sparse each layer's code is "
    "and how well it reconstructs, against depth. Run a small and a large model to overlay "
    "them (use *relative depth* to line up 12 and 36 layers). The seed expects density to "
    "rise with depth and the reconstruction error to be lowest in the middle layers.")

lm = current_model()


# ---------------------------------------------------------------- corpus

@st.cache_data(show_spinner=False, max_entries=16)
def _tokens(model_name: str, sha: str, text: str, _lm):
    return corpus.tokenize(_lm.tokenizer, text)


def _fetch() -> None:
    """Fetch button: the article (or one sentence on why not) goes into the session."""
    title = st.session_state.get("lam_article", corpus.DEFAULT_ARTICLE)
    st.session_state.pop("lam_fetch_error", None)
    try:
        art = corpus.fetch_wikipedia(title, allowed_hosts=corpus.allowed_hosts_from_env(),
                                     use_cache=not st.session_state.get("lam_refresh", False))
        st.session_state["lam_fetched"] = (title, art)
    except corpus.CorpusError as e:
        st.session_state["lam_fetch_error"] = (title, first_line(e))


def _wikipedia() -> corpus.Article:
    c1, c2, c3 = st.columns([5, 1, 1], vertical_alignment="bottom")
    title = c1.text_input("Article title or URL", value=corpus.DEFAULT_ARTICLE, key="lam_article",
                          help="Only https pages on wikipedia.org hosts are fetched (the lab may "
                               "run on a shared server). A fetched article is cached on disk and "
                               "works offline afterwards.")
    c2.button("Fetch", key="lam_fetch", on_click=_fetch, icon=":material/download:")
    c3.checkbox("Refresh", key="lam_refresh", help="Download again instead of using the disk cache.")
    fetched = st.session_state.get("lam_fetched")
    if fetched and fetched[0] == title:
        return fetched[1]
    error = st.session_state.get("lam_fetch_error")
    if error and error[0] == title:
        st.error(f"{error[1]} Using the bundled LED text instead.", icon=":material/error:")
        return corpus.bundled_article()
    try:
        cached = corpus.cached_article(title)
    except corpus.CorpusError as e:
        st.error(f"{first_line(e)} Using the bundled LED text instead.", icon=":material/error:")
        return corpus.bundled_article()
    if cached is not None:
        return cached
    st.info("Not fetched yet: press **Fetch** to download it. Until then the bundled LED text "
            "(written for this project, works offline) serves.", icon=":material/info:")
    return corpus.bundled_article()


def _pasted() -> corpus.Article | None:
    up = st.file_uploader("A UTF-8 text file", type=["txt", "md"], key="lam_upload")
    text = st.text_area("…or paste a text", key="lam_paste", height=150,
                        placeholder="A few thousand words of English prose.")
    try:
        if up is not None:
            return corpus.text_article(up.getvalue().decode("utf-8", errors="replace"),
                                       up.name, source="file")
        return corpus.text_article(text)
    except corpus.CorpusError as e:
        st.warning(first_line(e), icon=":material/edit_note:")
        return None


def _corpus() -> tuple[corpus.Article, object] | None:
    st.subheader("1. Corpus")
    source = st.radio("Source", SOURCES, key="lam_source", horizontal=True)
    if source == SOURCES[0]:
        art = _wikipedia()
    elif source == SOURCES[1]:
        art = corpus.bundled_article()
    else:
        art = _pasted()
    if art is None:
        return None
    ids = _tokens(lm.name, art.sha256, art.text, lm)
    where = {"live": "fetched live", "cache": "from the disk cache (offline copy)",
             "bundled": "bundled with the lab", "pasted": "pasted", "file": "uploaded"}[art.source]
    cols = st.columns(4)
    cols[0].metric(f"Tokens ({lm.name})", f"{ids.numel():,}")
    cols[1].metric("Characters", f"{art.n_chars:,}")
    cols[2].metric("Source", art.source)
    cols[3].metric("Revision", art.revision_id or "–")
    link = f"[{art.title}]({art.url})" if art.url else art.title
    st.caption(f"{link} — {where}, {art.fetched_at}; sha256 {art.sha256[:12]}…")
    with st.expander("Show the text"):
        st.text(art.text[:3000] + ("…" if art.n_chars > 3000 else ""))
    return art, ids


# ---------------------------------------------------------------- settings

def _settings() -> laminar.LaminarConfig:
    st.subheader("2. Settings")
    name = st.radio("Preset", ["quick", "seed"], key="lam_preset", horizontal=True,
                    captions=["fewer tokens, epochs and latents: the trend in ~2 min on 2 CPU cores",
                              "the seed: 10 x 1024 tokens, 75 epochs, 8x latents"])
    base = laminar.PRESETS[name]
    with st.expander("Adjust the preset", icon=":material/tune:"):
        c = st.columns(6)
        n_windows = c[0].number_input("Windows", 1, 200, base.n_windows, key=f"lam_windows_{name}")
        window_len = c[1].number_input("Tokens per window", 2, lm.n_ctx, min(base.window_len, lm.n_ctx),
                                       key=f"lam_len_{name}")
        epochs = c[2].number_input("Epochs per layer", 1, 1000, base.epochs, key=f"lam_epochs_{name}")
        expansion = c[3].number_input("Latents / d_model", 1, 64, base.expansion, key=f"lam_exp_{name}")
        activation = c[4].selectbox("SAE", ["relu", "topk"], key=f"lam_act_{name}",
                                    format_func={"relu": "ReLU + L1 (seed)", "topk": "Top-K"}.get,
                                    help="With Top-K every token has exactly k active latents, "
                                         "so density is fixed at k / latents: compare MSE instead.")
        l1 = c[5].number_input("L1 weight", 0.0, 1.0, base.l1, step=1e-3, format="%.4f",
                               key=f"lam_l1_{name}", disabled=activation == "topk",
                               help="ReLU + L1 only. Inputs are scaled to unit variance per layer, "
                                    "so the same weight means the same on every layer. Larger: "
                                    "sparser codes, larger error.")
    try:
        return replace(base, n_windows=int(n_windows), window_len=int(window_len),
                       epochs=int(epochs), expansion=int(expansion), activation=activation,
                       l1=float(l1), seed=seed())
    except ValueError as e:
        st.error(first_line(e))
        st.stop()


def _use(name: str, n_windows: int, window_len: int) -> None:
    st.session_state[f"lam_windows_{name}"] = n_windows
    st.session_state[f"lam_len_{name}"] = window_len


def _windows(ids, cfg: laminar.LaminarConfig):
    """The sampled windows, or None after saying what fits (with buttons to take it)."""
    try:
        return corpus.sample_windows(ids, cfg.n_windows, cfg.window_len, cfg.seed)
    except corpus.CorpusTooShort as e:
        st.warning(str(e), icon=":material/short_text:")
        for n, t in e.offers:
            st.button(f"Use {n} x {t}", key=f"lam_fit_{n}_{t}", on_click=_use,
                      args=(st.session_state["lam_preset"], n, t))
        return None


@st.cache_data(show_spinner="Measuring this machine's speed…", max_entries=16)
def _rates(model_name: str, device: str, window_len: int, expansion: int, activation: str,
           k: int, batch_size: int, _lm):
    cfg = laminar.LaminarConfig(window_len=window_len, expansion=expansion, activation=activation,
                                k=k, batch_size=batch_size)
    return laminar.measure_rates(_lm, cfg)


def _estimate(cfg: laminar.LaminarConfig) -> laminar.Estimate:
    rates = _rates(lm.name, str(lm.device), cfg.window_len, cfg.expansion, cfg.activation,
                   cfg.k, cfg.batch_size, lm)
    est = laminar.estimate(lm, cfg, rates)
    bound = (" The ReLU + L1 rate was measured on dense steps; real codes go sparse after a "
             "few epochs and train faster, so this is an upper bound." if cfg.activation == "relu" else "")
    st.markdown(f"**Estimated time: about {laminar.format_duration(est.total_seconds)}** — forward "
                f"passes {est.capture_gflop:,.3g} GFLOP at a measured {est.forward_gflops:,.3g} "
                f"GFLOP/s, then {est.n_layers} SAEs x {est.layer_gflop:,.3g} GFLOP at "
                f"{est.sae_gflops:,.3g} GFLOP/s.{bound}")
    return est


# ---------------------------------------------------------------- run

def _store(model: str, rows: pd.DataFrame, cfg, art, finished: bool, wall: float) -> None:
    st.session_state.setdefault(RESULTS, {})[model] = {
        "rows": rows, "config": asdict(cfg), "corpus": art.meta(), "finished": finished,
        "wall_seconds": wall, "n_layers": lm.n_layers}


def _run(windows, cfg, art, est) -> None:
    job = Job("laminar")
    job.start({"model": lm.name, **asdict(cfg)})
    stop_button(job)
    bar = st.progress(0.0, text="Starting…")
    live = st.empty()
    n = len(cfg.layers_of(lm))
    t0 = time.perf_counter()

    def wall() -> float:
        return time.perf_counter() - t0

    def on_layer(row, rows):
        _store(lm.name, rows, cfg, art, False, wall())
        job.update(rows, progress=f"{len(rows)} of {n} layers finished")
        with live.container():
            _draw_pair(_all_rows(), X_LABELS[st.session_state.get("lam_x", "layer index")])

    try:
        rows = laminar.sweep(lm, windows, cfg, on_layer=on_layer, estimate_=est,
                             on_progress=lambda p: bar.progress(p.fraction, text=p.message()))
    except (ValueError, RuntimeError) as e:
        st.error(f"The sweep failed: {first_line(e)}")
        return
    _store(lm.name, rows, cfg, art, True, wall())
    job.finish(rows)
    st.rerun()   # redraw without the Stop button and the live charts


# ---------------------------------------------------------------- results

def _all_rows() -> pd.DataFrame:
    runs = st.session_state.get(RESULTS, {})
    frames = [r["rows"] for r in runs.values() if len(r["rows"])]
    return pd.concat(frames, ignore_index=True) if frames else laminar.frame([])


CHARTS = {"density": charts.density_chart, "nmse": charts.nmse_chart, "mse": charts.mse_chart,
          "dead_fraction": charts.dead_chart}


def _draw_pair(rows: pd.DataFrame, x: str, keys: tuple[str, str] = ("density", "nmse")) -> None:
    for column, key in zip(st.columns(2), keys):
        with column:
            st.altair_chart(CHARTS[key](rows, x), width="stretch")
            st.caption(charts.LOOK_FOR[key])


def _results() -> None:
    runs = st.session_state.get(RESULTS, {})
    rows = _all_rows()
    if rows.empty:
        return
    st.subheader("3. Profiles")
    Job("laminar").caption()
    x = X_LABELS[st.radio("x-axis", list(X_LABELS), key="lam_x", horizontal=True,
                          help="Relative depth = layer / (layers - 1): lines up models of "
                               "different depth.")]
    _draw_pair(rows, x)
    _draw_pair(rows, x, ("mse", "dead_fraction"))
    for s in laminar.shape_summary(rows).to_dict(orient="records"):
        run = runs[s["model"]]
        done = "" if run["finished"] else f" (stopped: {s['layers']} of {run['n_layers']} layers)"
        st.markdown(f"- {laminar.describe_shape(s)}{done} Wall time "
                    f"{laminar.format_duration(run['wall_seconds'])} for {s['layers']} layers.")
    _downloads(rows, runs)


def _downloads(rows: pd.DataFrame, runs: dict) -> None:
    c1, c2, c3 = st.columns(3)
    c1.download_button("Download CSV", rows.to_csv(index=False), "laminar_profile.csv",
                       "text/csv", key="lam_csv", icon=":material/download:")
    meta = {m: {k: v for k, v in r.items() if k != "rows"} for m, r in runs.items()}
    c2.download_button("Download JSON (rows + config, corpus, seed)",
                       laminar.export_json(rows, meta),
                       "laminar_profile.json", "application/json", key="lam_json",
                       icon=":material/data_object:")
    c3.button("Clear results", key="lam_clear", icon=":material/delete:",
              on_click=lambda: st.session_state.pop(RESULTS, None))


# ---------------------------------------------------------------- the page

got = _corpus()
if got is not None:
    article, token_ids = got
    config = _settings()
    windows = _windows(token_ids, config)
    if windows is not None:
        estimated = _estimate(config)
        if st.button("Run", type="primary", key="lam_run", icon=":material/play_arrow:"):
            _run(windows, config, article, estimated)
_results()
