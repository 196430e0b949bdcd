"""What one activation-maximization run is: a target (a unit of a hook point, or an SAE latent
there), a method (continuous, pez, discrete, epo), the optimizer and the corpus bar."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

from lab import hooks
from lab.experiment import param, validate
from lab.hooks import HookPoint
from lab.models import LabModel
from lab.sae.load import units

MAX_RESTARTS = 64          # a batch of 64 x 5 tokens is still interactive on a laptop CPU
MAX_TOKENS = 64            # longer inputs stop being "a few tokens" and slow every step
Reduce = Literal["mean", "last"]
REDUCES = get_args(Reduce)
Method = Literal["continuous", "pez", "discrete", "epo"]
METHODS = get_args(Method)
TOKEN_METHODS = ("pez", "discrete", "epo")     # their answer is a real token sequence
MAX_CANDIDATES = 1024      # candidate prompts per step and restart: one batched forward each
MAX_LR = 1.0               # Adam moves each number by about lr per step: above 1 a vector leaves
                           # the token scale (norm ~3) in one step, and large values overflow
MAX_LAM = 100.0            # fluency weights: 100 nats per unit of activation is already "text only"
MAX_CORPUS_TOP = 100       # best windows shown; each is measured again (a full forward)
# Defaults per method, sized for a class (one run <= 20 s on smollm2-135m, 2 CPU threads, and
# still a result worth showing). Chosen from the activation reached against steps on two
# targets (blocks.3.hook_resid_post dim 90 and blocks.7.hook_resid_post dim 91; table in
# bench/results/actmax_defaults.md): past these step counts the best activation rises little.
METHOD_DEFAULTS: dict[str, dict] = {
    "continuous": {"steps": 500},
    "pez": {"steps": 200},
    "discrete": {"steps": 60, "candidates": 128, "top_k": 64},
    "epo": {"steps": 25, "candidates": 60, "top_k": 64, "epo_lams": (0.0, 0.5, 2.0)},
}
# bf16_rank's default where a bfloat16 forward is fast (AMX / AVX512-BF16, or a GPU): each
# row's best N of the bfloat16 ranking are scored again in float32
AUTO_BF16_RANK = {"discrete": 8, "epo": 4}
# EPO-lite's default fluency weights (nats of cross-entropy traded per unit of activation).
# Spread so that the population runs from "activation only" to "mostly fluent".
EPO_LAMS = (0.0, 0.25, 0.5, 1.0, 2.0)
# Default penalty weight, per restart on the *summed* squares ||x||^2. The seeds name the
# penalty (-a + lambda ||x||^2) but not lambda. Its job is to keep x at the scale of real
# token embeddings, so that cosine decoding and the gap meter compare like with like. Measured
# on SmolLM2 (block 7's output, dim 91, 10 restarts x 500 steps, lr 1e-3): lambda = 0, 0.01,
# 0.1, 1 give final activations 342, 341, 343, 339 (no cost to the target) and mean vector
# norms 3.43, 3.41, 3.26, 2.45 against 3.20 for real tokens: 0.1 is where x stays token-sized.
DEFAULT_L2 = 0.1


def auto_bf16_rank(method: str) -> int:
    """bf16_rank's default: AUTO_BF16_RANK where a bfloat16 forward is fast here (a GPU, or a
    CPU with AMX tiles or AVX512-BF16: lab.sae.select's gate; LAB_ACTMAX_BF16=0/1 forces it),
    else 0 (float32 throughout)."""
    import os
    if method not in AUTO_BF16_RANK:
        return 0
    forced = os.environ.get("LAB_ACTMAX_BF16")
    if forced in ("0", "1"):
        return AUTO_BF16_RANK[method] if forced == "1" else 0
    import torch
    from lab.sae.select import _fast_bf16
    return AUTO_BF16_RANK[method] if (torch.cuda.is_available() or _fast_bf16()) else 0


def method_defaults(method: str) -> dict:
    """The values a config of `method` takes for the fields left unset (what a page switches
    its widgets to when the method changes)."""
    own = {"top_k": 64, "candidates": 128, "epo_lams": EPO_LAMS, **METHOD_DEFAULTS[method]}
    return {**own, "bf16_rank": min(auto_bf16_rank(method), own["candidates"])}


@dataclass(frozen=True)
class ActMaxConfig:
    """One activation-maximization run (validated here; `check(lm)` adds the model's ranges)."""

    hook: str = param(hooks.resid_post(3),
                      f"hook point whose activation is driven up: {hooks.SPELLED} (mlp.hook_post: "
                      "an MLP neuron)")
    index: int = param(90, "which unit of that hook point to drive up: a residual-stream dimension "
                           "(0..d_model-1) or, for mlp.hook_post, an MLP neuron (0..d_mlp-1)", min=0)
    n_tokens: int = param(5, "length of the optimized input sequence", min=1, max=MAX_TOKENS)
    steps: int | None = param(None, "optimization steps (default: the method's: continuous 500, "
                                    "pez 200, discrete 60, epo 25)", min=1)
    lr: float = param(1e-3, f"Adam learning rate (the seeds' value; at most {MAX_LR:g})", gt=0,
                      max=MAX_LR)
    l2: float = param(DEFAULT_L2, "weight of the L2 penalty ||x||^2, summed over one restart's "
                                  "input vectors", min=0)
    restarts: int = param(1, "independent random starts, optimized together as one batch",
                          min=1, max=MAX_RESTARTS)
    reduce: Reduce = param("mean", "the activation to maximize: the mean over positions, or the "
                                   "last position only")
    seed: int = param(0, "random seed: restart r starts from a generator seeded with (seed, r)",
                      min=0)
    neighbours: int = param(5, "units on each side of the target whose mean activation is tracked "
                               "(to see that only the target rises)", min=0)
    method: Method = param("continuous",
                           "how the input is optimized: continuous (free input vectors, not real "
                           "tokens), pez (a continuous copy, each forward on its nearest tokens), "
                           "discrete (GCG-style token swaps picked by the gradient of a one-hot "
                           "input), epo (discrete with a population over several fluency weights: "
                           "the activation-vs-cross-entropy frontier)")
    lam: float = param(0.0, "fluency weight of pez and discrete: maximize activation - lam x the "
                            "prompt's cross-entropy under the model (nats per token; > 0 runs the "
                            "full model; at most 100)", min=0, max=MAX_LAM)
    top_k: int | None = param(None, "discrete and epo: candidate tokens per position, the top-k "
                                    "by the one-hot gradient (default 64)", min=1)
    candidates: int | None = param(None, "discrete and epo: prompts with one token swapped "
                                         "(distinct swaps, at most n_tokens x top_k), scored per "
                                         "step and restart in one batched forward (default: "
                                         "discrete 128, epo 60; at most 1024)",
                                   min=1, max=MAX_CANDIDATES)
    bf16_rank: int | None = param(None, "discrete and epo: 0 scores every candidate in float32; "
                                        "N > 0 ranks them in one bfloat16 forward first (faster "
                                        "per step on a CPU with AMX tiles or AVX512-BF16, or a "
                                        "GPU) and scores each row's best N again in float32, the "
                                        "only ones a step can move to; at most candidates "
                                        "(default: discrete 8, epo 4 where bfloat16 is fast, "
                                        "else 0)", min=0)
    epo_lams: tuple[float, ...] | None = param(None, "epo: the fluency weights of the population, "
                                                     "one member each, each 0..100 (default "
                                                     "0, 0.5, 2)")
    patience: int = param(0, "discrete and epo: stop early when the best prompt has not changed "
                             "for this many steps (0: run every step)", min=0)
    sae: str = param("", "an SAE (folder or hub id) whose latent `index` is the target, read at the "
                         "SAE's hook (hook must name it); empty: the hook's own units")
    corpus_top: int = param(5, "best real windows of the corpus (bundled texts and fetched articles) "
                               "shown as the bar to beat; 0 skips the corpus scan; at most 100",
                            min=0, max=MAX_CORPUS_TOP)

    def __post_init__(self):
        self._resolve_defaults()
        validate(self)
        _ = self.point            # the hook name parsed once (lab.hooks): one sentence if it is none
        self._check_method()

    def _resolve_defaults(self) -> None:
        """Fill the fields left None with the method's defaults (METHOD_DEFAULTS; bf16_rank by
        the machine): the stored config, its record and its job key carry the values run."""
        if self.method not in METHODS:
            return                                     # validate names the bad method
        own = {"top_k": 64, "candidates": 128, "epo_lams": EPO_LAMS, **METHOD_DEFAULTS[self.method]}
        for name, value in own.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.bf16_rank is None:
            object.__setattr__(self, "bf16_rank", min(auto_bf16_rank(self.method),
                                                      self.candidates))
        if isinstance(self.epo_lams, list):
            object.__setattr__(self, "epo_lams", tuple(self.epo_lams))

    def _check_method(self) -> None:
        lams = self.epo_lams
        if not isinstance(lams, tuple) or not lams or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and 0 <= v <= MAX_LAM for v in lams):
            raise ValueError(f"epo_lams must be finite fluency weights between 0 and {MAX_LAM:g}, "
                             f"got {lams!r}")
        if self.lam > 0 and self.method not in ("pez", "discrete"):
            raise ValueError(f"lam is the fluency weight of pez and discrete (epo has epo_lams); "
                             f"set it to 0 for {self.method}")
        if self.bf16_rank and self.method not in ("discrete", "epo"):
            raise ValueError(f"bf16_rank ranks the candidates of discrete and epo; set it to 0 "
                             f"for {self.method}")
        if self.method == "epo":
            lams = self.epo_lams
            if len(set(lams)) < 2:
                raise ValueError(f"epo_lams must be two or more different finite weights >= 0, "
                                 f"got {lams!r}")
            if self.candidates < len(lams):
                raise ValueError(f"epo shares candidates among its {len(lams)} members: "
                                 f"candidates must be at least {len(lams)}, got {self.candidates}")
        if self.bf16_rank > self.candidates:
            raise ValueError(f"bf16_rank re-scores the best N of the candidates: it must be at "
                             f"most candidates ({self.candidates}), got {self.bf16_rank}")
        if self.fluent and self.n_tokens < 2:
            raise ValueError("the cross-entropy scores every token after the first: n_tokens must "
                             "be at least 2 with a fluency weight")

    @cached_property
    def point(self) -> HookPoint:
        """The hook point `hook` names, parsed once (not a field: the config stays its fields)."""
        return HookPoint.parse(self.hook)

    def check(self, lm: LabModel) -> "ActMaxConfig":
        """Raise ValueError when the hook, index or n_tokens do not fit this model. Reads no
        weights: an SAE's latents are checked when a run opens it (lab.actmax.target_of)."""
        self.point.check(lm)
        if not self.sae:
            self.check_index(lm, units(lm, self.point))
        if self.n_tokens > lm.n_ctx:
            raise ValueError(f"n_tokens {self.n_tokens} exceeds {lm.name}'s context of {lm.n_ctx}")
        return self

    def check_index(self, lm: LabModel, width: int) -> None:
        """One sentence when `index` is not one of the `width` units it counts in."""
        if self.index >= width:
            where = f"the latents of SAE {self.sae}" if self.sae else f"{self.hook} of {lm.name}"
            raise ValueError(f"index {self.index} out of range for {where}: valid 0..{width - 1}")

    @property
    def fluent(self) -> bool:
        """Does the objective score the prompt's cross-entropy (the full forward)?"""
        return self.lam > 0 or (self.method == "epo" and max(self.epo_lams) > 0)

    @property
    def tokens(self) -> bool:
        """Is the answer a real token sequence (pez, discrete, epo)?"""
        return self.method in TOKEN_METHODS

    @property
    def unit(self) -> str:
        """What one index is: an SAE "latent", an MLP "neuron" or a "dim" of a d_model-wide vector."""
        if self.sae:
            return "latent"
        return "neuron" if self.point.kind == "mlp_post" else "dim"

    @property
    def target(self) -> str:
        """The target in words, e.g. "dim 90" or "neuron 7"."""
        return f"{self.unit} {self.index}"
