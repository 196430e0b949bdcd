"""The settings both activation-maximization pages share: where the target is (a site and a
block, then a unit whose range follows that hook point's width) and the optimizer. Defaults
and help come from the config fields (ui.widgets); values live under `{prefix}_...` keys."""
from __future__ import annotations

import streamlit as st

from lab import hooks
from lab.actmax import hook_kind, hook_layer
from lab.experiment import build
from ui import widgets
from ui.common import first_line, seed
from ui.jobs import Job

LR_OPTIONS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)   # the sliders' learning rates
L2_OPTIONS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)           # and L2 penalty weights
SITES = {"resid_post": "block output (residual stream)", "mlp_out": "MLP output",
         "mlp_post": "MLP neurons", "embed": "embeddings"}   # hook kind -> what a student reads
REDUCE_LABELS = {"mean": "mean over positions", "last": "last position"}


def _start_from(cls, root: str, prefix: str):
    """Seed the widgets with the ActMaxConfig the page starts from, and return it.

    ui.widgets reads a nested field's default from its class (ActMaxConfig: restarts 1), not
    from the parent's default (ReproConfig.actmax: restarts 10); seeding here makes both right.
    """
    base = build(cls, {})
    for name in filter(None, root.split(".")):
        base = getattr(base, name)
    for name in ("index", "restarts", "steps", "lr", "l2", "n_tokens", "reduce"):
        st.session_state.setdefault(f"{prefix}_{name}", getattr(base, name))
    st.session_state.setdefault(f"{prefix}_site", hook_kind(base.hook))
    return base


def _target(lm, cls, root: str, prefix: str):
    """Site radio, then a row of three columns: block and unit sliders in the first two.
    Returns ({path: value}, the row's third column)."""
    default = _start_from(cls, root, prefix).hook
    site = st.radio("Where in the model", list(SITES), key=f"{prefix}_site", horizontal=True,
                    format_func=SITES.get,
                    help="Block output: the residual stream after a block. MLP output: what the "
                         "block's MLP adds to it. MLP neurons: the MLP's hidden units after the "
                         "nonlinearity. Embeddings: what enters block 0.")
    columns = st.columns(3)
    with columns[0]:
        layer = widgets.slider("Block", cls, root + "hook", 0, lm.n_layers - 1,
                               key=f"{prefix}_layer", value=max(hook_layer(default), 0),
                               disabled=site == "embed",
                               help=f"Which of the {lm.n_layers} blocks (0 = the first).")
    hook = hooks.hook_name(site, layer)
    with columns[1]:
        index = widgets.slider("Neuron" if site == "mlp_post" else "Dimension", cls,
                               root + "index", 0, hooks.width(lm, hook) - 1, key=f"{prefix}_index")
    return {root + "hook": hook, root + "index": index}, columns[2]


def settings(lm, cls, root: str, prefix: str, restarts: tuple[int, int], inputs: bool = True):
    """The whole settings box; returns the config it describes (with the sidebar's seed), or
    shows why it is invalid and stops the page. `root` is the ActMaxConfig's path in `cls`
    ("" or "actmax."); `inputs` adds the input length and the position reduction."""
    with st.container(border=True):
        values, spare = _target(lm, cls, root, prefix)
        row2 = st.columns(3)
        with spare:
            values[root + "restarts"] = widgets.slider(
                "Restarts (random starts, run as one batch)", cls, root + "restarts", *restarts,
                key=f"{prefix}_restarts")
        with row2[0]:
            values[root + "steps"] = widgets.slider("Steps", cls, root + "steps", 10, 2000,
                                                    key=f"{prefix}_steps", step=10)
        with row2[1]:
            values[root + "lr"] = widgets.select_slider("Learning rate", cls, root + "lr",
                                                        LR_OPTIONS, key=f"{prefix}_lr", format_func=_g)
        with row2[2]:
            values[root + "l2"] = widgets.select_slider("L2 penalty weight", cls, root + "l2",
                                                        L2_OPTIONS, key=f"{prefix}_l2", format_func=_g)
        if inputs:
            values.update(_inputs(cls, root, prefix))
    try:
        return build(cls, {**values, "seed": seed()})
    except ValueError as e:
        st.error(first_line(e))
        st.stop()


def _inputs(cls, root: str, prefix: str) -> dict:
    c7, c8 = st.columns(2)
    with c7:
        n_tokens = widgets.slider("Input tokens", cls, root + "n_tokens", 1, 20, key=f"{prefix}_n_tokens")
    with c8:
        reduce = widgets.choice("Activation to maximize", cls, root + "reduce", key=f"{prefix}_reduce",
                                format_func=REDUCE_LABELS.get)
    return {root + "n_tokens": n_tokens, root + "reduce": reduce}


def result_header(exp, res, curves) -> None:
    """Above either page's result: a stopped run's note, what ran, and `curves(history,
    index, steps, unit)` (the activation chart)."""
    rc = res.config
    Job(exp.name).caption()
    st.subheader("Result")
    st.caption(f"{res.model} · {rc.hook} · {rc.target} · {res.steps_done} of {rc.steps} steps · "
               f"lr {rc.lr:g} · λ {rc.l2:g} · {rc.restarts} restart(s) · seed {rc.seed} · "
               f"{res.seconds:.1f} s")
    st.altair_chart(curves(res.history, rc.index, rc.steps, rc.unit), width="stretch")


def _g(v: float) -> str:
    return f"{v:g}"
