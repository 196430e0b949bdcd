"""Laminar profile (seed 004): a fresh sparse autoencoder on every layer's MLP output.

Corpus (lab.corpus: Wikipedia, bundled, pasted) -> LaminarConfig (preset + adjustments, the
corpus source in it) -> estimate -> ui.jobs.run_live(lab.laminar.run) (progress with ETA,
curves growing layer by layer, Stop keeps finished layers) -> charts of every model run in
this session, overlaid -> CSV / JSON.
"""
from __future__ import annotations

import functools
import json
import os

import pandas as pd
import streamlit as st

from lab import corpus, laminar, registry
from lab.charts import laminar as charts
from lab.experiment import field_of, replace_paths
from lab.hidden import decode_upload
from lab.laminar import LaminarConfig
from lab.models import available_devices
from ui import widgets
from ui.common import current_model, first_line, seed
from ui.jobs import PageRun, compute, forget, job_result, past_runs, remember, run_live

EXP = registry.get("laminar")
MAX_MODELS = 8             # profiles overlaid at most (one per model; ui.jobs keeps them)
SOURCES = ["Wikipedia article", "Bundled LED text", "Paste or upload"]
X_LABELS = {"layer index": "layer", "relative depth": "relative_depth"}
PRESET_CAPTIONS = {"quick": "fewer tokens, epochs and latents: the trend in ~2 min on 2 CPU cores",
                   "full": "the original notes' 10 x 1024 tokens, 75 epochs, 8x latents"}

st.title("Laminar profile")
st.markdown(
    "Take ~10k tokens of an article, capture every layer's MLP output in one pass, train a "
    "**fresh sparse autoencoder (SAE) per layer**, and plot how sparse each layer's code is "
    "and how well it reconstructs, against depth. Run a small and a large model to overlay "
    "them (use *relative depth* to line up 12 and 36 layers). The seed expects density to "
    "rise with depth and the reconstruction error to be lowest in the middle layers.")

lm = current_model()


# ---------------------------------------------------------------- corpus

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
        if up is not None:   # binary or not UTF-8: one sentence, as on every page
            return corpus.text_article(decode_upload(up.getvalue()), up.name, source="file")
        return corpus.text_article(text)
    except (corpus.CorpusError, ValueError) as e:
        st.warning(first_line(e), icon=":material/edit_note:")
        return None


def _corpus() -> tuple[corpus.Article, object, dict] | None:
    """The article shown, its tokens, and the config fields that name it (url or text)."""
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
    ids = corpus.token_ids(lm, art.text)
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
    fields = {"live": {"url": st.session_state.get("lam_article", "")},
              "pasted": {"text": art.text}, "file": {"text": art.text}}
    fields["cache"] = fields["live"]   # the run reads the same cached copy
    return art, ids, fields.get(art.source, {})


# ---------------------------------------------------------------- settings

def _preset_number(col, label: str, name: str, path: str, short: str, lo, hi, **kw):
    """A number widget for config field `path`, starting from preset `name`'s value."""
    key = f"lam_{short}_{name}"
    st.session_state.setdefault(key, functools.reduce(getattr, path.split("."), laminar.PRESETS[name]))
    with col:
        return widgets.number(label, LaminarConfig, path, key, lo, hi, **kw)


def _settings(source: dict) -> LaminarConfig:
    st.subheader("2. Settings")
    name = st.radio("Preset", list(PRESET_CAPTIONS), key="lam_preset", horizontal=True,
                    captions=list(PRESET_CAPTIONS.values()))
    with st.expander("Adjust the preset", icon=":material/tune:"):
        c = st.columns(6)
        values = {"n_windows": _preset_number(c[0], "Windows", name, "n_windows", "windows", 1, 200),
                  "window_len": _preset_number(c[1], "Tokens per window", name, "window_len", "len",
                                               2, lm.n_ctx),
                  "sae.epochs": _preset_number(c[2], "Epochs per layer", name, "sae.epochs", "epochs",
                                               1, 1000),
                  "sae.expansion": _preset_number(c[3], "Latents / d_model", name, "sae.expansion",
                                                  "exp", 1, 64)}
        st.session_state.setdefault(f"lam_act_{name}", laminar.PRESETS[name].sae.activation)
        with c[4]:
            activation = widgets.choice(
                "SAE", LaminarConfig, "sae.activation", key=f"lam_act_{name}", horizontal=False,
                format_func={"relu": "ReLU + L1 (the original notes')", "topk": "Top-K"}.get,
                help="With Top-K every token has exactly k active latents, so density is fixed "
                     "at k / latents: compare MSE instead.")
        l1 = _preset_number(c[5], "L1 weight", name, "sae.l1", "l1", 0.0, 1.0, step=1e-3,
                            format="%.4f", disabled=activation == "topk")
    try:
        return replace_paths(laminar.PRESETS[name], {**values, **source, **_where(),
                                                    "sae.activation": activation,
                                                    "sae.l1": float(l1), "seed": seed()})
    except ValueError as e:
        st.error(first_line(e))
        st.stop()


def _where() -> dict:
    """The SAEs' device (those torch sees here), and the Ray cluster when the server names one
    in LAB_RAY_ADDRESS."""
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    device = c1.radio("SAE device", available_devices(), key="lam_sae_device", horizontal=True,
                      help=field_of(LaminarConfig, "sae_device").help)
    address = os.environ.get("LAB_RAY_ADDRESS", "")
    cluster = bool(address) and c2.checkbox(
        "Run on the cluster", key="lam_cluster",
        help=f"Train each layer's SAE as a task on the Ray cluster at {address} (the server's "
             "LAB_RAY_ADDRESS): layers train side by side, rows arrive as they finish.")
    return {"sae_device": device, "ray": "env" if cluster else ""}


def _use(name: str, n_windows: int, window_len: int) -> None:
    st.session_state[f"lam_windows_{name}"] = n_windows
    st.session_state[f"lam_len_{name}"] = window_len


def _fits(ids, cfg: LaminarConfig) -> bool:
    """Whether the windows fit the corpus; if not, say what fits (with buttons to take it)."""
    try:
        laminar.corpus_windows(ids, cfg)
        return True
    except corpus.CorpusTooShort as e:
        st.warning(str(e), icon=":material/short_text:")
        for n, t in e.offers:
            st.button(f"Use {n} x {t}", key=f"lam_fit_{n}_{t}", on_click=_use,
                      args=(st.session_state["lam_preset"], n, t))
        return False


def _estimate(cfg: LaminarConfig) -> None:
    where = "this machine's CPU" if cfg.ray else str(cfg.device_of(lm))
    rates = compute(lm, laminar.rates_config(lm, cfg), "Measuring this machine's speed…")
    est = laminar.estimate(lm, cfg, rates)
    bound = (" The ReLU + L1 rate was measured on dense steps; real codes go sparse after a "
             "few epochs and train faster, so this is an upper bound."
             if cfg.sae.activation == "relu" else "")
    cluster = (" On the cluster the layers train side by side: the SAE part shrinks by the "
               "number of tasks running at once." if cfg.ray else "")
    st.markdown(f"**Estimated time: about {laminar.format_duration(est.total_seconds)}** — forward "
                f"passes {est.capture_gflop:,.3g} GFLOP at a measured {est.forward_gflops:,.3g} "
                f"GFLOP/s, then {est.n_layers} SAEs x {est.layer_gflop:,.3g} GFLOP at "
                f"{est.sae_gflops:,.3g} GFLOP/s on {where}.{bound}{cluster}")


# ---------------------------------------------------------------- run and results

def _runs() -> dict:
    """The overlay: each model's latest profile in this session (ui.jobs' past runs)."""
    return {r["result"].model: r["result"] for r in past_runs(EXP.name)}


def _keep(result) -> None:
    """A profile joins the overlay, replacing the same model's older one."""
    if result is None or not len(result.rows):
        return
    for old in [r for r in past_runs(EXP.name) if r["result"].model == result.model]:
        if old["result"] is not result:
            forget(EXP.name, old["id"])
    remember(EXP.name, result, MAX_MODELS)


def _keep_latest() -> None:
    """This model's latest result (finished, or the layers a Stop kept) joins the overlay."""
    _keep(job_result(lm, EXP))


def _run(cfg: LaminarConfig) -> None:
    others = {m: r for m, r in _runs().items() if m != lm.name}
    x = X_LABELS[st.session_state.get("lam_x", "layer index")]
    def draw(partial) -> None:
        rows = _all_rows({**others, lm.name: partial})
        if len(rows):
            _draw_pair(rows, x)

    result = run_live(lm, EXP, cfg, draw=draw)
    if result is not None:
        _keep(result)
        st.rerun()   # redraw without the Stop button and the live charts


def _all_rows(runs: dict) -> pd.DataFrame:
    frames = [r.rows for r in runs.values() if len(r.rows)]
    return pd.concat(frames, ignore_index=True) if frames else laminar.frame([])


CHARTS = {"density": charts.density_chart, "nmse": charts.nmse_chart, "mse": charts.mse_chart,
          "dead_fraction": charts.dead_chart}


def _draw_pair(rows: pd.DataFrame, x: str, keys: tuple[str, str] = ("density", "nmse")) -> None:
    for column, key in zip(st.columns(2), keys):
        with column:
            st.altair_chart(CHARTS[key](rows, x), width="stretch")
            st.caption(charts.LOOK_FOR[key])


def _results() -> None:
    runs = _runs()
    rows = _all_rows(runs)
    if rows.empty:
        return
    st.subheader("3. Profiles")
    PageRun(EXP.name).caption()
    x = X_LABELS[st.radio("x-axis", list(X_LABELS), key="lam_x", horizontal=True,
                          help="Relative depth = layer / (layers - 1): lines up models of "
                               "different depth.")]
    _draw_pair(rows, x)
    _draw_pair(rows, x, ("mse", "dead_fraction"))
    for run in runs.values():
        for s in run.shape.to_dict(orient="records"):
            done = "" if run.finished else f" (stopped: {s['layers']} of {run.n_layers} layers)"
            st.markdown(f"- {laminar.describe_shape(s)}{done} Wall time "
                        f"{laminar.format_duration(run.wall_seconds)} for {s['layers']} layers.")
    _downloads(rows, runs)


def _clear() -> None:
    forget(EXP.name)
    PageRun(EXP.name).finish(None)   # or the latest run would come back on the next rerun


def _downloads(rows: pd.DataFrame, runs: dict) -> None:
    c1, c2, c3 = st.columns(3)
    c1.download_button("Download CSV", rows.to_csv(index=False), "laminar_profile.csv",
                       "text/csv", key="lam_csv", icon=":material/download:")
    records = {"runs": [r.to_record() for r in runs.values()]}
    c2.download_button("Download JSON (rows + config, corpus, seed)", json.dumps(records, indent=2),
                       "laminar_profile.json", "application/json", key="lam_json",
                       icon=":material/data_object:")
    c3.button("Clear results", key="lam_clear", icon=":material/delete:", on_click=_clear)


# ---------------------------------------------------------------- the page

_keep_latest()
got = _corpus()
if got is not None:
    article, token_ids, source_fields = got
    config = _settings(source_fields)
    if _fits(token_ids, config):
        _estimate(config)
        if st.button("Run", type="primary", key="lam_run", icon=":material/play_arrow:"):
            _run(config)
_results()
