"""One layer's activations over a text, one row per kept token, with each token's place in it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lab import hooks

MIN_TOKENS = 8        # fewer rows than this cannot be split into train and validation sensibly
EMPTY_TEXT = "the text is empty: paste or upload a text to run through the model"
Site = Literal["mlp_out", "mlp_post"]


@dataclass(frozen=True)
class TextActivations:
    """One layer's activations over a text, one row per kept token, in text order."""
    acts: torch.Tensor                    # [n_tokens, d_in] float32 on the CPU
    token_ids: tuple[int, ...]            # the kept tokens
    tokens: tuple[str, ...]               # each token's own characters in the text
    spans: tuple[tuple[int, int], ...]    # (start, end) character offsets in the text
    positions: tuple[int, ...]            # position in the model's sequence (0 = first)
    hook: str                             # e.g. "blocks.3.hook_mlp_out"
    dropped_first: bool                   # was position 0 (an outlier "attention sink") dropped?

    @property
    def n_tokens(self) -> int:
        return self.acts.shape[0]


def check_layer(lm, layer: int) -> None:
    if not 0 <= layer < lm.n_layers:
        raise ValueError(f"layer {layer} out of range for {lm.name}: valid 0..{lm.n_layers - 1}")


@torch.no_grad()
def text_activations(lm, text: str, layer: int, site: Site = "mlp_out",
                     drop_first: bool = True) -> TextActivations:
    """Run `text` through the model and keep `blocks.{layer}.hook_mlp_out` (d_model wide,
    the original notes' "MLP activations") or `blocks.{layer}.mlp.hook_post` (d_mlp hidden neurons).

    Texts longer than the model's context run as consecutive windows. With `drop_first`, the
    first position of each window is dropped: it carries activations tens of times larger
    than the rest (the attention sink), which would dominate the reconstruction loss.
    """
    if not text or not text.strip():
        raise ValueError(EMPTY_TEXT)
    hook = hooks.hook_name(site, layer)
    check_layer(lm, layer)
    enc = lm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, spans = list(enc["input_ids"]), [tuple(s) for s in enc["offset_mapping"]]
    window = max(int(lm.n_ctx), 2)
    rows, keep = [], []
    for start in range(0, len(ids), window):
        chunk = torch.tensor([ids[start:start + window]], device=lm.device)
        out = hooks.run_with_hooks(lm, [hook], input_ids=chunk, detach=True)[hook][0]   # [pos, d]
        first = 1 if drop_first else 0
        rows.append(out[first:].float().cpu())
        keep += range(start + first, start + chunk.shape[1])
    n = len(keep)
    if n < MIN_TOKENS:
        raise ValueError(f"the text has {n} usable tokens; at least {MIN_TOKENS} are needed "
                         "to train and validate a sparse autoencoder")
    acts = torch.cat(rows)
    return TextActivations(acts=acts, token_ids=tuple(ids[i] for i in keep),
                           tokens=tuple(text[spans[i][0]:spans[i][1]] for i in keep),
                           spans=tuple(spans[i] for i in keep), positions=tuple(keep),
                           hook=hook, dropped_first=drop_first)
