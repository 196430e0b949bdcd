"""The settings both activation-maximization pages share: the method, where the target is (a
site and a block, then a unit whose range follows that hook point's width; or an SAE's
latent) and the optimizer; the header above a result and the corpus's bar below it.
Defaults and help come from the config fields (ui.widgets); values live under `{prefix}_...`
keys."""
from __future__ import annotations

import streamlit as st

from lab import hooks
from lab.actmax import METHODS
from lab.actmax.config import method_defaults
from lab.experiment import build, field_of
from lab.hooks import HookPoint
from lab.sae.load import fitting, units
from ui import widgets
from ui.common import first_line, seed
from ui.jobs import PageRun

LR_OPTIONS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)   # the sliders' learning rates
L2_OPTIONS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)           # and L2 penalty weights
LAM_OPTIONS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)             # and fluency weights
SITES = {"resid_post": "block output (residual stream)", "mlp_out": "MLP output",
         "mlp_post": "MLP neurons", "embed": "embeddings",
         "sae": "SAE latent"}                                # hook kind -> what a student reads
REDUCE_LABELS = {"mean": "mean over positions", "last": "last position"}
METHOD_LABELS = {"continuous": "continuous (free vectors)", "pez": "PEZ (nearest tokens)",
                 "discrete": "discrete (token swaps)", "epo": "EPO-lite (fluency frontier)"}


def _start_from(cls, root: str, prefix: str):
    """Seed the widgets with the ActMaxConfig the page starts from, and return it.

    ui.widgets reads a nested field's default from its class (ActMaxConfig: restarts 1), not
    from the parent's default (ReproConfig.actmax: restarts 10); seeding here makes both right.
    """
    base = build(cls, {})
    for name in filter(None, root.split(".")):
        base = getattr(base, name)
    for name in ("index", "restarts", "steps", "lr", "l2", "n_tokens", "reduce", "method"):
        st.session_state.setdefault(f"{prefix}_{name}", getattr(base, name))
    st.session_state.setdefault(f"{prefix}_site", "sae" if base.sae else base.point.kind)
    return base


def _target(lm, cls, root: str, prefix: str):
    """Site radio (and an SAE's source), then a row of three columns: block and unit sliders
    in the first two. Returns ({path: value}, the row's third column)."""
    default = _start_from(cls, root, prefix).point
    site = st.radio("Where in the model", list(SITES), key=f"{prefix}_site", horizontal=True,
                    format_func=SITES.get,
                    help="Block output: the residual stream after a block. MLP output: what the "
                         "block's MLP adds to it. MLP neurons: the MLP's hidden units after the "
                         "nonlinearity. Embeddings: what enters block 0. SAE latent: one feature "
                         "of a sparse autoencoder, at the hook point it reads.")
    sae = _sae(lm, cls, root, prefix) if site == "sae" else None
    columns = st.columns(3)
    with columns[0]:
        layer = widgets.slider("Block", cls, root + "hook", 0, lm.n_layers - 1,
                               key=f"{prefix}_layer", value=max(default.layer, 0),
                               disabled=site in ("embed", "sae"),
                               help=f"Which of the {lm.n_layers} blocks (0 = the first).")
    # the widgets' hook point, parsed here once (the edge); the config parses its name again
    point = HookPoint.parse(sae.hook if sae else hooks.hook_name(site, layer))
    label = "Latent" if sae else "Neuron" if site == "mlp_post" else "Dimension"
    with columns[1]:
        index = widgets.slider(label, cls, root + "index", 0,
                               units(lm, point, sae) - 1,
                               key=f"{prefix}_index")
    return {root + "hook": point.name, root + "index": index,
            root + "sae": sae.source if sae else ""}, columns[2]


def _sae(lm, cls, root: str, prefix: str):
    """The SAE named in the text box (loaded once per process), or the page stops with why."""
    source = widgets.text("SAE (a folder or a Hugging Face hub id)", cls, root + "sae",
                          key=f"{prefix}_sae").strip()
    if not source:
        st.info("Name an SAE: a folder saved by the Sparse autoencoder page, one in SAELens's "
                "format, or a hub id.", icon=":material/grain:")
        st.stop()
    try:
        loaded = fitting(lm, source)
    except (ValueError, OSError) as e:
        st.error(first_line(e))
        st.stop()
    st.caption(f"{loaded.describe()}: the target is one latent, read at {loaded.hook}.")
    return loaded


def _shown(name: str, value):
    return ", ".join(f"{v:g}" for v in value) if name == "epo_lams" else value


def switch_defaults(prefix: str, method: str) -> None:
    """When the method changes, put its defaults (lab.actmax.config.method_defaults: steps,
    candidates, top_k, bf16_rank, fluency weights) into the widgets the student has not
    moved: a value that differs from the one this function last put there is the student's
    own and is kept."""
    state = st.session_state
    auto = state.setdefault(f"{prefix}_auto", {})
    mark = f"{prefix}_auto_method"
    if state.get(mark) == method:
        return
    first = mark not in state
    for name, value in method_defaults(method).items():
        key, shown = f"{prefix}_{name}", _shown(name, value)
        if first and key in state:                 # the page's own start values: not moved
            auto[name] = state[key]
        if key not in state or state[key] == auto.get(name):
            state[key] = shown
            auto[name] = shown
    state[mark] = method


def _method(cls, root: str, prefix: str, methods: tuple[str, ...]) -> dict:
    """The method radio and the settings of the chosen method."""
    f = field_of(cls, root + "method")
    if st.session_state.get(f"{prefix}_method") not in methods:
        st.session_state[f"{prefix}_method"] = f.default
    method = st.radio("Method", list(methods), key=f"{prefix}_method", horizontal=True,
                      format_func=METHOD_LABELS.get, help=f.help)
    switch_defaults(prefix, method)
    values, cols = {root + "method": method}, st.columns(3)
    if method in ("pez", "discrete"):
        with cols[0]:
            values[root + "lam"] = widgets.select_slider(
                "Fluency weight λ (× cross-entropy)", cls, root + "lam", LAM_OPTIONS,
                key=f"{prefix}_lam", format_func=_g)
    if method in ("discrete", "epo"):
        with cols[1]:
            values[root + "candidates"] = widgets.slider("Candidates per step", cls,
                                                         root + "candidates", 8, 512,
                                                         key=f"{prefix}_candidates", step=4)
        with cols[2]:
            values[root + "top_k"] = widgets.slider("Top-k tokens per position", cls,
                                                    root + "top_k", 1, 256, key=f"{prefix}_top_k")
        with st.columns(3)[0]:
            values[root + "bf16_rank"] = widgets.slider(
                "Rank in bfloat16, re-score the best (0: off)", cls, root + "bf16_rank", 0,
                min(32, st.session_state.get(f"{prefix}_candidates") or 32),
                key=f"{prefix}_bf16_rank")
    if method == "epo":
        # (not ui.widgets.text: it joins a tuple of str only)
        lams = field_of(cls, root + "epo_lams")
        st.session_state.setdefault(f"{prefix}_epo_lams",
                                    _shown("epo_lams", method_defaults("epo")["epo_lams"]))
        with cols[0]:
            text = st.text_input("Fluency weights λ of the population", key=f"{prefix}_epo_lams",
                                 help=lams.help)
        try:
            values[root + "epo_lams"] = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            st.error(f"fluency weights must be comma-separated numbers, got {text!r}")
            st.stop()
    return values


def settings(lm, cls, root: str, prefix: str, restarts: tuple[int, int], inputs: bool = True,
             methods: tuple[str, ...] = METHODS):
    """The whole settings box; returns the config it describes (with the sidebar's seed), or
    shows why it is invalid and stops the page. `root` is the ActMaxConfig's path in `cls`
    ("" or "actmax."); `inputs` adds the input length and the position reduction; `methods`
    are the ones offered."""
    with st.container(border=True):
        values, spare = _target(lm, cls, root, prefix)
        values.update(_method(cls, root, prefix, methods))
        adam = values[root + "method"] in ("continuous", "pez")
        row2 = st.columns(3)
        with spare:
            values[root + "restarts"] = widgets.slider(
                "Restarts (random starts, run as one batch)", cls, root + "restarts", *restarts,
                key=f"{prefix}_restarts")
        with row2[0]:
            values[root + "steps"] = widgets.slider("Steps", cls, root + "steps", 10, 2000,
                                                    key=f"{prefix}_steps", step=5)
        with row2[1]:
            values[root + "lr"] = widgets.select_slider("Learning rate", cls, root + "lr",
                                                        LR_OPTIONS, key=f"{prefix}_lr", format_func=_g,
                                                        disabled=not adam)
        with row2[2]:
            values[root + "l2"] = widgets.select_slider("L2 penalty weight", cls, root + "l2",
                                                        L2_OPTIONS, key=f"{prefix}_l2", format_func=_g,
                                                        disabled=not adam)
        if inputs:
            values.update(_inputs(cls, root, prefix))
    try:
        return build(cls, {**values, "seed": seed()})
    except ValueError as e:
        st.error(first_line(e))
        st.stop()


def _inputs(cls, root: str, prefix: str) -> dict:
    c7, c8, c9 = st.columns(3)
    with c7:
        n_tokens = widgets.slider("Input tokens", cls, root + "n_tokens", 1, 20, key=f"{prefix}_n_tokens")
    with c8:
        reduce = widgets.choice("Activation to maximize", cls, root + "reduce", key=f"{prefix}_reduce",
                                format_func=REDUCE_LABELS.get)
    with c9:
        top = widgets.slider("Corpus windows shown (0: no corpus scan)", cls, root + "corpus_top",
                             0, 20, key=f"{prefix}_corpus_top")
    return {root + "n_tokens": n_tokens, root + "reduce": reduce, root + "corpus_top": top}


def result_header(exp, res, curves) -> None:
    """Above either page's result: a stopped run's note, what ran, and `curves(history,
    index, steps, unit, method)` (the activation chart)."""
    rc = res.config
    PageRun(exp.name).caption()
    st.subheader("Result")
    how = (f"lr {rc.lr:g} · λ {rc.l2:g}" if rc.method in ("continuous", "pez")
           else f"{rc.candidates} candidates of top-{rc.top_k} per step")
    if rc.method == "epo":
        how += " · fluency λ " + ", ".join(f"{v:g}" for v in rc.epo_lams)
    elif rc.lam:
        how += f" · fluency λ {rc.lam:g}"
    st.caption(f"{res.model} · {rc.hook}{' · SAE ' + rc.sae if rc.sae else ''} · {rc.target} · "
               f"{METHOD_LABELS[rc.method]} · {res.steps_done} of {rc.steps} steps · {how} · "
               f"{rc.restarts} restart(s) · seed {rc.seed} · {res.seconds:.1f} s")
    st.altair_chart(curves(res.history, rc.index, rc.steps, rc.unit, rc.method), width="stretch")


def bar_tables(res) -> None:
    """The token methods' prompts beside the corpus's best windows of the same length."""
    if res.prompts is not None and not res.prompts.survives.all():
        st.warning("Some prompts do not survive decode → re-tokenize (marked False): typed in as "
                   "text they become other tokens, with another activation.", icon=":material/warning:")
    left, right = st.columns(2)
    with left:
        st.markdown("**Optimized prompts** (real tokens, fed through the model)")
        if res.prompts is not None:
            cols = ["restart", "lam", "text", "tokens", "activation", "ce", "survives_retokenize"]
            st.dataframe(res.prompts.frame()[cols], hide_index=True, width="stretch")
        else:
            st.caption("Continuous vectors are not tokens: their nearest tokens are above.")
    with right:
        st.markdown(f"**The corpus's best windows of {res.config.n_tokens} tokens** (the bar)")
        if res.bar is None:
            st.caption("No corpus scan for this run (corpus windows shown: 0).")
            return
        st.dataframe(res.bar.windows()[["rank", "text", "activation", "ce", "source"]],
                     hide_index=True, width="stretch")
    b = res.bar.summary()
    st.caption(f"Look for: whether the best prompt beats the best real window "
               f"(**{b['best']:.3f}**, {b['n_windows']:,} windows of {res.config.n_tokens} tokens, "
               f"each fed alone from position 0 like the prompts; {b['corpus']}). Below the bar, "
               f"the optimization found nothing that text does not already contain. A lower "
               f"cross-entropy (ce, nats per token) reads more like text.")
    with st.expander("The corpus's best in context (peaks inside 64-token windows)"):
        st.dataframe(res.bar.contexts, hide_index=True, width="stretch")
        st.caption("The unit at one position of running text (position 0 skipped): not the same "
                   "quantity as a short prompt's value, but what the unit responds to in context.")


def _g(v: float) -> str:
    return f"{v:g}"
