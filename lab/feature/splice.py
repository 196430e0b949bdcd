"""Splice an SAE into the forward at its hook point, and edit one latent there.

At the hook the activation x becomes

    x' = decode(z') + (x - decode(z))        z = encode(x), z' = the edited code

the SAE's reconstruction of the edited code plus the SAE's error term, so what the SAE does
not explain passes through untouched. It is computed as x + (decode(z') - decode(z)), which
for an edit of one latent i is x + dz_i W_dec[i] (through norm_out's linear part): with no
edit (or ablating a latent that is already 0) dz is exactly 0 and x' is x, bit for bit.

Hooks follow lab.hooks: registered under the model's lock, thread-aware (the shared model
serves every session; a hook ignores forwards of other threads), removed in `finally`.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch

from lab import hooks
from lab.sae.saelens import LoadedSAE

Patch = Callable[[torch.Tensor], torch.Tensor]     # [batch, pos, d_in] -> the same shape


@dataclass(frozen=True)
class Edit:
    """What happens to latent `latent` at the hook."""

    kind: Literal["none", "ablate", "steer", "reconstruct"]
    latent: int = 0
    alpha: float = 0.0      # steer: added to the latent at every position

    def code_change(self, z_i: torch.Tensor) -> torch.Tensor:
        """dz for latent i, given its activation z_i [..., 1]."""
        if self.kind == "ablate":
            return -z_i
        if self.kind == "steer":
            return torch.full_like(z_i, self.alpha)
        return torch.zeros_like(z_i)


def patch_for(loaded: LoadedSAE, edit: Edit, skip_first: bool = True) -> Patch:
    """The function the hook applies. "reconstruct" replaces x by the SAE's reconstruction
    alone (no error term): how much the SAE itself loses at this hook."""
    sae = loaded.sae

    def patch(x: torch.Tensor) -> torch.Tensor:
        if edit.kind == "reconstruct":
            out = sae(x)
        else:
            dz = edit.code_change(sae.encode_latents(x, [edit.latent]))      # [b, p, 1]
            out = x + sae.out_delta(dz * sae.W_dec[edit.latent], x)
        if skip_first:   # the attention sink passes through unedited
            out = torch.cat([x[:, :1], out[:, 1:]], dim=1)
        return out.to(x.dtype)
    return patch


@contextmanager
def splice(lm, hook: str, patch: Patch) -> Iterator[None]:
    """Every forward of this thread inside the block has `patch` applied at `hook`."""
    point = hooks.parse_hook(lm, hook)
    handle = None
    try:
        with lm.lock:
            handle = hooks.register_patch(lm, point, patch, threading.get_ident())
        yield
    finally:
        if handle is not None:
            with lm.lock:
                handle.remove()


@torch.no_grad()
def logits(lm, ids: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits [pos, vocab] (float32) for one sequence ids [1, pos]."""
    return lm.model(input_ids=ids.to(lm.device), use_cache=False).logits[0].float()


@torch.no_grad()
def edited_logits(lm, loaded: LoadedSAE, ids: torch.Tensor, edit: Edit,
                  skip_first: bool = True) -> torch.Tensor:
    """Logits [pos, vocab] with the SAE spliced in at its hook and `edit` applied."""
    with splice(lm, loaded.hook, patch_for(loaded, edit, skip_first)):
        return logits(lm, ids)


@torch.no_grad()
def base_run(lm, hook: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [pos, vocab], the hook's activation [pos, d_in]) of the unedited model."""
    with hooks.capture(lm, [hook], detach=True) as cache:
        out = logits(lm, ids)
    return out, cache[hook][0].float()
