"""Feature view: one SAE latent's evidence (top examples over a corpus, output effect,
ablation or steering against control latents).

Widgets -> FeatureConfig -> ui.jobs.run_live (registry "feature") -> FeatureResult -> charts
(lab.charts.feature). The SAE page's "Feature view" button fills `feature_sae` and
`feature_latent` in session_state and switches here.
"""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from lab import registry
from lab.charts import feature as charts
from lab.corpus.sources import cached_articles, default_sources
from lab.experiment import field_of
from lab.feature import FeatureConfig
from lab.feature.output import NOTE
from lab.feature.store import CORPUS_SAE, PALINKA_SAE
from lab.hidden import decode_upload
from lab.sae.load import describe
from lab.selectivity import parse_words
from ui import widgets
from ui.common import current_model, first_line, seed
from ui.jobs import PageRun, job_result, run_live
from ui.share import share_button

EXP = registry.get("feature")
C = FeatureConfig

st.title("Feature view")
st.markdown(
    "A latent that scores high on one text is a hypothesis. Three more kinds of evidence test "
    "it, as feature dashboards do: **what it fires on** in held-out text (the corpus minus "
    "whatever the SAE was trained on), **what it writes** (its decoder direction read through "
    "the final norm and the unembedding), and **what removing it changes** (the SAE spliced "
    "into the forward, the latent ablated or steered, against control latents that fire as "
    "often and as strongly). The latent is picked on one text and tested on another.")

lm = current_model()
SAE_KINDS = {"corpus": "The lab's corpus SAE (default)", "palinka": "The original notes' Palinka SAE",
             "folder": "A folder or hub id"}


def _sae_box() -> str:
    kind = st.radio("SAE", list(SAE_KINDS), format_func=SAE_KINDS.get, key="feature_sae_kind",
                    help=field_of(C, "sae").help)
    if kind == "corpus":
        st.caption("Trained here on the bundled texts' first four fifths (about 20 tokens per "
                   "latent; ~30 s on first use, then kept); their last fifths stay held out.")
        return CORPUS_SAE
    if kind == "palinka":
        st.caption("The SAE page's default run: 4608 latents on the ~230-token pálinka text "
                   "(0.05 tokens per latent). Its examples come from the other texts.")
        return PALINKA_SAE
    source = st.text_input("Folder or hub id", key="feature_sae", placeholder="e.g. "
                           "~/.cache/gpt2-lab/saes/... or jbloomAus/GPT2-Small-SAEs-Reformatted/"
                           "blocks.8.hook_resid_pre").strip()
    if source:
        try:
            with st.spinner("Reading the SAE..."):   # once per process: lab.sae.load keeps it
                st.caption(f"Load SAE: {describe(lm, source)}.")
        except ValueError as e:
            st.error(first_line(e), icon=":material/error:")
    return source


def _sources() -> tuple[str, ...]:
    articles = [a.name for a in cached_articles()]
    options = list(default_sources()) + articles
    picked = st.multiselect("Corpus sources", options, default=list(default_sources()),
                            key="feature_sources", help=field_of(C, "sources").help,
                            format_func=lambda n: n.removeprefix("article:").split("@")[0]
                            + (" (fetched article)" if n.startswith("article:") else ""))
    st.caption("What the SAE was trained on is left out of them at run time (the result says "
               "what was left out); fetched articles appear here once fetched on the laminar page.")
    return tuple(picked)


def _upload(label: str, key: str) -> str:
    up = st.file_uploader(label, type=["txt", "md"], key=key)
    return decode_upload(up.getvalue()) if up else ""


def _settings() -> FeatureConfig:
    c1, c2 = st.columns([3, 2], gap="large")
    with c1:
        source = _sae_box()
        sources = _sources()
        target = widgets.text("Target words (comma separated)", C, "target", key="feature_target")
        with st.expander("Texts: where the latent is picked and tested"):
            select = st.text_area("Selection text (empty: the SAE's training text)",
                                  key="feature_select_text", height=90,
                                  help=field_of(C, "select_text").help)
            text = st.text_area("Causal-check text (empty: the held-out corpus)",
                                key="feature_text", height=90, help=field_of(C, "text").help)
            extra = _upload("More corpus text (.txt, added to the sources)", "feature_corpus")
            include_training = widgets.checkbox("Also show top examples on the training text "
                                                "(a separate table)", C, "include_training",
                                                key="feature_include_training")
    with c2:
        latent = widgets.number("Latent (empty: picked for the target words)", C, "latent",
                                key="feature_latent", lo=0, step=1)
        mode = widgets.choice("Causal edit", C, "mode", key="feature_mode",
                              format_func={"ablate": "ablate (set to 0)",
                                           "steer": "steer (add alpha)"}.get)
        alpha = widgets.number("Steering alpha", C, "alpha", key="feature_alpha",
                               disabled=mode != "steer", step=1.0, lo=-1000.0, hi=1000.0)
        n_control = widgets.number("Control latents", C, "n_control", key="feature_n_control",
                                   lo=0, hi=100)
        with st.expander("More settings"):
            k = widgets.slider("Top examples", C, "k", 1, 100, key="feature_k")
            radius = widgets.slider("Context tokens each side", C, "radius", 0, 32, key="feature_radius")
            max_tokens = widgets.number("Causal text: at most tokens", C, "max_tokens",
                                        key="feature_max_tokens", lo=3, hi=4096, step=64)
            skip_first = widgets.checkbox("Leave out position 0 (attention sink)", C, "skip_first",
                                          key="feature_skip_first")
    return FeatureConfig(sae=source, latent=None if latent is None else int(latent),
                         sources=sources, corpus=extra, select_text=select, text=text,
                         include_training=include_training, target=parse_words(target),
                         k=int(k), radius=int(radius), mode=mode,
                         alpha=float(alpha) if mode == "steer" else C.alpha,
                         n_control=int(n_control), max_tokens=int(max_tokens),
                         skip_first=skip_first, seed=seed())


def _provenance(res) -> None:
    """Which text did what, and the warnings about the SAE: above the evidence."""
    for w in res.warnings:
        st.warning(w, icon=":material/warning:")
    t = res.texts
    st.markdown(f"**Corpus:** {res.corpus_sentence()}.  \n**Picked on** {t['select_from']}; "
                f"**tested on** {t['causal_from']}.")
    if not t["independent"]:
        st.warning("The latent was picked and tested on the same text, so the pick and the test "
                   "are not independent: give a selection text or a causal text.",
                   icon=":material/warning:")
    with st.expander("Corpus sources (name, tokens, sha256)"):
        st.dataframe(pd.DataFrame(list(res.corpus["sources"])), hide_index=True, width="stretch")


def _examples(res) -> None:
    ex, c = res.examples, res.corpus
    st.subheader("What it fires on: top examples in held-out text")
    m = st.columns(4)
    m[0].metric("Held-out corpus", f"{ex['tokens_done']:,} tokens",
                help=f"{c['texts']} texts: {c['windows']} windows of {c['window_len']} tokens; "
                     f"scanned in {res.scan_seconds:.1f} s")
    m[1].metric("Density", f"{ex['density']:.3%}", help="fraction of the held-out tokens where "
                "the latent is > 0")
    m[2].metric("Peak activation", f"{ex['max']:.3g}")
    m[3].metric("Target words in the top", f"{res.target_examples()} of {len(res.top)}",
                help="the word around the peak token is one of the target words")
    st.html(charts.examples_html(res.top))
    st.caption("Look for: one kind of token or context at every peak. A geography latent's top "
               "examples should be place names in these texts it never saw; a latent whose peaks "
               "are commas, one letter or one source text is something else.")
    if len(ex["histogram"]):
        st.altair_chart(charts.activation_histogram(ex["histogram"], ex["density"]), width="stretch")
        st.caption("Look for: the few strong activations (the examples above) against the bulk. "
                   "Weak activations are most of its firing and can mean something else.")
    if res.train_examples is not None:
        st.subheader("Top examples on its training text (not evidence)")
        st.caption("The SAE was fitted to these tokens, so its latents can memorise them: shown "
                   "apart, for comparison only.")
        st.html(charts.examples_html(res.train_examples))


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
    if res.ranks:
        st.caption("Among the controls: " + res.ranks_text() + ".")
    m = st.columns(4)
    m[0].metric("Mean KL (target)", f"{t['mean_kl']:.3g} nats", help="per position, unedited "
                "vs edited next-token distribution")
    at = t.get("d_target_at")
    m[1].metric("Δ p(target) before a target word", "-" if at is None or pd.isna(at) else f"{at:+.3g}",
                help=f"at the {t.get('target_positions', 0) if 'target_positions' in t else ''} "
                     "positions whose next token begins a target word; over all positions: "
                     + ("-" if t.get("d_target") is None or pd.isna(t["d_target"]) else f"{t['d_target']:+.3g}")
                     + "; tokens followed: " + ", ".join(repr(x) for x in res.target_tokens[:30]))
    m[2].metric("Edit size", f"{t['edit_size']:.3g}", help="|change| / |residual stream| after "
                "the SAE's block, mean over the positions edited")
    m[3].metric("SAE alone: mean KL", "-" if res.recon_kl is None else f"{res.recon_kl:.3g}",
                help="the SAE's reconstruction replacing the activation, without the error term: "
                     "what the SAE itself loses at this hook")
    if res.controls.get("n"):
        c = res.controls
        st.caption(f"Controls: the {c['n']} latents closest to the target in held-out density and "
                   f"mean firing activation (medians {c['median_density']:.3g} vs "
                   f"{c['target_density']:.3g}, {c['median_mean_active']:.3g} vs "
                   f"{c['target_mean_active']:.3g}; the farthest within "
                   f"{c['max_density_ratio']:.2f}x and {c['max_activation_ratio']:.2f}x).")
    st.altair_chart(charts.kl_chart(res.kl), width="stretch")
    st.caption("Red: the latent's edit; grey: each control's. Look for: red peaks right after the "
               "tokens it fires on (hover for the activation) and well above the grey lines. The "
               "splice keeps the SAE's error term, so an unedited splice gives the model's own output.")
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.effects_chart(res.effects, "mean_kl", "mean KL per position (nats)"),
                    width="stretch")
    col = "d_target_at" if res.effects["d_target_at"].notna().any() else "d_target"
    c2.altair_chart(charts.effects_chart(res.effects.fillna({col: 0.0}), col,
                                         "Δ p(target words) before a target word"
                                         if col == "d_target_at" else "Δ p(target words)"),
                    width="stretch")
    st.caption("Look for: the red bar outside the grey ones. Inside them, the effect is what any "
               "latent that fires as often and as strongly does.")
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
share_button(result, "feature")
if result is None:
    st.info("Press **Run**: the held-out corpus scan (batched forwards that stop after the "
            "SAE's block), then the causal check (a few forwards over the text, the latent and "
            "each control). **Stop** keeps what was done.", icon=":material/play_circle:")
    st.stop()
PageRun(EXP.name).caption()
st.markdown(f"**Latent {result.latent}** of {result.sae_info}"
            + (f" — {result.picked}" if result.picked else "") + f"  \n`{result.sae_source}`")
_provenance(result)
_examples(result)
_output(result)
_causal(result)
_downloads(result)
