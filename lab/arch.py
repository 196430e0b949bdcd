"""Per-architecture map: where the embeddings, blocks, MLPs and final norm live in an HF model.

One adapter per family, so the rest of `lab` never touches `model.transformer.h` or
`model.model.layers` directly.
"""
from __future__ import annotations

from dataclasses import dataclass

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


GPT2 = Arch("gpt2", "transformer", "transformer.h", "transformer.ln_f", "mlp", "c_proj")
# Llama, Mistral, Qwen2, SmolLM2: gate/up/down MLP, RMSNorm, rotary positions.
LLAMA = Arch("llama", "model", "model.layers", "model.norm", "mlp", "down_proj")

_BY_MODEL_TYPE = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA}


def arch_for(model: nn.Module) -> Arch:
    model_type = model.config.model_type
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(
            f"architecture {model_type!r} is not supported; supported: {sorted(_BY_MODEL_TYPE)}"
        )
    return _BY_MODEL_TYPE[model_type]
