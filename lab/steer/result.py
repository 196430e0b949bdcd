"""What a steering run returns: every continuation (arm, coefficient), its tokens with their
log-probabilities under its own model and under the unsteered one, the target mass and the
perplexity; tidy tables for the charts and the CSV export, a JSON record and a brief.

    arm          "unsteered" (no vector), "steered" (the vector), "control" (a random
                 direction of the vector's norm); alpha the coefficient (0 for unsteered)
    logp         log p of the token under the arm's own (steered) model, nats
    logp_unsteered  the same token, same context, under the unsteered model, nats
    target_mass  mean over the continuation's tokens of p(next token starts a target word),
                 under the arm's own model
    perplexity   exp(-mean logp_unsteered): what the continuation costs the unsteered model
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.experiment import record
from lab.steer.config import SteerConfig
from lab.steer.generate import Row

NAME = "steer"
ARMS = ("unsteered", "steered", "control")


@dataclass(frozen=True, eq=False)
class Arm:
    arm: str
    alpha: float
    row: Row
    pieces: tuple[str, ...]                 # each token decoded on its own
    text: str                               # the continuation decoded as a whole
    logp_unsteered: tuple[float, ...] | None  # None until scored (a run still generating)

    @property
    def target_mass(self) -> float | None:
        return float(np.mean(self.row.p_target)) if self.row.p_target else None

    @property
    def perplexity(self) -> float | None:
        if not self.logp_unsteered:
            return None
        return float(math.exp(-np.mean(self.logp_unsteered)))


@dataclass(frozen=True, eq=False)
class SteerResult:
    config: SteerConfig
    model: str
    hook: str
    source: str                 # the vector in words
    vector_norm: float
    act_norm: float             # mean norm of the hook's activation over the prompt
    prompt_ids: tuple[int, ...]
    arms: tuple[Arm, ...]
    steps_done: int
    seconds: float              # generation (all rows together), wall
    sae: str = ""

    # ------------------------------------------------------------ state
    @property
    def complete(self) -> bool:
        return (self.steps_done == self.config.max_new_tokens
                and all(a.logp_unsteered is not None for a in self.arms))

    @property
    def tokens_per_second(self) -> float:
        """New tokens of all rows per second of generation."""
        n = sum(len(a.row.tokens) for a in self.arms)
        return n / self.seconds if self.seconds > 0 else 0.0

    def arm(self, arm: str, alpha: float | None = None) -> Arm | None:
        alpha = self.config.alpha if alpha is None else alpha
        for a in self.arms:
            if a.arm == arm and (arm == "unsteered" or a.alpha == float(alpha)):
                return a
        return None

    def side_by_side(self) -> tuple[Arm, ...]:
        """Unsteered, steered and control at the run's alpha."""
        return tuple(a for a in (self.arm("unsteered"), self.arm("steered"), self.arm("control"))
                     if a is not None)

    # ------------------------------------------------------------ tables
    def continuations(self) -> pd.DataFrame:
        return pd.DataFrame([{"arm": a.arm, "alpha": a.alpha, "text": a.text,
                              "target_mass": a.target_mass, "perplexity": a.perplexity}
                             for a in self.arms],
                            columns=["arm", "alpha", "text", "target_mass", "perplexity"])

    def tokens(self) -> pd.DataFrame:
        rows = []
        for a in self.arms:
            un = a.logp_unsteered
            for pos, (piece, lp) in enumerate(zip(a.pieces, a.row.logp)):
                rows.append({"arm": a.arm, "alpha": a.alpha, "pos": pos, "token": piece,
                             "logp": lp, "logp_unsteered": un[pos] if un is not None and
                             pos < len(un) else np.nan})
        return pd.DataFrame(rows, columns=["arm", "alpha", "pos", "token", "logp",
                                           "logp_unsteered"])

    def sweep(self) -> pd.DataFrame:
        """Steered and control per coefficient, long: one row per (arm, alpha, measure)."""
        c = self.continuations()
        c = c[c["arm"] != "unsteered"]
        long = c.melt(id_vars=["arm", "alpha"], value_vars=["target_mass", "perplexity"],
                      var_name="measure", value_name="value")
        return long.dropna().reset_index(drop=True)

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables the charts draw (and the CLI's --out writes as CSV)."""
        return {"continuations": self.continuations(), "tokens": self.tokens()}

    # ------------------------------------------------------------ outputs
    def verdict(self) -> dict:
        """Does the steered arm beat the random control at the run's alpha (more target mass)?"""
        s, c, u = self.arm("steered"), self.arm("control"), self.arm("unsteered")
        if s is None or c is None or s.target_mass is None or c.target_mass is None:
            return {"steered_beats_control": None}
        return {"steered_beats_control": bool(s.target_mass > c.target_mass),
                "mass_steered": s.target_mass, "mass_control": c.target_mass,
                "mass_unsteered": u.target_mass if u is not None else None,
                "mass_ratio_steered_over_control": (s.target_mass / c.target_mass
                                                    if c.target_mass > 0 else None)}

    def to_record(self) -> dict:
        def plain(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x
        arms = [{"arm": a.arm, "alpha": a.alpha, "text": a.text, "tokens": list(a.pieces),
                 "token_ids": list(a.row.tokens), "logp": [plain(v) for v in a.row.logp],
                 "logp_unsteered": None if a.logp_unsteered is None else
                 [plain(v) for v in a.logp_unsteered],
                 "target_mass": plain(a.target_mass), "perplexity": plain(a.perplexity)}
                for a in self.arms]
        return record(NAME, self.config, self.model, hook=self.hook, vector=self.source,
                      sae_folder=self.sae, vector_norm=round(self.vector_norm, 6),
                      activation_norm=round(self.act_norm, 6), complete=self.complete,
                      steps_done=self.steps_done, prompt_ids=list(self.prompt_ids),
                      verdict={k: plain(v) for k, v in self.verdict().items()}, arms=arms,
                      generation_seconds=round(self.seconds, 4),
                      tokens_per_second_wall=round(self.tokens_per_second, 2))

    def brief(self) -> dict:
        v = self.verdict()
        c = self.continuations()
        done = "" if self.complete else f" (stopped after {self.steps_done} tokens)"
        said = {None: "no answer (stopped before both arms had tokens)",
                True: "yes: more target mass than the random control at alpha "
                      f"{self.config.alpha:g}",
                False: "no: the random control has as much target mass or more at alpha "
                       f"{self.config.alpha:g}"}[v["steered_beats_control"]]
        out = {"model": self.model, "hook": self.hook, "vector": self.source,
               "vector norm": f"{self.vector_norm:.4g} (prompt activations: {self.act_norm:.4g})",
               "steered beats control": said + done}
        for a in self.side_by_side():
            out[f"{a.arm} (alpha {a.alpha:g})"] = repr(a.text)
        out["per continuation"] = "\n" + c.drop(columns="text").to_string(
            index=False, float_format=lambda x: f"{x:.4g}")
        return out
