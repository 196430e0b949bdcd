"""SAEConfig: one sparse autoencoder's size, sparsity and training (every field documented)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lab.experiment import param, validate


@dataclass(frozen=True)
class SAEConfig:
    # upper bounds where a value can only be a typo: a million latents on GPT-2-XL's 1600 is
    # 6.4 GB of weights before Adam's two copies
    n_latents: int | None = param(None, "Dictionary size; empty: expansion x the input width "
                                        "(at most a million).", min=1, max=1_000_000)
    expansion: int = param(8, "Latents per input dimension when n_latents is not given (the "
                              "seed uses 8x: about 6000 latents for GPT-2's 768; at most 256).",
                           min=1, max=256)
    k: int = param(32, "Active latents per token (Top-K only).", min=1)
    tied: bool = param(True, "Tied weights: the decoder is the encoder transposed (one "
                             "parameter, not a copy).")
    unit_decoder: bool = param(True, "Untied only: rescale each decoder row to unit norm after "
                                     "every step. An L1 code needs it (else the penalty shrinks "
                                     "the code by growing the atoms); a Top-K code can leave "
                                     "the decoder free, as sparsify's bare step does.")
    activation: Literal["topk", "relu"] = param(
        "topk", "Sparsity: 'topk' keeps the k largest ReLU outputs per token; 'relu' is a "
                "ReLU code with an L1 penalty.")
    l1: float = param(1e-3, "Weight of the L1 penalty on the code (relu only), in units of the "
                            "normalized input.", min=0)
    epochs: int = param(100, "Passes over the training rows.", min=1)
    lr: float = param(1e-4, "Adam learning rate (at most 1: beyond it the weights blow up).",
                      gt=0, max=1)
    batch_size: int = param(256, "Rows per optimizer step.", min=1)
    seed: int = param(0, "Seeds the initial weights, the train/validation split and the "
                         "shuffling.", min=0)
    val_fraction: float = param(0.1, "Fraction of rows held out for the validation curve "
                                     "(below 1).", min=0, max=1)

    def __post_init__(self):
        validate(self)
        if self.val_fraction >= 1:
            raise ValueError(f"val_fraction must be below 1 (some rows must train), "
                             f"got {self.val_fraction}")
        if self.n_latents is not None:
            self.latents_for(0)

    def latents_for(self, d_in: int) -> int:
        """The dictionary size for inputs `d_in` wide; the one place k is checked against it."""
        n = self.n_latents if self.n_latents is not None else self.expansion * d_in
        if self.activation == "topk" and self.k > n:
            raise ValueError(f"k ({self.k}) cannot exceed the number of latents ({n})")
        return n
