"""Sparse autoencoder on a text: the Palinka experiment (seed 002).

Widgets -> SAEConfig -> lab.sae.train_sae (live curves, Stop keeps the model) ->
lab.selectivity.analyze -> charts. Trained SAEs stay in the session and can be downloaded.
"""
from __future__ import annotations

import json
import time
import uuid

import streamlit as st

from lab import sae as lsae
from lab import selectivity as lsel
from lab.charts import sae as charts
from lab.paths import read_text
from ui.common import current_model, first_line, seed
from ui.jobs import Job, stop_button

RUNS = "sae_runs"              # session_state: list of trained runs (dicts), newest last
MAX_RUNS = 6                   # older runs are dropped (each holds an SAE and its activations)
DEFAULT_TEXT = "palinka.txt"
CHART_EVERY_S = 0.5            # redraw the live curves at most this often

st.title("Sparse autoencoder on a text")
st.markdown(
    "Run a short text through the model, train a sparse autoencoder (SAE) on one layer's "
    "activations while the loss falls, then hunt for a latent that fires on country names. "
    "The permutation control at the end tells you whether a high score means anything: with "
    "a couple of hundred tokens and thousands of latents, some latents score high by chance.")

lm = current_model()


@st.cache_data(show_spinner="Running the text through the model...", max_entries=8)
def _activations(model_name: str, text: str, layer: int, site: str, drop_first: bool,
                 _lm) -> lsae.TextActivations:
    return lsae.text_activations(_lm, text, layer, site, drop_first)


def _text() -> str:
    source = st.radio("Text", ["Pálinka (default)", "Paste", "Upload"], horizontal=True,
                      key="sae_source", help="The default is a ~230-token text on pálinka "
                      "and the countries it comes from, written for this lab.")
    if source == "Paste":
        return st.text_area("Your text", key="sae_paste", height=150,
                            placeholder="Paste a text of at least a few sentences.")
    if source == "Upload":
        up = st.file_uploader("A UTF-8 text file", type=["txt", "md"], key="sae_upload")
        return up.getvalue().decode("utf-8", errors="replace") if up else ""
    text = read_text(DEFAULT_TEXT)
    with st.expander("Show the default text"):
        st.write(text)
    return text


def _settings() -> tuple[int, str, bool, lsae.SAEConfig]:
    c1, c2, c3, c4 = st.columns(4)
    layer = c1.slider("Layer", 0, lm.n_layers - 1, min(6, lm.n_layers - 1), key="sae_layer",
                      help="Which block's activations the SAE reconstructs.")
    site = c1.radio("Activations", list(lsae.SITES), key="sae_site",
                    format_func=lambda s: {"mlp_out": f"MLP output ({lm.d_model} wide)",
                                           "mlp_post": f"MLP neurons ({lm.d_mlp} wide)"}[s],
                    help="MLP output is the seed's 'MLP activations' (blocks.L.hook_mlp_out); "
                         "MLP neurons are the hidden units after the nonlinearity.")
    drop_first = c1.checkbox("Drop the first token", value=True, key="sae_drop_first",
                             help="Position 0 is an attention sink whose activations are often "
                                  "tens of times larger than the rest (e.g. SmolLM2 layers 1, 2, "
                                  "8 and 29); it would dominate the loss.")
    d_in = lm.d_model if site == "mlp_out" else lm.d_mlp
    activation = c2.radio("Sparsity", ["topk", "relu"], key="sae_activation",
                          format_func={"topk": "Top-K (ReLU, keep the k largest)",
                                       "relu": "ReLU + L1 penalty"}.get)
    k = c2.slider("k (active latents per token)", 1, 256, 32, key="sae_k",
                  disabled=activation != "topk")
    l1 = c2.number_input("L1 weight", 0.0, 10.0, 1e-3, step=1e-4, format="%.0e", key="sae_l1",
                         disabled=activation != "relu")
    mult = c3.select_slider("Latents (x input width)", [1, 2, 4, 8, 16, 32], 8, key="sae_mult",
                            help="The seed uses 8x: about 6000 latents for GPT-2's 768.")
    tied = c3.checkbox("Tied weights (decoder = encoder transposed)", True, key="sae_tied")
    epochs = c4.number_input("Epochs", 1, 5000, 100, key="sae_epochs")
    lr = c4.number_input("Learning rate (Adam)", 1e-6, 1.0, 1e-4, step=1e-4, format="%.0e",
                         key="sae_lr")
    cfg = lsae.SAEConfig(n_latents=mult * d_in, k=int(k), tied=tied, activation=activation,
                         l1=float(l1), epochs=int(epochs), lr=float(lr), seed=seed())
    c3.caption(f"{mult * d_in} latents on {d_in}-wide activations.")
    return layer, site, drop_first, cfg


def _train(ta: lsae.TextActivations, text: str, layer: int, cfg: lsae.SAEConfig) -> None:
    job = Job("sae")
    sae = lsae.init_sae(ta.acts, cfg)
    run = {"id": uuid.uuid4().hex[:8], "model": lm.name, "layer": layer, "hook": ta.hook,
           "text": text, "acts": ta, "config": cfg, "sae": sae, "rows": [], "seconds": 0.0,
           "status": "training", "seed": cfg.seed}
    runs = st.session_state.setdefault(RUNS, [])
    runs.append(run)
    del runs[:-MAX_RUNS]
    st.session_state["sae_view"] = run["id"]
    job.start(cfg)
    stop_slot = st.empty()
    with stop_slot:
        stop_button(job)
    bar = st.progress(0.0, text="Training...")
    live = st.empty()
    last = [0.0]

    def on_epoch(row: dict) -> None:
        run["rows"].append(row)
        run["seconds"] = row["seconds"]
        job.update(run, progress=f"epoch {row['epoch']} of {cfg.epochs}")
        bar.progress(row["epoch"] / cfg.epochs,
                     text=f"Epoch {row['epoch']}/{cfg.epochs}: loss {row['loss']:.4g}, "
                          f"nMSE {row['nmse']:.3g}, L0 {row['l0']:.1f}")
        if time.monotonic() - last[0] > CHART_EVERY_S or row["epoch"] == cfg.epochs:
            last[0] = time.monotonic()
            live.altair_chart(charts.training_curves(lsae.history_frame(run["rows"])))

    lsae.train_sae(ta.acts, cfg, on_epoch=on_epoch, sae=sae)
    run["status"] = "done"
    job.finish(run)
    for slot in (stop_slot, bar, live):
        slot.empty()


def _run_label(run: dict) -> str:
    cfg = run["config"]
    state = "" if run["status"] == "done" else f", stopped at epoch {len(run['rows'])}"
    return (f"{run['id']}: {run['model']} {run['hook']}, {cfg.activation} k={cfg.k}, "
            f"{run['sae'].n_latents} latents{state}")


def _analysis(run: dict, sel_cfg: lsel.SelectivityConfig) -> lsel.TextSAEAnalysis:
    """Memoised per run and selectivity settings (the SAE of a run never changes once shown)."""
    cache = st.session_state.setdefault("sae_analysis", {})
    key = (run["id"], len(run["rows"]), sel_cfg)
    if key not in cache:
        with st.spinner(f"Scoring latents with {sel_cfg.n_shuffles} shuffles..."):
            cache.clear()
            cache[key] = lsel.analyze(run["sae"], run["acts"], run["text"], sel_cfg)
    return cache[key]


def _metadata(run: dict) -> dict:
    import torch
    return {"model": run["model"], "layer": run["layer"], "hook": run["hook"],
            "seed": run["seed"], "config": vars(run["config"]), "epochs_done": len(run["rows"]),
            "status": run["status"], "n_tokens": run["acts"].n_tokens,
            "dropped_first_token": run["acts"].dropped_first, "torch": torch.__version__}


def _show(run: dict) -> None:
    cfg, rows = run["config"], run["rows"]
    if run["status"] != "done":
        st.warning(f"Stopped at epoch {len(rows)} of {cfg.epochs}: showing the SAE trained so "
                   "far.", icon=":material/pause_circle:")
    if not rows:
        st.info("No epoch finished before the stop: nothing to show yet.")
        return
    last = rows[-1]
    st.subheader("Training")
    st.altair_chart(charts.training_curves(lsae.history_frame(rows)))
    st.caption("Look for: the held-out (val) normalized MSE following the training one. On a "
               "couple of hundred tokens it usually stalls while training keeps falling: the "
               "SAE memorises the text.")
    m = st.columns(5)
    m[0].metric("Wall time", f"{run['seconds']:.1f} s", help=f"{len(rows)} epochs")
    m[1].metric("Train nMSE", f"{last['nmse']:.3f}")
    m[2].metric("Val nMSE", f"{last.get('val_nmse', float('nan')):.3f}")
    m[3].metric("L0", f"{last['l0']:.1f}")
    m[4].metric("Tokens", run["acts"].n_tokens)

    st.subheader("Selectivity: is there a geography latent?")
    c1, c2, c3, c4 = st.columns([2, 2, 1, 2])
    target = c1.text_input("Target words (comma separated)", "Romania, Hungary, Greece",
                           key="sae_target", help="Every sub-token of a word counts.")
    control = c2.text_input("Control words", "fruit, alcohol", key="sae_control")
    shuffles = c3.number_input("Shuffles", 1000, 20000, 1000, step=500, key="sae_shuffles",
                               help="Permutation draws; p-values go down to 1/(shuffles+1).")
    pool = c4.radio("Shuffled targets are drawn from", lsel.POOLS, key="sae_pool",
                    format_func={"text": "any non-control token",
                                 "labelled": "the target + control tokens"}.get,
                    help="'any non-control token' asks whether the targets stand out from the "
                         "rest of the text; 'target + control' only swaps the two lists' labels.")
    try:
        sel_cfg = lsel.SelectivityConfig(target=lsel.parse_words(target),
                                         control=lsel.parse_words(control),
                                         n_shuffles=int(shuffles), pool=pool, seed=run["seed"])
        res = _analysis(run, sel_cfg)
    except ValueError as e:
        st.error(first_line(e), icon=":material/error:")
        return
    sel = res.selectivity

    st.markdown("**Latents**")
    k = st.columns(4)
    k[0].metric("Dead", res.counts["dead"], help="never active on any token")
    k[1].metric("Always-on", res.counts["always-on"], help="active on every token")
    k[2].metric("Selective", res.counts["selective"], help="active on some tokens")
    k[3].metric("Mean density", f"{res.stats['density'].mean():.2%}",
                help="mean fraction of tokens a latent is active on")
    if res.warning:
        st.warning(res.warning, icon=":material/warning:")
    st.altair_chart(charts.density_histogram(res.stats), width="stretch")
    st.caption("Look for: most living latents at the far left (they fire on one or two tokens "
               "of the text) and whether any reach 1.0 (always on, so they carry no choice).")

    if sel.missing:
        st.warning(f"Not found in the text: {', '.join(sel.missing)}.", icon=":material/search_off:")
    survive = sel.survivors_in_top()
    box = st.success if survive else st.error
    box(f"**{survive} of the top {len(sel.top())} latents survive the control.** "
        + sel.sentence(), icon=":material/balance:")
    st.caption(f"Score = mean activation on the {sel.n_target} target tokens / (mean on the "
               f"{sel.n_control} control tokens + {sel_cfg.eps:g}). p: this latent's own "
               "permutation p-value; p_fwer: chance that the best of all latents scores this "
               "high on shuffled labels (survives when < 0.05); n_chance: latents expected to "
               "score this high by chance." + _empty_control_note(sel, sel_cfg.eps))
    st.dataframe(sel.top(), hide_index=True, width="stretch",
                 column_config={"score": st.column_config.NumberColumn(format="%.4g"),
                                "p": st.column_config.NumberColumn(format="%.4f"),
                                "p_fwer": st.column_config.NumberColumn(format="%.4f")})
    st.altair_chart(charts.null_max_chart(sel.null_max, sel.top()), width="stretch")
    st.caption("Bars: the best score among all latents when the target tokens are chosen at "
               "random. Look for: red rules (observed top scores) far right of the bars; a "
               "rule inside the bars is a score chance produces.")

    st.subheader("Token x latent heatmap")
    alive = sel.table.loc[sel.table["latent"].isin(res.stats.loc[res.stats["cls"] != "dead", "latent"])]
    options = alive["latent"].tolist()
    default = options[:8]
    picked = st.multiselect("Latents to show (sorted by score)", options, default=default,
                            key=f"sae_pick_{run['id']}")
    if picked:
        frame = lsel.token_latent_frame(res.z, run["acts"].tokens, picked, res.target, res.control)
        st.altair_chart(charts.token_latent_heatmap(frame), width="content")
        st.caption("Look for: a latent lit only under the red marks (target tokens). One that "
                   "also fires on commas, brackets or small words is not a geography latent.")
    _downloads(run, res)


def _empty_control_note(sel: lsel.Selectivity, eps: float) -> str:
    n_zero = int((sel.top()["control_mean"] == 0).sum())
    if not n_zero:
        return ""
    return (f" {n_zero} of the top {len(sel.top())} never fire on a control token, so their "
            f"score is just their target mean / {eps:g}: the ratio explodes whenever the "
            "denominator is empty.")


def _downloads(run: dict, res: lsel.TextSAEAnalysis) -> None:
    meta = _metadata(run)
    c = st.columns(4)
    c[0].download_button("SAE (safetensors + config)", lsae.to_zip_bytes(run["sae"], meta),
                         f"sae_{run['id']}.zip", "application/zip", key="sae_dl_model",
                         icon=":material/download:", on_click="ignore")
    c[1].download_button("History (CSV)", lsae.history_frame(run["rows"]).to_csv(index=False),
                         f"sae_{run['id']}_history.csv", "text/csv", key="sae_dl_hist",
                         icon=":material/download:", on_click="ignore")
    c[2].download_button("Selectivity (CSV)", res.selectivity.table.to_csv(index=False),
                         f"sae_{run['id']}_selectivity.csv", "text/csv", key="sae_dl_sel",
                         icon=":material/download:", on_click="ignore")
    summary = {**meta, "final": run["rows"][-1], **res.summary()}
    c[3].download_button("Summary (JSON)", json.dumps(summary, indent=2, default=str),
                         f"sae_{run['id']}_summary.json", "application/json", key="sae_dl_json",
                         icon=":material/download:", on_click="ignore")


# ---------------------------------------------------------------- the page

text = _text()
layer, site, drop_first, cfg = None, None, None, None
try:
    layer, site, drop_first, cfg = _settings()
except ValueError as e:
    st.error(first_line(e), icon=":material/error:")

if st.button("Train", type="primary", key="sae_train", icon=":material/play_arrow:",
             disabled=cfg is None):
    try:
        ta = _activations(lm.name, text, layer, site, drop_first, lm)
        cfg.latents_for(ta.acts.shape[1])
    except ValueError as e:
        st.error(first_line(e), icon=":material/error:")
    else:
        warn = lsae.data_warning(ta.n_tokens, cfg.latents_for(ta.acts.shape[1]))
        st.caption(f"{ta.n_tokens} tokens x {ta.acts.shape[1]} from {ta.hook}"
                   + ("; first token dropped." if drop_first else "."))
        warn_slot = st.empty()      # shown while training; the results repeat it
        if warn:
            warn_slot.warning(warn, icon=":material/warning:")
        _train(ta, text, layer, cfg)
        warn_slot.empty()

runs = st.session_state.get(RUNS, [])
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
    st.info("Pick a layer and press Train. The seed's settings (8x latents, tied, Top-K "
            "k=32, Adam lr 1e-4, 100 epochs) are the defaults.", icon=":material/school:")
