"""Feature view: one SAE latent's evidence (top examples over a corpus, output effect,
ablation or steering against control latents).

Widgets -> FeatureConfig -> ui.jobs.run_live (registry "feature") -> FeatureResult -> charts
(lab.charts.feature). The SAE page's "Feature view" button fills `feature_sae` and
`feature_latent` in session_state and switches here.
"""
from __future__ import annotations

import json

import streamlit as st

from lab import registry, sae_text
from lab.charts import feature as charts
from lab.experiment import field_of
from lab.feature import FeatureConfig
from lab.feature.output import NOTE
from lab.sae.saelens import check_fits, load_sae
from lab.selectivity import parse_words
from ui import widgets
from ui.common import current_model, first_line, seed
from ui.jobs import Job, job_result, run_live

EXP = registry.get("feature")
C = FeatureConfig

st.title("Feature view")
st.markdown(
    "A latent that scores high on one short text is a hypothesis. Three more kinds of evidence "
    "test it, as feature dashboards do: **what it fires on** in text it was not trained on (its "
    "top examples over a corpus), **what it writes** (its decoder direction read through the "
    "final norm and the unembedding), and **what removing it changes** (the SAE spliced into the "
    "forward, the latent ablated or steered, against control latents of similar density).")

lm = current_model()


@st.cache_resource(show_spinner="Reading the SAE...", max_entries=4)
def _preview(source: str, model: str) -> str:
    """What the SAE is, in words, or why it does not fit (a cached look, not the run)."""
    loaded = load_sae(source)
    check_fits(loaded, lm)
    return loaded.describe()


def _sae_box() -> str:
    source = widgets.text("SAE (folder or hub id; empty: the default Palinka SAE)", C, "sae",
                          key="feature_sae", placeholder="e.g. ~/.cache/gpt2-lab/saes/... or "
                          "jbloomAus/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre").strip()
    if source:
        try:
            st.caption(f"Load SAE: {_preview(source, lm.name)}.")
        except ValueError as e:
            st.error(first_line(e), icon=":material/error:")
    else:
        st.caption("The SAE page's default run on this model (trained here on first use, ~3 min "
                   "for SmolLM2 on a CPU, then kept).")
    return source


def _settings() -> FeatureConfig:
    c1, c2 = st.columns([3, 2], gap="large")
    with c1:
        source = _sae_box()
        text = st.text_area("Text for the causal check (empty: the bundled pálinka text)",
                            key="feature_text", height=120, help=field_of(C, "text").help)
        with st.expander("Show the default text"):
            st.write(sae_text.default_text())
        target = widgets.text("Target words (comma separated)", C, "target", key="feature_target")
    with c2:
        latent = widgets.number("Latent (empty: picked for the target words)", C, "latent",
                                key="feature_latent", lo=0, step=1)
        mode = widgets.choice("Causal edit", C, "mode", key="feature_mode",
                              format_func={"ablate": "ablate (set to 0)",
                                           "steer": "steer (add alpha)"}.get)
        alpha = widgets.number("Steering alpha", C, "alpha", key="feature_alpha",
                               disabled=mode != "steer", step=1.0)
        n_control = widgets.number("Control latents", C, "n_control", key="feature_n_control",
                                   lo=0, hi=50)
        with st.expander("More settings"):
            k = widgets.slider("Top examples", C, "k", 1, 100, key="feature_k")
            radius = widgets.slider("Context tokens each side", C, "radius", 0, 32, key="feature_radius")
            max_tokens = widgets.number("Causal text: at most tokens", C, "max_tokens",
                                        key="feature_max_tokens", lo=2, hi=4096, step=64)
            skip_first = widgets.checkbox("Leave out position 0 (attention sink)", C, "skip_first",
                                          key="feature_skip_first")
            extra = st.file_uploader("More corpus text (.txt, added to the scanned corpus)",
                                     type=["txt", "md"], key="feature_corpus")
    corpus = extra.getvalue().decode("utf-8", errors="replace") if extra else ""
    return FeatureConfig(sae=source, latent=None if latent is None else int(latent), text=text,
                         corpus=corpus, target=parse_words(target), k=int(k), radius=int(radius),
                         mode=mode, alpha=float(alpha), n_control=int(n_control),
                         max_tokens=int(max_tokens), skip_first=skip_first, seed=seed())


def _examples(res) -> None:
    ex, c = res.examples, res.corpus
    st.subheader("What it fires on: top examples over the corpus")
    m = st.columns(4)
    m[0].metric("Corpus", f"{ex['tokens_done']:,} tokens",
                help=f"{c['texts']} texts (bundled, fetched articles, extra text), deduplicated: "
                     f"{c['windows']} windows of {c['window_len']} tokens; "
                     f"scanned in {res.scan_seconds:.1f} s")
    m[1].metric("Density", f"{ex['density']:.3%}", help="fraction of the corpus's tokens where "
                "the latent is > 0")
    m[2].metric("Peak activation", f"{ex['max']:.3g}")
    m[3].metric("Target words in the top", f"{res.target_examples()} of {len(res.top)}",
                help="the word around the peak token is one of the target words")
    st.html(charts.examples_html(res.top))
    st.caption("Look for: one kind of token or context at every peak. A geography latent's top "
               "examples should be place names in texts it never saw; a latent whose peaks are "
               "commas, one letter or one source text is something else.")
    if len(ex["histogram"]):
        st.altair_chart(charts.activation_histogram(ex["histogram"], ex["density"]), width="stretch")
        st.caption("Look for: the few strong activations (the examples above) against the bulk. "
                   "Weak activations are most of its firing and can mean something else.")


def _output(res) -> None:
    st.subheader("What it writes: the output effect")
    st.altair_chart(charts.output_chart(res.output), width="stretch")
    st.caption(NOTE)


def _causal(res) -> None:
    st.subheader(f"What {res.edit_words()} it changes")
    if not len(res.effects):
        st.info("The causal check was stopped before the latent was edited.")
        return
    t = res.target_row()
    st.info(res.causal_sentence(), icon=":material/science:")
    m = st.columns(4)
    m[0].metric("Mean KL (target)", f"{t['mean_kl']:.3g} nats", help="per position, unedited "
                "vs edited next-token distribution")
    m[1].metric("Δ p(target words)", f"{t['d_target']:+.3g}", help=f"from {t['target_p']:.3g}, "
                "mean over positions; the target words' first tokens")
    m[2].metric("Fires on (tokens)", f"{t['fires_on']} / {res.text_tokens}",
                help="positions of the causal text where the latent is > 0")
    m[3].metric("SAE alone: mean KL", "-" if res.recon_kl is None else f"{res.recon_kl:.3g}",
                help="the SAE's reconstruction replacing the activation, without the error term: "
                     "what the SAE itself loses at this hook")
    st.altair_chart(charts.kl_chart(res.kl), width="stretch")
    st.caption("Red: the latent's edit; grey: each control's. Look for: red peaks right after the "
               "tokens it fires on (hover for the activation) and well above the grey lines. The "
               "splice keeps the SAE's error term, so an unedited splice gives the model's own output.")
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.effects_chart(res.effects, "mean_kl", "mean KL per position (nats)"),
                    width="stretch")
    c2.altair_chart(charts.effects_chart(res.effects, "d_target", "Δ p(target words)"),
                    width="stretch")
    if len(res.moved):
        st.altair_chart(charts.moved_chart(res.moved), width="stretch")
        st.caption("Look for: the target words among the tokens that lose probability when a "
                   "geography latent is ablated.")
    st.dataframe(res.effects, hide_index=True, width="stretch")


def _downloads(res) -> None:
    c = st.columns(3)
    c[0].download_button("Record (JSON)", json.dumps(res.to_record(), indent=2),
                         f"feature_{res.latent}.json", "application/json", key="feature_dl_json",
                         icon=":material/download:", on_click="ignore")
    frames = res.frames()
    for i, name in enumerate(("examples", "effects")):
        if name in frames:
            c[i + 1].download_button(f"{name.capitalize()} (CSV)", frames[name].to_csv(index=False),
                                     f"feature_{res.latent}_{name}.csv", "text/csv",
                                     key=f"feature_dl_{name}", icon=":material/download:",
                                     on_click="ignore")


# ---------------------------------------------------------------- the page

cfg = None
try:
    cfg = _settings()
except ValueError as e:
    st.error(first_line(e), icon=":material/error:")
if st.button("Run", type="primary", key="feature_run", icon=":material/play_arrow:",
             disabled=cfg is None):
    run_live(lm, EXP, cfg)

result = job_result(lm, EXP)
if result is None:
    st.info("Press **Run**: the causal check (a few forwards over the text), then the corpus "
            "scan (batched forwards that stop after the SAE's block). **Stop** keeps what was "
            "done.", icon=":material/play_circle:")
    st.stop()
Job(EXP.name).caption()
st.markdown(f"**Latent {result.latent}** of {result.sae_info}"
            + (f" — {result.picked}" if result.picked else "") + f"  \n`{result.sae_source}`")
_examples(result)
_output(result)
_causal(result)
_downloads(result)
