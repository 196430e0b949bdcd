"""Sparse autoencoder on a text: the Palinka experiment (seed 002).

Widgets -> SAETextConfig -> ui.jobs.run_live (registry "sae": live curves; a Stop keeps the
SAE trained so far) -> SAETextResult -> charts. The word lists can change after training:
`result.rescore` scores the same code again (memoised per run). Trained runs stay in the
session (MAX_RUNS) and can be downloaded.
"""
from __future__ import annotations

import json

import streamlit as st

from lab import registry, sae_text
from lab.charts import sae as charts
from lab.experiment import field_of
from lab.feature.store import keep_sae
from lab.hooks import hook_name, width
from lab.sae import SAEConfig
from lab.sae_text.capture import EMPTY_TEXT
from lab.sae_text import SAETextConfig, SAETextResult
from lab.hidden import decode_upload
from lab.selectivity import SelectivityConfig, parse_words
from ui import widgets
from ui.common import current_model, first_line, seed
from lab.sae_text import rescore_config
from ui.jobs import compute, job_result, past_runs, remember, run_live
from ui.share import share_button

EXP = registry.get("sae")
C = SAETextConfig
MAX_RUNS = 6                   # older runs are dropped (each holds an SAE and its activations;
                               # ui.jobs.trim also lets them go within the session's budget)
SOURCES = ["Pálinka (default)", "Paste", "Upload"]
# selectivity field -> widget key (the widgets sit under a run's results; Train reads them)
SEL_KEYS = {"target": "sae_target", "control": "sae_control", "n_shuffles": "sae_shuffles",
            "pool": "sae_pool"}

st.title("Sparse autoencoder on a text")
st.markdown(
    "Run a short text through the model, train a sparse autoencoder (SAE) on one layer's "
    "activations while the loss falls, then hunt for a latent that fires on country names. "
    "The permutation control at the end tells you whether a high score means anything: with "
    "a couple of hundred tokens and thousands of latents, some latents score high by chance.")

lm = current_model()


def _text() -> str | None:
    """The config's text: "" for the bundled one, else what was pasted or uploaded (None for
    an upload that is not text, after saying so)."""
    source = st.radio("Text", SOURCES, horizontal=True, key="sae_source",
                      help=field_of(C, "text").help)
    if source == "Paste":
        return st.text_area("Your text", key="sae_paste", height=150,
                            placeholder="Paste a text of at least a few sentences.")
    if source == "Upload":
        up = st.file_uploader("A UTF-8 text file", type=["txt", "md"], key="sae_upload")
        try:
            return decode_upload(up.getvalue()) if up else ""
        except ValueError as e:      # binary, not UTF-8: one sentence, and Train stays off
            st.error(first_line(e), icon=":material/error:")
            return None
    with st.expander("Show the default text"):
        st.write(sae_text.default_text())
    return ""


def _selectivity(values: dict, run_seed: int) -> SelectivityConfig:
    return SelectivityConfig(target=parse_words(values["target"]),
                             control=parse_words(values["control"]),
                             n_shuffles=int(values["n_shuffles"]), pool=values["pool"],
                             seed=run_seed)


def _selectivity_state() -> dict:
    """The selectivity widgets' values (their defaults until a run has shown them)."""
    out = {}
    for name, key in SEL_KEYS.items():
        value = st.session_state.get(key, widgets.default(C, f"selectivity.{name}"))
        out[name] = ", ".join(value) if isinstance(value, tuple) else value
    return out


def _settings(text: str) -> SAETextConfig:
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        layer = widgets.slider("Layer", C, "layer", 0, lm.n_layers - 1, key="sae_layer",
                               value=sae_text.default_layer(lm.n_layers))
        sites = {"mlp_out": f"MLP output ({lm.d_model} wide)",
                 "mlp_post": f"MLP neurons ({lm.d_mlp} wide)"}
        site = widgets.choice("Activations", C, "site", key="sae_site", horizontal=False,
                              format_func=sites.get)
        drop_first = widgets.checkbox("Drop the first token", C, "drop_first", key="sae_drop_first")
    with c2:
        activation = widgets.choice("Sparsity", C, "sae.activation", key="sae_activation",
                                    horizontal=False,
                                    format_func={"topk": "Top-K (ReLU, keep the k largest)",
                                                 "relu": "ReLU + L1 penalty"}.get)
        k = widgets.slider("k (active latents per token)", C, "sae.k", 1, 256, key="sae_k",
                           disabled=activation != "topk")
        l1 = widgets.number("L1 weight", C, "sae.l1", key="sae_l1", lo=0.0, hi=10.0, step=1e-4,
                            format="%.0e", disabled=activation != "relu")
    with c3:
        mult = widgets.select_slider("Latents (x input width)", C, "sae.expansion",
                                     [1, 2, 4, 8, 16, 32], key="sae_mult")
        tied = widgets.checkbox("Tied weights", C, "sae.tied", key="sae_tied")
        unit = widgets.checkbox("Unit-norm decoder", C, "sae.unit_decoder", key="sae_unit_decoder",
                                disabled=tied)
    with c4:
        epochs = widgets.number("Epochs", C, "sae.epochs", key="sae_epochs", lo=1, hi=5000)
        lr = widgets.number("Learning rate (Adam)", C, "sae.lr", key="sae_lr", lo=1e-6, hi=1.0,
                            step=1e-4, format="%.0e")
    sae = SAEConfig(expansion=mult, k=int(k), tied=tied, unit_decoder=unit,
                    activation=activation, l1=float(l1), epochs=int(epochs), lr=float(lr))
    cfg = SAETextConfig(text=text, layer=sae_text.layer_value(layer, lm.n_layers), site=site,
                        drop_first=drop_first, sae=sae,
                        selectivity=_selectivity(_selectivity_state(), seed()), seed=seed())
    d_in = width(lm, hook_name(site, layer))
    c3.caption(f"{sae.latents_for(d_in)} latents on {d_in}-wide activations.")
    return cfg


def _live(state: sae_text.Training) -> None:
    """While training: what is being trained on, and the curves so far."""
    acts = state.acts
    st.caption(f"{acts.n_tokens} tokens x {acts.acts.shape[1]} from {acts.hook}"
               + ("; first token dropped." if acts.dropped_first else "."))
    if state.warning:
        st.warning(state.warning, icon=":material/warning:")
    if state.rows:
        st.altair_chart(charts.training_curves(state.history))


def _keep(result: SAETextResult | None) -> None:
    """Add the page's newest result (finished, or kept by a Stop) to the session's runs once."""
    run_id = remember(EXP.name, result, MAX_RUNS)
    if run_id is not None:
        st.session_state["sae_view"] = run_id


def _run_label(run: dict) -> str:
    res = run["result"]
    sae = res.config.sae
    state = "" if res.finished else f", stopped at epoch {res.epochs_done}"
    return (f"{run['id']}: {res.model} {res.acts.hook}, {sae.activation} k={sae.k}, "
            f"{res.sae.n_latents} latents{state}")


def _scored(run: dict, sel: SelectivityConfig) -> SAETextResult:
    """The run scored for `sel`: a runner job (queued and cached like any run, no retraining)."""
    result = run["result"]
    if sel == result.config.selectivity:
        return result
    return compute(lm, rescore_config(result, sel),
                   f"Scoring latents with {sel.n_shuffles} shuffles...", result=result)


def _selectivity_widgets(run_seed: int) -> SelectivityConfig:
    c1, c2, c3, c4 = st.columns([2, 2, 1, 2])
    with c1:
        target = widgets.text("Target words (comma separated)", C, "selectivity.target",
                              key=SEL_KEYS["target"])
    with c2:
        control = widgets.text("Control words", C, "selectivity.control", key=SEL_KEYS["control"])
    with c3:
        shuffles = widgets.number("Shuffles", C, "selectivity.n_shuffles",
                                  key=SEL_KEYS["n_shuffles"], lo=1000, hi=20000, step=500)
    with c4:
        pool = widgets.choice("Shuffled targets are drawn from", C, "selectivity.pool",
                              key=SEL_KEYS["pool"], horizontal=False,
                              format_func={"text": "any non-control token",
                                           "labelled": "the target + control tokens"}.get)
    values = {"target": target, "control": control, "n_shuffles": shuffles, "pool": pool}
    return _selectivity(values, run_seed)


def _show(run: dict) -> None:
    res = run["result"]
    cfg = res.config
    if not res.finished:
        st.warning(f"Stopped at epoch {res.epochs_done} of {cfg.sae.epochs}: showing the SAE "
                   "trained so far.", icon=":material/pause_circle:")
    if not res.epochs_done:
        st.info("No epoch finished before the stop: nothing to show yet.")
        return
    last = res.rows[-1]
    st.subheader("Training")
    st.altair_chart(charts.training_curves(res.history))
    st.caption("Look for: the held-out (val) normalized MSE following the training one. On a "
               "couple of hundred tokens it usually stalls while training keeps falling: the "
               "SAE memorises the text.")
    m = st.columns(5)
    m[0].metric("Wall time", f"{res.seconds:.1f} s", help=f"{res.epochs_done} epochs")
    m[1].metric("Train nMSE", f"{last['nmse']:.3f}")
    m[2].metric("Val nMSE", f"{last.get('val_nmse', float('nan')):.3f}")
    m[3].metric("L0", f"{last['l0']:.1f}")
    m[4].metric("Tokens", res.acts.n_tokens)

    st.subheader("Selectivity: is there a geography latent?")
    try:
        res = _scored(run, _selectivity_widgets(cfg.seed))
    except ValueError as e:
        st.error(first_line(e), icon=":material/error:")
        return
    share_button(res, "sae")
    _latents(res)
    _control(res)
    _heatmap(run, res)
    _downloads(run, res)


def _latents(res: SAETextResult) -> None:
    st.markdown("**Latents**")
    counts = res.counts
    k = st.columns(4)
    k[0].metric("Dead", counts["dead"], help="never active on any token")
    k[1].metric("Always-on", counts["always-on"], help="active on every token")
    k[2].metric("Selective", counts["selective"], help="active on some tokens")
    k[3].metric("Mean density", f"{res.summary()['mean_density']:.2%}",
                help="mean fraction of tokens a latent is active on")
    if res.warning:
        st.warning(res.warning, icon=":material/warning:")
    st.altair_chart(charts.density_histogram(res.stats), width="stretch")
    st.caption("Look for: most living latents at the far left (they fire on one or two tokens "
               "of the text) and whether any reach 1.0 (always on, so they carry no choice).")


def _control(res: SAETextResult) -> None:
    sel = res.selectivity
    if sel.missing:
        st.warning(f"Not found in the text: {', '.join(sel.missing)}.",
                   icon=":material/search_off:")
    survive = sel.survivors_in_top()
    box = st.success if survive else st.error
    box(f"**{survive} of the top {len(sel.top())} latents survive the control.** "
        + sel.sentence(), icon=":material/balance:")
    note = sel.empty_control_note()
    st.caption(f"Score = mean activation on the {sel.n_target} target tokens / (mean on the "
               f"{sel.n_control} control tokens + {sel.config.eps:g}). p: this latent's own "
               "permutation p-value; p_fwer: chance that the best of all latents scores this "
               f"high on shuffled labels (survives when < {sel.config.alpha:g}); n_chance: "
               "latents expected to score this high by chance." + (f" {note}" if note else ""))
    picked = st.dataframe(sel.top(), hide_index=True, width="stretch", on_select="rerun",
                          selection_mode="single-row", key="sae_latent_table",
                          column_config={"score": st.column_config.NumberColumn(format="%.4g"),
                                         "p": st.column_config.NumberColumn(format="%.4f"),
                                         "p_fwer": st.column_config.NumberColumn(format="%.4f")})
    _feature_link(res, picked.selection.rows)
    st.altair_chart(charts.null_max_chart(sel.null_max, sel.top()), width="stretch")
    st.caption("Bars: the best score among all latents when the target tokens are chosen at "
               "random. Look for: red rules (observed top scores) far right of the bars; a "
               "rule inside the bars is a score chance produces.")


def _feature_link(res: SAETextResult, rows: list[int]) -> None:
    """One click from the latent table to the feature view: a row of the table, or the button
    (the SAE is saved under the cache folder, named by its weights)."""
    top = res.selectivity.top()["latent"].tolist()
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    latent = c1.selectbox("Latent", top, key="sae_feature_latent")
    clicked = c2.button("Open in the feature view", key="sae_open_feature",
                        icon=":material/frame_inspect:",
                        help="Its top examples over a corpus, its output effect, and what "
                             "ablating it changes, against control latents.")
    st.caption("Click a row of the table, or pick a latent and press the button, to open it in "
               "the feature view.")
    fresh = bool(rows) and rows != st.session_state.get("sae_rows_opened")
    st.session_state["sae_rows_opened"] = rows     # a selection kept on return opens nothing
    if fresh or clicked:
        st.session_state["feature_sae"] = keep_sae(res.sae, res.metadata())
        st.session_state["feature_sae_kind"] = "folder"
        st.session_state["feature_latent"] = int(top[rows[0]] if fresh else latent)
        st.switch_page(registry.get("feature").view)


def _heatmap(run: dict, res: SAETextResult) -> None:
    st.subheader("Token x latent heatmap")
    options = res.alive_latents()
    picked = st.multiselect("Latents to show (sorted by score)", options, default=options[:8],
                            key=f"sae_pick_{run['id']}")
    if picked:
        st.altair_chart(charts.token_latent_heatmap(res.token_frame(picked)), width="content")
        st.caption("Look for: a latent lit only under the red marks (target tokens). One that "
                   "also fires on commas, brackets or small words is not a geography latent.")


def _downloads(run: dict, res: SAETextResult) -> None:
    frames, name = res.frames(), f"sae_{run['id']}"
    c = st.columns(4)
    c[0].download_button("SAE (safetensors + config)", res.zip_bytes(), f"{name}.zip",
                         "application/zip", key="sae_dl_model", icon=":material/download:",
                         on_click="ignore")
    c[1].download_button("History (CSV)", frames["history"].to_csv(index=False),
                         f"{name}_history.csv", "text/csv", key="sae_dl_hist",
                         icon=":material/download:", on_click="ignore")
    c[2].download_button("Selectivity (CSV)", frames["selectivity"].to_csv(index=False),
                         f"{name}_selectivity.csv", "text/csv", key="sae_dl_sel",
                         icon=":material/download:", on_click="ignore")
    c[3].download_button("Summary (JSON)", json.dumps(res.to_record(), indent=2),
                         f"{name}_summary.json", "application/json", key="sae_dl_json",
                         icon=":material/download:", on_click="ignore")


# ---------------------------------------------------------------- the page

text = _text()
cfg = None
try:
    cfg = _settings(text or "")
except ValueError as e:
    st.error(first_line(e), icon=":material/error:")
if text is None:
    cfg = None

if st.button("Train", type="primary", key="sae_train", icon=":material/play_arrow:",
             disabled=cfg is None):
    if st.session_state.get("sae_source", SOURCES[0]) != SOURCES[0] and not text.strip():
        st.error(EMPTY_TEXT.capitalize() + ".", icon=":material/error:")
    else:
        run_live(lm, EXP, cfg, draw=_live)
_keep(job_result(lm, EXP))

runs = past_runs(EXP.name)
if runs:
    ids = [r["id"] for r in runs]
    if st.session_state.get("sae_view") not in ids:
        st.session_state["sae_view"] = ids[-1]
    if len(runs) > 1:
        st.selectbox("Trained SAEs in this session", ids, key="sae_view",
                     format_func=lambda i: _run_label(next(r for r in runs if r["id"] == i)))
    run = next(r for r in runs if r["id"] == st.session_state["sae_view"])
    st.caption(_run_label(run))
    _show(run)
else:
    d = SAEConfig()
    st.info(f"Pick a layer and press Train. The original notes' settings ({d.expansion}x latents, "
            f"{'tied' if d.tied else 'untied'}, Top-K k={d.k}, Adam lr {d.lr:g}, {d.epochs} "
            "epochs) are the defaults.", icon=":material/school:")
