"""The steering vectors: an SAE latent's decoder direction, a contrast of prompts (ActAdd),
and the control, a random direction of the same norm."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab import hooks
from lab.models import LabModel
from lab.steer.config import DEFAULT_SAE, SteerConfig, contrast_sides


@dataclass(frozen=True, eq=False)
class Vector:
    """What is added (times alpha) at the hook."""

    hook: str
    steer: torch.Tensor     # [width] float32
    control: torch.Tensor   # [width]: a seeded random direction with the same norm
    source: str             # in words: "contrast ' Love' - ' Hate'" or "latent 12 of ..."
    sae: str = ""           # the SAE folder, when the vector is a latent's
    latent: int | None = None
    act_norm: float = 0.0   # mean norm of the hook's activation over the prompt (positions 1..)

    @property
    def norm(self) -> float:
        return float(self.steer.norm())


def default_hook(lm: LabModel) -> str:
    """A contrast's hook when none is given: the residual stream after block n_layers // 5
    (ActAdd steered GPT-2-XL early, at block 6 of 48)."""
    return hooks.resid_post(lm.n_layers // 5)


def random_like(v: torch.Tensor, seed: int) -> torch.Tensor:
    """A direction drawn uniformly at random (a seeded Gaussian, normalised), v's norm."""
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(v.shape[-1], generator=g, dtype=torch.float32)
    return r * (v.float().norm() / r.norm())


def _prefix(lm: LabModel) -> list[int]:
    """A token put before each contrast prompt, so that the prompt's own tokens are not at
    position 0 (the attention sink, whose activations are tens of times the rest): the
    document separator <|endoftext|> where the vocabulary has it (GPT-2, SmolLM2; SmolLM2's
    <|im_start|> would make the next position a second sink), else the BOS or EOS token."""
    tok = lm.tokenizer
    vocab = tok.get_vocab()
    if "<|endoftext|>" in vocab:
        return [int(vocab["<|endoftext|>"])]
    first = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return [] if first is None else [int(first)]


@torch.no_grad()
def mean_activation(lm: LabModel, hook: str, prompts: tuple[str, ...]) -> torch.Tensor:
    """The hook's activation averaged over each prompt's tokens, then over the prompts [width]."""
    pre = _prefix(lm)
    means = []
    for p in prompts:
        ids = pre + list(lm.tokenizer(p, verbose=False)["input_ids"])
        if len(ids) == len(pre):
            raise ValueError(f"the contrast prompt {p!r} produced no tokens: give some text")
        acts = hooks.run_with_hooks(lm, [hook], input_ids=torch.tensor([ids], device=lm.device),
                                    detach=True)[hook][0]          # [pos, width]
        means.append(acts[len(pre):].float().mean(0))
    return torch.stack(means).mean(0).cpu()


@torch.no_grad()
def prompt_norm(lm: LabModel, hook: str, ids: list[int]) -> float:
    """Mean norm of the hook's activation over the prompt's positions 1.. (0 if it has one)."""
    acts = hooks.run_with_hooks(lm, [hook], input_ids=torch.tensor([ids], device=lm.device),
                                detach=True)[hook][0].float()
    return float(acts[1:].norm(dim=-1).mean()) if len(ids) > 1 else float(acts.norm(dim=-1).mean())


def build_vector(lm: LabModel, cfg: SteerConfig, prompt_ids: list[int],
                 on_progress=None) -> Vector:
    """The config's vector and its control, checked against the model (one sentence if not)."""
    if cfg.uses_sae:
        from lab.sae.load import load_sae
        from lab.sae.saelens import check_fits
        folder = cfg.sae
        if folder == DEFAULT_SAE:
            from lab.feature.store import default_sae
            folder = default_sae(lm, cfg.seed, on_progress)
        loaded = load_sae(folder)
        check_fits(loaded, lm)
        if cfg.hook and cfg.hook != loaded.hook:
            raise ValueError(f"the SAE reads {loaded.hook}, not {cfg.hook}: leave the hook empty "
                             "or give the SAE's")
        if cfg.latent >= loaded.n_latents:
            raise ValueError(f"latent {cfg.latent} is out of range: the SAE has "
                             f"{loaded.n_latents} latents (0..{loaded.n_latents - 1})")
        hook = loaded.hook
        v = loaded.sae.decoder_weight[cfg.latent].detach().float().cpu().clone()
        source = f"latent {cfg.latent}'s decoder direction ({loaded.describe()})"
        sae, latent = str(folder), cfg.latent
    else:
        hook = cfg.hook or default_hook(lm)
        hooks.parse_hook(lm, hook)
        a, b = contrast_sides(cfg.contrast)
        v = mean_activation(lm, hook, a) - mean_activation(lm, hook, b)
        source = f"contrast {' ; '.join(map(repr, a))} minus {' ; '.join(map(repr, b))}"
        sae, latent = "", None
    if not torch.isfinite(v).all():
        raise ValueError("the steering vector is not finite: check the SAE's weights")
    if float(v.norm()) == 0.0:
        raise ValueError("the steering vector is zero (the two sides of the contrast give the "
                         "same activations): give different prompts")
    return Vector(hook=hook, steer=v, control=random_like(v, cfg.seed), source=source, sae=sae,
                  latent=latent, act_norm=prompt_norm(lm, hook, prompt_ids))
