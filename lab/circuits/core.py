"""Activation patching, attribution patching, direct logit attribution and induction scores.

Sites (all [batch, pos, d]):
    resid L   the input of block L (L = 0: the embeddings); L = n_layers: the final norm's input
    attn L    block L's attention output (after o_proj / c_proj, bias included)
    mlp L     block L's MLP output
    z L       the input of attention L's output projection: head h is its slice h*dh:(h+1)*dh
              (GPT-2 and grouped-query Llama alike: a head's output is its slice of o_proj's input)

Patched runs are batched: B copies of the corrupted prompt in one forward, copy b patched where
mask[b] is True, so a residual sweep is one forward per layer, not one per (layer, position).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lab.models import LabModel


class CircuitsError(ValueError):
    """A bad prompt pair or answer: one sentence."""


@dataclass
class Pair:
    clean: torch.Tensor      # [pos] token ids
    corrupted: torch.Tensor  # [pos]
    answer: int
    wrong: int


def _one_token(lm: LabModel, text: str, what: str) -> int:
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise CircuitsError(f"The {what} {text!r} is {len(ids)} tokens; it must be exactly one "
                            "token (try a leading space, as in ' Mary').")
    return ids[0]


def make_pair(lm: LabModel, clean: str, corrupted: str, answer: str, wrong: str) -> Pair:
    """Tokenize and check a prompt pair; every mistake is one sentence (CircuitsError)."""
    if not clean.strip() or not corrupted.strip():
        raise CircuitsError("Both the clean and the corrupted prompt must contain some text.")
    ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in (clean, corrupted)]
    if len(ids[0]) != len(ids[1]):
        raise CircuitsError(f"The clean prompt is {len(ids[0])} tokens and the corrupted one "
                            f"{len(ids[1])}; patching needs the same token length.")
    a, w = _one_token(lm, answer, "answer"), _one_token(lm, wrong, "wrong token")
    if a == w:
        raise CircuitsError("The answer and the wrong token are the same token; the logit "
                            "difference would be zero.")
    dev = lm.device
    return Pair(torch.tensor(ids[0], device=dev), torch.tensor(ids[1], device=dev), a, w)


# ---------------------------------------------------------------- hooks on sites

def _site_module(lm: LabModel, kind: str, layer: int):
    """(module, pre) where the site is the module's first input (pre) or its output."""
    a, m = lm.arch, lm.model
    if kind == "resid":
        return (a.final_norm_of(m) if layer == lm.n_layers else a.blocks_of(m)[layer]), True
    if kind == "attn":
        return a.attn_of(m, layer), False
    if kind == "mlp":
        return a.mlp_of(m, layer), False
    if kind == "z":
        return _out_proj(lm, layer), True
    raise ValueError(kind)


def _out_proj(lm: LabModel, layer: int):
    attn = lm.arch.attn_of(lm.model, layer)
    return attn.c_proj if lm.arch.family == "gpt2" else attn.o_proj


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _replace(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


@contextmanager
def _hooks(lm: LabModel, edits: dict):
    """edits: {(kind, layer): fn(tensor) -> tensor} applied at each site during forwards."""
    handles = []
    try:
        for (kind, layer), fn in edits.items():
            mod, pre = _site_module(lm, kind, layer)
            if pre:
                handles.append(mod.register_forward_pre_hook(
                    lambda _m, args, fn=fn: (fn(args[0]), *args[1:])))
            else:
                handles.append(mod.register_forward_hook(
                    lambda _m, _a, out, fn=fn: _replace(out, fn(_first(out)))))
        yield
    finally:
        for h in handles:
            h.remove()


def all_sites(lm: LabModel) -> list[tuple[str, int]]:
    n = lm.n_layers
    return ([("resid", l) for l in range(n + 1)] + [("attn", l) for l in range(n)]
            + [("mlp", l) for l in range(n)] + [("z", l) for l in range(n)])


def _logit_diff(lm: LabModel, pair: Pair, logits: torch.Tensor) -> torch.Tensor:
    last = logits[:, -1].float()
    return last[:, pair.answer] - last[:, pair.wrong]


def cache_run(lm: LabModel, ids: torch.Tensor, pair: Pair) -> tuple[float, dict]:
    """One forward; the metric and every site's activation [pos, d]."""
    cache = {}

    def keep(site):
        def fn(x):
            cache[site] = x[0].detach().clone()
            return x
        return fn
    with lm.lock, torch.no_grad(), _hooks(lm, {s: keep(s) for s in all_sites(lm)}):
        logits = lm.model(ids[None]).logits
    return float(_logit_diff(lm, pair, logits)[0]), cache


def patched_metrics(lm: LabModel, pair: Pair, site: tuple, clean_act: torch.Tensor,
                    masks: torch.Tensor) -> torch.Tensor:
    """Metric of B corrupted copies, copy b with the clean activation where masks[b] [pos, d]."""
    clean_act = clean_act.to(masks.device)

    def patch(x):
        return torch.where(masks, clean_act[None].to(x.dtype), x)
    batch = pair.corrupted[None].expand(masks.shape[0], -1)
    with lm.lock, torch.no_grad(), _hooks(lm, {site: patch}):
        return _logit_diff(lm, pair, lm.model(batch).logits)


def recovery(m, clean: float, corrupted: float):
    return (m - corrupted) / (clean - corrupted)


# ---------------------------------------------------------------- sweeps

def position_masks(n_pos: int, d: int, device) -> torch.Tensor:
    """[n_pos, pos, d]: copy p patched at position p only."""
    eye = torch.eye(n_pos, dtype=torch.bool, device=device)
    return eye[:, :, None].expand(n_pos, n_pos, d)


def head_masks(lm: LabModel, n_pos: int, last_only: bool, device) -> torch.Tensor:
    """[n_heads, pos, H*dh]: copy h patched in head h's slice (all positions or the last)."""
    H, dh = lm.config.num_attention_heads, lm.d_model // lm.config.num_attention_heads
    dh = getattr(lm.config, "head_dim", None) or dh
    m = torch.zeros(H, n_pos, H * dh, dtype=torch.bool, device=device)
    for h in range(H):
        m[h, (n_pos - 1) if last_only else slice(None), h * dh:(h + 1) * dh] = True
    return m


@dataclass
class Sweeps:
    clean: float
    corrupted: float
    resid: torch.Tensor      # [n_layers + 1, pos] recovery
    attn: torch.Tensor       # [n_layers, pos]
    mlp: torch.Tensor        # [n_layers, pos]
    heads: torch.Tensor      # [n_layers, n_heads] all positions
    heads_last: torch.Tensor  # [n_layers, n_heads] last position only


def sweep(lm: LabModel, pair: Pair, on_layer=None) -> Sweeps:
    """Every exact patch, batched: one forward per (site kind, layer)."""
    clean, cc = cache_run(lm, pair.clean, pair)
    corr, _ = cache_run(lm, pair.corrupted, pair)
    n, P, dev = lm.n_layers, len(pair.clean), lm.device
    rec = lambda site, masks: recovery(patched_metrics(lm, pair, site, cc[site], masks),  # noqa: E731
                                       clean, corr).cpu()
    d = cc[("resid", 0)].shape[-1]
    pm = position_masks(P, d, dev)
    resid = torch.stack([rec(("resid", l), pm) for l in range(n + 1)])
    attn, mlp, heads, last = [], [], [], []
    for l in range(n):
        attn.append(rec(("attn", l), pm))
        mlp.append(rec(("mlp", l), pm))
        heads.append(rec(("z", l), head_masks(lm, P, False, dev)))
        last.append(rec(("z", l), head_masks(lm, P, True, dev)))
        if on_layer:
            on_layer(l)
    return Sweeps(clean, corr, resid, torch.stack(attn), torch.stack(mlp), torch.stack(heads),
                  torch.stack(last))


def per_patch_resid(lm: LabModel, pair: Pair) -> torch.Tensor:
    """The slow reference: one forward per (layer, position) residual patch."""
    clean, cc = cache_run(lm, pair.clean, pair)
    corr, _ = cache_run(lm, pair.corrupted, pair)
    P = len(pair.clean)
    pm = position_masks(P, cc[("resid", 0)].shape[-1], lm.device)
    return torch.tensor([[float(recovery(patched_metrics(lm, pair, ("resid", l), cc[("resid", l)],
                                                         pm[p:p + 1])[0], clean, corr))
                          for p in range(P)] for l in range(lm.n_layers + 1)])


def attribution(lm: LabModel, pair: Pair) -> dict:
    """Attribution patching: (clean - corrupted) . d metric / d act on the corrupted run, per
    layer's attention output, MLP output and head (all positions summed), as a recovery."""
    clean, cc = cache_run(lm, pair.clean, pair)
    acts = {}

    def keep(site):
        def fn(x):
            # the graph starts at the embeddings (weights are frozen); every other site keeps
            # its grad: the whole downstream gradient of the metric
            if site == ("resid", 0):
                x = x.detach().requires_grad_(True)
            else:
                x.retain_grad()
            acts[site] = x
            return x
        return fn
    sites = [s for s in all_sites(lm) if s[0] in ("attn", "mlp", "z")]
    with lm.lock, torch.enable_grad(), _hooks(lm, {s: keep(s) for s in [("resid", 0), *sites]}):
        corr_t = _logit_diff(lm, pair, lm.model(pair.corrupted[None]).logits)[0]
        corr_t.backward()
    corr = float(corr_t.detach())
    H = lm.config.num_attention_heads
    out = {}
    for kind, l in sites:
        g = acts[(kind, l)].grad[0]
        delta = (cc[(kind, l)] - acts[(kind, l)].detach()[0]) * g      # [pos, d]
        if kind == "z":
            per_head = delta.sum(0).view(H, -1).sum(-1)
            for h in range(H):
                out[f"L{l}H{h}"] = float(per_head[h]) / (clean - corr)
        else:
            out[f"{kind}{l}"] = float(delta.sum()) / (clean - corr)
    return out


# ---------------------------------------------------------------- direct logit attribution

def dla(lm: LabModel, pair: Pair) -> dict:
    """The clean last position's logit difference split into embeddings, heads and MLPs, with
    the final norm's scale frozen at its clean value; 'bias' holds what no component owns."""
    _, cc = cache_run(lm, pair.clean, pair)
    a, m = lm.arch, lm.model
    W_U = a.unembed_of(m).weight.float()
    direction = W_U[pair.answer] - W_U[pair.wrong]                      # [d]
    norm = a.final_norm_of(m)
    x = cc[("resid", lm.n_layers)][-1].float()
    gpt2 = a.family == "gpt2"
    if gpt2:
        scale = torch.sqrt(x.var(unbiased=False) + norm.eps)
    else:
        scale = torch.sqrt(x.pow(2).mean() + norm.variance_epsilon)

    def read(v):  # one component's share through the frozen final norm
        v = v.float()
        if gpt2:
            v = v - v.mean()
        return float((v / scale * norm.weight.float()) @ direction)
    parts = {"embed": read(cc[("resid", 0)][-1])}
    bias = float(norm.bias.float() @ direction) if gpt2 else 0.0
    ub = a.unembed_of(m).bias
    if ub is not None:
        bias += float(ub[pair.answer] - ub[pair.wrong])
    H = lm.config.num_attention_heads
    for l in range(lm.n_layers):
        proj = _out_proj(lm, l)
        W = proj.weight.float() if gpt2 else proj.weight.float().T     # [H*dh, d]
        z = cc[("z", l)][-1].float()
        dh = z.shape[0] // H
        for h in range(H):
            parts[f"L{l}H{h}"] = read(z[h * dh:(h + 1) * dh] @ W[h * dh:(h + 1) * dh])
        if proj.bias is not None:
            bias += read(proj.bias)
        parts[f"mlp{l}"] = read(cc[("mlp", l)][-1])
    parts["bias"] = bias
    return parts


# ---------------------------------------------------------------- induction

def random_repeated(lm: LabModel, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(100, min(lm.vocab_size, 20000), (n,), generator=g)
    return torch.cat([toks, toks]).to(lm.device)


def induction(lm: LabModel, n: int = 50, seed: int = 0) -> dict:
    """Per head: induction score (second-copy query i -> key i - n + 1) and previous-token
    score (query i -> key i - 1); the per-token loss [2n - 1]."""
    ids = random_repeated(lm, n, seed)
    pats = {}
    handles = []
    a = lm.arch
    for l in range(lm.n_layers):
        def hook(mod, args, kwargs, out, l=l):
            pats[l] = a.attention_pattern(mod, args, kwargs)[0].detach()
        handles.append(a.attn_of(lm.model, l).register_forward_hook(hook, with_kwargs=True))
    try:
        with lm.lock, torch.no_grad():
            logits = lm.model(ids[None]).logits[0].float()
    finally:
        for h in handles:
            h.remove()
    loss = torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")
    q = torch.arange(n, 2 * n, device=ids.device)
    qp = torch.arange(1, 2 * n, device=ids.device)
    P = torch.stack([pats[l] for l in range(lm.n_layers)])             # [L, H, q, k]
    ind = P[:, :, q, q - n + 1].mean(-1).cpu()
    prev = P[:, :, qp, qp - 1].mean(-1).cpu()
    return {"induction": ind, "prev": prev, "loss": loss.cpu(), "patterns": P.cpu(), "n": n}
