"""What a feature view returns: the three kinds of evidence as tidy tables, a JSON record and
a brief for the terminal."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.experiment import record
from lab.feature.config import FeatureConfig
from lab.feature.output import NOTE

NAME = "feature"


@dataclass(frozen=True, eq=False)
class FeatureResult:
    config: FeatureConfig
    model: str
    sae_source: str          # the folder or hub id used (the default SAE's folder for "")
    sae_info: str            # e.g. "4608 latents (top-32) on blocks.6.hook_mlp_out"
    hook: str
    n_latents: int
    latent: int
    picked: str              # how the latent was chosen when the config named none ("" if it did)
    output: pd.DataFrame     # promoted / suppressed tokens of the decoder direction
    effects: pd.DataFrame    # one row per edited latent: the target, then the controls
    kl: pd.DataFrame         # per position and edited latent: KL, the latent's activation
    moved: pd.DataFrame      # tokens whose probability the target's edit moved most
    recon_kl: float | None   # mean KL with the SAE's reconstruction alone (no error term)
    text_tokens: int         # positions of the causal text used
    text_cut: bool           # was it cut to max_tokens / the context?
    corpus: dict             # texts, tokens, windows, window_len, names, sources, notes
    texts: dict              # select_from, causal_from, independent
    target_tokens: tuple[str, ...]   # the tokens whose probability the check follows
    controls: dict           # how alike the controls are to the target (medians, worst ratios)
    ranks: dict              # per measure: where the target falls among the controls
    verdict: str             # the target against its controls, one sentence
    warnings: tuple[str, ...]        # about the SAE itself (data size, held-out fit, provenance)
    examples: dict           # lab.feature.examples.examples(): top, histogram, density, ...
    train_examples: pd.DataFrame | None   # top examples on the left-out training text, if asked
    scan_seconds: float
    causal_seconds: float

    # ------------------------------------------------------------ what it amounts to
    @property
    def finished(self) -> bool:
        return self.examples["windows_done"] == self.corpus["windows"] and len(self.effects) > 0

    @property
    def top(self) -> pd.DataFrame:
        return self.examples["top"]

    def target_examples(self) -> int:
        return int(self.top["target"].sum()) if len(self.top) else 0

    def target_row(self) -> dict | None:
        if not len(self.effects):
            return None
        rows = self.effects[self.effects["role"] == "target"]
        return rows.iloc[0].to_dict() if len(rows) else None

    def control_range(self, column: str) -> tuple[float, float] | None:
        if not len(self.effects):
            return None
        ctrl = self.effects.loc[self.effects["role"] == "control", column]
        return (float(ctrl.min()), float(ctrl.max())) if len(ctrl) else None

    def edit_words(self) -> str:
        cfg = self.config
        return "ablating" if cfg.mode == "ablate" else f"steering (alpha {cfg.alpha:g})"

    def causal_sentence(self) -> str:
        """The ablation/steering effect against its controls, in one sentence."""
        t = self.target_row()
        if t is None:
            return "The causal check did not run."
        at = "" if t.get("d_target_at") is None else (
            f" ({t['d_target_at']:+.3g} where the next token begins a target word)")
        words = ("; no token begins a target word" if t.get("d_target") is None else
                 f" and the probability of the target words by {t['d_target']:+.3g}{at}")
        head = (f"{self.edit_words().capitalize()} latent {self.latent} changes the next-token "
                f"distribution by a mean KL of {t['mean_kl']:.3g} nats per position{words}")
        if t["fires_on"] == 0 and self.config.mode == "ablate":
            return head + "; it never fires on this text, so ablating it cannot change anything."
        return head + ". " + (self.verdict or "")

    def ranks_text(self) -> str:
        """Where the target falls among the controls, per measure, in words."""
        names = {"mean_kl": "KL", "target_effect": "target words", "edit_size": "edit size"}
        return "; ".join(f"{names[k]}: rank {v['rank']} of {v['of'] + 1} (beats {v['beats']} of "
                         f"{v['of']}, {v['percentile']:.0f}th percentile)" for k, v in self.ranks.items())

    def corpus_sentence(self) -> str:
        """e.g. "10,714 tokens from 4 texts; palinka.txt left out: the SAE was trained on it"."""
        c = self.corpus
        head = f"{c['tokens']:,} tokens from {c['texts']} held-out texts"
        groups: dict[str, list[str]] = {}
        for note in c.get("notes", ()):   # "leds.txt: only its ..." / "palinka.txt left out: ..."
            name, sep, why = note.partition(": ") if ": only" in note else note.partition(" left out: ")
            key = (": " + why) if ": only" in note else (" left out: " + why) if why else note
            groups.setdefault(key, []).append(name if why else "")
        parts = [", ".join(n for n in names if n) + key for key, names in groups.items()]
        return "; ".join([head, *parts])

    # ------------------------------------------------------------ the contract
    def frames(self) -> dict[str, pd.DataFrame]:
        out = {"examples": self.top, "histogram": self.examples["histogram"],
               "training_text_examples": self.train_examples if self.train_examples is not None
               else pd.DataFrame(), "sources": pd.DataFrame(list(self.corpus["sources"])),
               "output_effect": self.output, "effects": self.effects, "kl": self.kl,
               "moved": self.moved}
        return {k: v for k, v in out.items() if len(v)}

    def to_record(self) -> dict:
        ex = self.examples
        return record(NAME, self.config, self.model, sae=self.sae_source, sae_info=self.sae_info,
                      hook=self.hook, n_latents=self.n_latents, latent=self.latent,
                      picked=self.picked, finished=self.finished,
                      corpus={**self.corpus, "names": list(self.corpus["names"]),
                              "sources": [dict(r) for r in self.corpus["sources"]],
                              "notes": list(self.corpus["notes"])},
                      windows_scanned=ex["windows_done"], tokens_scanned=ex["tokens_done"],
                      corpus_density=ex["density"], corpus_max=ex["max"],
                      heldout_nmse=ex.get("nmse"), corpus_sentence=self.corpus_sentence(),
                      texts=self.texts, target_tokens=list(self.target_tokens),
                      controls=self.controls, ranks=self.ranks, verdict=self.verdict,
                      warnings=list(self.warnings),
                      target_examples=self.target_examples(), top_examples=_rows(self.top),
                      training_text_examples=None if self.train_examples is None
                      else _rows(self.train_examples),
                      output_effect=_rows(self.output), output_note=NOTE,
                      effects=_rows(self.effects), moved=_rows(self.moved),
                      recon_kl=self.recon_kl, causal=self.causal_sentence(),
                      text_tokens=self.text_tokens, text_cut=self.text_cut,
                      scan_seconds=round(self.scan_seconds, 3),
                      causal_seconds=round(self.causal_seconds, 3))

    def brief(self) -> dict:
        ex, c = self.examples, self.corpus
        done = "" if ex["windows_done"] == c["windows"] else f" (stopped after {ex['windows_done']} windows)"
        out = {"model": self.model, "sae": f"{self.sae_info} ({self.sae_source})",
               "latent": f"{self.latent}" + (f" ({self.picked})" if self.picked else ""),
               "corpus": f"{self.corpus_sentence()}; {c['windows']} windows of {c['window_len']}, "
                         f"scanned in {self.scan_seconds:.1f} s{done}",
               "texts": f"latent picked on {self.texts['select_from']}; causal check on "
                        f"{self.texts['causal_from']}" + ("" if self.texts["independent"] else
                        " (the pick and the test are not independent)"),
               **({"warnings": "\n" + "\n".join(f"  - {w}" for w in self.warnings)}
                  if self.warnings else {}),
               "density / max": f"{ex['density']:.4%} of tokens, peak {ex['max']:.3g}",
               f"top {len(self.top)} examples": "\n" + _examples_text(self.top),
               "target words among them": f"{self.target_examples()} of {len(self.top)}"}
        for name in ("promoted", "suppressed"):
            rows = self.output[self.output["direction"] == name]
            out[f"output effect, {name}"] = ", ".join(f"{t!r} {v:+.2f}" for t, v in
                                                       zip(rows["token"], rows["logit"]))
        out["causal"] = self.causal_sentence()
        if self.ranks:
            out["among the controls"] = self.ranks_text()
        if self.controls.get("n"):
            m = self.controls
            out["controls matched on"] = (f"corpus density {m['median_density']:.3g} (target "
                                          f"{m['target_density']:.3g}), mean firing activation "
                                          f"{m['median_mean_active']:.3g} (target "
                                          f"{m['target_mean_active']:.3g}), medians of {m['n']}")
        if self.train_examples is not None:
            out["top examples on its training text (not evidence)"] = "\n" + _examples_text(self.train_examples)
        if len(self.effects):
            out["per latent"] = "\n" + self.effects.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        if self.recon_kl is not None:
            out["SAE reconstruction alone"] = (f"mean KL {self.recon_kl:.3g} nats per position "
                                               "without the error term")
        return out


def _examples_text(top: pd.DataFrame) -> str:
    lines = []
    for r in top.itertuples():
        mark = " *" if r.target else ""
        context = f"{r.before}[[{r.token}]]{r.after}".replace("\n", " ")
        lines.append(f"  {r.rank:>3}. {r.activation:8.3g}  {context}  ({r.source}){mark}")
    return "\n".join(lines)


def _rows(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain Python values (numpy scalars do not go through json)."""
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()}
            for r in frame.to_dict(orient="records")]
