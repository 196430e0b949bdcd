"""What one activation-maximization run is: a hook point, a unit in it, and the optimizer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from lab import hooks
from lab.experiment import param, validate
from lab.models import LabModel

MAX_RESTARTS = 64          # a batch of 64 x 5 tokens is still interactive on a laptop CPU
MAX_TOKENS = 64            # longer inputs stop being "a few tokens" and slow every step
Reduce = Literal["mean", "last"]
REDUCES = get_args(Reduce)
# Default penalty weight, per restart on the *summed* squares ||x||^2. The seeds name the
# penalty (-a + lambda ||x||^2) but not lambda. Its job is to keep x at the scale of real
# token embeddings, so that cosine decoding and the gap meter compare like with like. Measured
# on SmolLM2 (block 7's output, dim 91, 10 restarts x 500 steps, lr 1e-3): lambda = 0, 0.01,
# 0.1, 1 give final activations 342, 341, 343, 339 (no cost to the target) and mean vector
# norms 3.43, 3.41, 3.26, 2.45 against 3.20 for real tokens: 0.1 is where x stays token-sized.
DEFAULT_L2 = 0.1
_BLOCK = re.compile(r"blocks\.(\d+)\.")


def hook_kind(name: str) -> str | None:
    """The kind ("embed", "resid_post", "mlp_out", "mlp_post") of a hook name, None when it is
    not one. Needs no model: the layer's range is checked against the model in `check`."""
    if name == hooks.EMBED:
        return "embed"
    m = _BLOCK.match(name)
    if m is None:
        return None
    layer = int(m.group(1))
    return next((k for k in hooks.KINDS if k != "embed" and hooks.hook_name(k, layer) == name), None)


def hook_layer(name: str) -> int:
    """The block of a valid hook name; -1 for hook_embed (before block 0)."""
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else -1


@dataclass(frozen=True)
class ActMaxConfig:
    """One activation-maximization run (validated here; `check(lm)` adds the model's ranges)."""

    hook: str = param(hooks.resid_post(3),
                      "hook point whose activation is driven up: hook_embed, blocks.L.hook_resid_post, "
                      "blocks.L.hook_mlp_out or blocks.L.mlp.hook_post (an MLP neuron)")
    index: int = param(90, "which unit of that hook point to drive up: a residual-stream dimension "
                           "(0..d_model-1) or, for mlp.hook_post, an MLP neuron (0..d_mlp-1)", min=0)
    n_tokens: int = param(5, "length of the optimized input sequence", min=1, max=MAX_TOKENS)
    steps: int = param(500, "Adam steps", min=1)
    lr: float = param(1e-3, "Adam learning rate (the seeds' value)", gt=0)
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

    def __post_init__(self):
        validate(self)
        if hook_kind(self.hook) is None:
            raise ValueError(f"hook must be hook_embed or blocks.L.hook_resid_post, "
                             f"blocks.L.hook_mlp_out, blocks.L.mlp.hook_post, got {self.hook!r}")

    def check(self, lm: LabModel) -> "ActMaxConfig":
        """Raise ValueError when the hook, index or n_tokens do not fit this model."""
        hooks.parse_hook(lm, self.hook)   # the block's range, in lab.hooks' own words
        width = hooks.width(lm, self.hook)
        if self.index >= width:
            raise ValueError(f"index {self.index} out of range for {self.hook} of {lm.name}: "
                             f"valid 0..{width - 1}")
        if self.n_tokens > lm.n_ctx:
            raise ValueError(f"n_tokens {self.n_tokens} exceeds {lm.name}'s context of {lm.n_ctx}")
        return self

    @property
    def unit(self) -> str:
        """What one index is: an MLP "neuron" or a "dim" of a d_model-wide vector."""
        return "neuron" if hook_kind(self.hook) == "mlp_post" else "dim"

    @property
    def target(self) -> str:
        """The target in words, e.g. "dim 90" or "neuron 7"."""
        return f"{self.unit} {self.index}"
