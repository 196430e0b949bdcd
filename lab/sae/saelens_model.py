"""The SAE arithmetic SAELens uses, as one inference module (see lab.sae.saelens).

    encode(x) = act((norm_in(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)
    decode(z) = norm_out(z @ W_dec + b_dec)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "topk", "jumprelu")
NORMS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
_RUNTIME_NORMS = ("constant_norm_rescale", "layer_norm")    # need the input's own statistics


class SAELensSAE(nn.Module):
    """An inference SAE with SAELens's weights and arithmetic (differentiable in x)."""

    def __init__(self, d_in: int, n_latents: int, activation: str = "relu", k: int | None = None,
                 apply_b_dec_to_input: bool = True, normalize: str = "none"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown SAE activation {activation!r}; supported: {', '.join(ACTIVATIONS)}")
        if normalize not in NORMS:
            raise ValueError(f"unknown normalize_activations {normalize!r}; supported: {', '.join(NORMS)}")
        if activation == "topk" and not (k and 1 <= k <= n_latents):
            raise ValueError(f"a Top-K SAE needs k between 1 and {n_latents}, got {k!r}")
        self.d_in, self.n_latents, self.activation, self.k = d_in, n_latents, activation, k
        self.apply_b_dec_to_input, self.normalize = apply_b_dec_to_input, normalize
        self.W_enc = nn.Parameter(torch.zeros(d_in, n_latents))      # [d_in, d_sae]
        self.W_dec = nn.Parameter(torch.zeros(n_latents, d_in))      # [d_sae, d_in]
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.threshold = nn.Parameter(torch.zeros(n_latents))        # JumpReLU only
        self.requires_grad_(False)

    @property
    def decoder_weight(self) -> torch.Tensor:
        """[n_latents, d_in]: row i is what latent i writes (before norm_out)."""
        return self.W_dec

    def _norm_in(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize == "constant_norm_rescale":
            return x * (math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True))
        if self.normalize == "layer_norm":
            xc = x - x.mean(-1, keepdim=True)
            return xc / (xc.std(-1, keepdim=True) + 1e-5)
        return x

    def _norm_out(self, y: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        if self.normalize not in _RUNTIME_NORMS:
            return y
        if x is None:
            raise ValueError(f"decoding a {self.normalize} SAE needs the input it encoded")
        if self.normalize == "constant_norm_rescale":
            return y / (math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True))
        mu = x.mean(-1, keepdim=True)
        return y * (x - mu).std(-1, keepdim=True) + mu

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., n_latents] before the activation."""
        return (self._norm_in(x) - self.b_dec * self.apply_b_dec_to_input) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., n_latents]."""
        pre = self.pre_acts(x)
        if self.activation == "topk":
            top = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
        z = F.relu(pre)
        return z * (pre > self.threshold) if self.activation == "jumprelu" else z

    def encode_latents(self, x: torch.Tensor, latents: list[int]) -> torch.Tensor:
        """[..., d_in] -> [..., len(latents)]: only those columns (cheap unless Top-K, whose
        choice depends on every latent)."""
        if self.activation == "topk":
            return self.encode(x)[..., latents]
        idx = torch.as_tensor(latents, device=self.W_enc.device)
        pre = ((self._norm_in(x) - self.b_dec * self.apply_b_dec_to_input)
               @ self.W_enc[:, idx] + self.b_enc[idx])
        z = F.relu(pre)
        return z * (pre > self.threshold[idx]) if self.activation == "jumprelu" else z

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """[..., n_latents] -> [..., d_in]; `x` (the encoded input) for runtime norms."""
        return self._norm_out(z @ self.W_dec + self.b_dec, x)

    def out_delta(self, dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """How decode's output moves when z @ W_dec moves by dy (norm_out is affine per token,
        so this is its linear part at input x): an edit of the code, in the input's units."""
        if self.normalize == "constant_norm_rescale":
            return dy * (x.norm(dim=-1, keepdim=True) / math.sqrt(self.d_in))
        if self.normalize == "layer_norm":
            return dy * (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True)
        return dy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of x."""
        return self.decode(self.encode(x), x)



def from_lab(lab_sae) -> SAELensSAE:
    """The lab's SparseAutoencoder as SAELens computes it: the input scale s folded in
    (x/s - b = (x - s b) / s, so W_enc/s, s b_dec, s W_dec)."""
    s = float(lab_sae.scale)
    sae = SAELensSAE(lab_sae.d_in, lab_sae.n_latents, lab_sae.activation,
                     lab_sae.k if lab_sae.activation == "topk" else None)
    with torch.no_grad():
        sae.W_enc.copy_(lab_sae.W_enc.detach().T / s)
        sae.W_dec.copy_(lab_sae.decoder_weight.detach() * s)
        sae.b_enc.copy_(lab_sae.b_enc.detach())
        sae.b_dec.copy_(lab_sae.b_dec.detach() * s)
    return sae
