"""Per-architecture map: where the embeddings, blocks, MLPs, attention, final norm and
unembedding live in an HF model, and how one attention module's probabilities are computed.

One adapter per family, so the rest of `lab` never touches `model.transformer.h` or
`model.model.layers` directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Arch:
    """Module paths of one architecture family (attribute paths from the CausalLM root)."""

    family: str      # "gpt2" or "llama"
    body: str        # the transformer without the LM head
    blocks: str      # the ModuleList of blocks
    final_norm: str  # applied by HF to the last hidden_states entry
    mlp: str         # attribute of a block
    mlp_out_proj: str  # attribute of the MLP: its input is the hidden neurons (hook_post)
    attn: str = "attn"        # attribute of a block: its self-attention module
    unembed: str = "lm_head"  # the LM head: final-normed residual -> logits

    def get(self, model: nn.Module, path: str) -> nn.Module:
        for part in path.split("."):
            model = getattr(model, part)
        return model

    def body_of(self, model: nn.Module) -> nn.Module:
        return self.get(model, self.body)

    def blocks_of(self, model: nn.Module) -> nn.ModuleList:
        return self.get(model, self.blocks)

    def final_norm_of(self, model: nn.Module) -> nn.Module:
        return self.get(model, self.final_norm)

    def mlp_of(self, model: nn.Module, layer: int) -> nn.Module:
        return getattr(self.blocks_of(model)[layer], self.mlp)

    def mlp_out_proj_of(self, model: nn.Module, layer: int) -> nn.Module:
        return getattr(self.mlp_of(model, layer), self.mlp_out_proj)

    def attn_of(self, model: nn.Module, layer: int) -> nn.Module:
        return getattr(self.blocks_of(model)[layer], self.attn)

    def unembed_of(self, model: nn.Module) -> nn.Module:
        """The LM head (a Linear [d_model -> vocab]; tied or not to the input embeddings)."""
        return self.get(model, self.unembed)

    def tied(self, model: nn.Module) -> bool:
        """Is the unembedding the input embedding matrix itself (GPT-2, SmolLM2) or its own?"""
        return self.unembed_of(model).weight is model.get_input_embeddings().weight

    def read_out(self, model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
        """Residual stream [..., d_model] -> logits [..., vocab]: the final norm, then the
        unembedding, exactly as the model does after its last block (the logit lens)."""
        return self.unembed_of(model)(self.final_norm_of(model)(resid))

    def attention_pattern(self, attn: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
        """The attention probabilities [batch, head, query, key] that `attn` computes from the
        inputs it was called with (a forward hook's args/kwargs).

        Recomputed, not read: HF's default sdpa kernel never materialises them, and switching
        the shared model to eager attention would change every other user's forward. This is
        the eager path's arithmetic on the same inputs: scores q.k^T * attn.scaling, the causal
        mask (and the model's own 4-D mask when one is passed), softmax over keys.
        """
        x = args[0] if args else kwargs["hidden_states"]            # [batch, pos, d_model]
        if self.family == "gpt2":
            q, k, _ = attn.c_attn(x).split(attn.split_size, dim=2)
            q, k = _heads(q, attn.head_dim), _heads(k, attn.head_dim)
        else:
            q, k = _heads(attn.q_proj(x), attn.head_dim), _heads(attn.k_proj(x), attn.head_dim)
            q, k = _rotary(q, k, kwargs["position_embeddings"] if "position_embeddings" in kwargs
                           else args[1])
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # GQA: kv head -> its heads
        scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling  # [batch, head, q, k]
        return torch.softmax(_masked(scores, kwargs.get("attention_mask")), dim=-1)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[batch, pos, heads * head_dim] -> [batch, heads, pos, head_dim]."""
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def _rotary(q: torch.Tensor, k: torch.Tensor, cos_sin) -> tuple[torch.Tensor, torch.Tensor]:
    # the rotation the attention module applies, with the (cos, sin) it was handed
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    cos, sin = cos_sin
    return apply_rotary_pos_emb(q, k, cos, sin)


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Causal mask (query i sees keys 0..i), plus a 4-D bool (True = keep) or additive mask."""
    n_q, n_k = scores.shape[-2:]
    causal = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).tril(n_k - n_q)
    scores = scores.masked_fill(~causal, float("-inf"))
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        mask = mask[..., :n_q, :n_k]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores


GPT2 = Arch("gpt2", "transformer", "transformer.h", "transformer.ln_f", "mlp", "c_proj")
# Llama, Mistral, Qwen2, SmolLM2: gate/up/down MLP, RMSNorm, rotary positions.
LLAMA = Arch("llama", "model", "model.layers", "model.norm", "mlp", "down_proj", attn="self_attn")

_BY_MODEL_TYPE = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA}


def arch_for(model: nn.Module) -> Arch:
    model_type = model.config.model_type
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(
            f"architecture {model_type!r} is not supported; supported: {sorted(_BY_MODEL_TYPE)}"
        )
    return _BY_MODEL_TYPE[model_type]
