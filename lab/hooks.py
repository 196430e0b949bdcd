"""Named hook points (TransformerLens names) on HF modules, and a capture context manager.

    hook_embed                  input to block 0 = hidden_states[0]        [batch, pos, d_model]
    blocks.{L}.hook_resid_post  output of block L (raw, no final norm)     [batch, pos, d_model]
    blocks.{L}.hook_mlp_out     output of block L's MLP                    [batch, pos, d_model]
    blocks.{L}.mlp.hook_post    MLP hidden neurons after the nonlinearity  [batch, pos, d_mlp]
    blocks.{L}.attn.hook_pattern  block L's attention probabilities   [batch, head, query, key]

The attention pattern is recomputed from the attention module's own inputs
(`Arch.attention_pattern`): the shared model keeps its sdpa kernel, which returns no weights.
It is a hook point of `capture` and `run_with_hooks` (name: `pattern(L)`), not one of
`hook_names`/`parse_hook`, whose callers choose activations to read or optimise.

The model is shared by every browser session (one `st.cache_resource` copy) and a hook on a
module fires on every thread's forward. So each hook remembers the thread that registered it
and ignores the others: two sessions running at once never see each other's activations.
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from lab.models import LabModel

EMBED = "hook_embed"
# kind -> name template: the only place hook names are spelled out (SAELens's one extra name,
# a block's input, below)
_TEMPLATES = {"resid_post": "blocks.{layer}.hook_resid_post", "mlp_out": "blocks.{layer}.hook_mlp_out",
              "mlp_post": "blocks.{layer}.mlp.hook_post"}
KINDS = ("embed", *_TEMPLATES)
_PATTERN_TEMPLATE = "blocks.{layer}.attn.hook_pattern"
_SUFFIX = {t.split("{layer}.", 1)[1]: kind for kind, t in _TEMPLATES.items()}  # "hook_mlp_out" -> kind
_RESID_PRE = "hook_resid_pre"          # SAELens (TransformerLens): block L's input
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# the valid names in words, for the sentence that rejects a name
SPELLED = f"{EMBED} or " + ", ".join(t.replace("{layer}", "L") for t in _TEMPLATES.values())


@dataclass(frozen=True)
class HookPoint:
    """A hook point, parsed once from its name (`HookPoint.parse`) and passed inward as is."""

    name: str
    kind: str          # "embed", "resid_post", "mlp_out", "mlp_post" ("attn_pattern": capture only)
    layer: int         # block index; -1 for hook_embed (before block 0)

    @classmethod
    def parse(cls, name: str) -> "HookPoint":
        """The point a name spells (no model needed: `check` adds the model's range), or one
        sentence naming the valid spellings."""
        point = _parse(name)
        if point is None:
            raise ValueError(f"hook must be {SPELLED}, got {name!r}")
        return point

    def check(self, lm: LabModel) -> "HookPoint":
        """The one check against a model: the block exists."""
        if self.layer >= lm.n_layers:
            raise ValueError(f"layer {self.layer} out of range for {lm.name}: valid 0..{lm.n_layers - 1}")
        return self

    def width(self, lm: LabModel) -> int:
        """Size of the last axis: d_mlp for mlp.hook_post, else d_model."""
        return lm.d_mlp if self.kind == "mlp_post" else lm.d_model


def _parse(name) -> HookPoint | None:
    """The point of a canonical name (what `hook_name` writes), None for anything else."""
    if name == EMBED:
        return HookPoint(name, "embed", -1)
    m = _BLOCK.match(name) if isinstance(name, str) else None
    if m is None or m.group(2) not in _SUFFIX:
        return None
    point = HookPoint(name, _SUFFIX[m.group(2)], int(m.group(1)))
    return point if hook_name(point.kind, point.layer) == name else None


def hook_name(kind: str, layer: int = -1) -> str:
    """The hook point of `kind` ("embed", "resid_post", "mlp_out", "mlp_post") at block `layer`."""
    if kind == "embed":
        return EMBED
    if kind not in _TEMPLATES:
        raise ValueError(f"unknown hook kind {kind!r}; valid: {', '.join(KINDS)}")
    return _TEMPLATES[kind].format(layer=layer)


def resid_post(layer: int) -> str:
    return hook_name("resid_post", layer)


def mlp_out(layer: int) -> str:
    return hook_name("mlp_out", layer)


def mlp_post(layer: int) -> str:
    return hook_name("mlp_post", layer)


def pattern(layer: int) -> str:
    """Block `layer`'s attention probabilities, [batch, head, query, key]."""
    return _PATTERN_TEMPLATE.format(layer=layer)


def hook_kind(name: str) -> str | None:
    """The kind of a hook name, None when it is not one (no model needed)."""
    point = _parse(name)
    return point.kind if point else None


def hook_layer(name: str) -> int:
    """The block of a valid hook name; -1 for hook_embed (before block 0)."""
    return HookPoint.parse(name).layer


def width(lm: LabModel, name: str) -> int:
    """Size of the last axis of hook point `name`: d_mlp for mlp.hook_post, else d_model."""
    return parse_hook(lm, name).width(lm)


def hook_names(lm: LabModel) -> list[str]:
    """Every valid hook name of this model, in forward order."""
    names = [EMBED]
    for layer in range(lm.n_layers):
        names += [mlp_post(layer), mlp_out(layer), resid_post(layer)]
    return names


def parse_hook(lm: LabModel, name: str | HookPoint) -> HookPoint:
    """A hook name (or an already parsed point) checked against `lm`."""
    point = name if isinstance(name, HookPoint) else _parse(name)
    if point is None:
        raise ValueError(f"unknown hook point {name!r}; valid: hook_embed, blocks.L.hook_resid_post, "
                         f"blocks.L.hook_mlp_out, blocks.L.mlp.hook_post with L in 0..{lm.n_layers - 1}")
    return point.check(lm)


def parse_point(lm: LabModel, name: str) -> HookPoint:
    """Any name `capture` accepts: `parse_hook`'s, or an attention pattern (kind "attn_pattern")."""
    m = _BLOCK.match(name)
    if m is None or pattern(int(m.group(1))) != name:
        return parse_hook(lm, name)
    return HookPoint(name, "attn_pattern", int(m.group(1))).check(lm)


# ---------------------------------------------------------------- SAELens's names

def from_saelens(name: str) -> str:
    """A SAELens (TransformerLens) hook name -> the lab's (`blocks.L.hook_resid_pre` is
    `blocks.{L-1}.hook_resid_post`, `hook_embed` for L = 0), or one sentence saying why not."""
    layer = saelens_input_layer(name)
    if layer is not None:
        return EMBED if layer == 0 else resid_post(layer - 1)
    point = _parse(name)
    if point is None or point.kind == "embed":
        raise ValueError(f"the SAE reads {name!r}, which the lab cannot splice; supported: "
                         f"blocks.L.{_RESID_PRE}, " + ", ".join(t.replace("{layer}", "L")
                                                             for t in _TEMPLATES.values()))
    return point.name


def saelens_input_layer(name: str) -> int | None:
    """L of SAELens's `blocks.L.hook_resid_pre` (block L's input), None for any other name."""
    m = _BLOCK.match(name or "")
    if m is None or m.group(2) != _RESID_PRE or f"blocks.{int(m.group(1))}.{_RESID_PRE}" != name:
        return None
    return int(m.group(1))


def to_saelens(hook: str) -> tuple[str, int]:
    """The lab's hook name -> (SAELens's name, its layer)."""
    point = _parse(hook)
    if point is None:
        raise ValueError(f"{hook!r} is not a hook point an SAE can be saved for")
    if point.kind == "embed":
        return f"blocks.0.{_RESID_PRE}", 0
    return point.name, point.layer


class _StopForward(Exception):
    """Raised by the stop hook after the deepest requested block: no wasted blocks."""


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _register(lm: LabModel, point: HookPoint, store, tid: int):
    model, arch = lm.model, lm.arch

    def mine() -> bool:
        return threading.get_ident() == tid

    if point.kind == "embed":
        def pre(module, args, kwargs):
            if mine():
                store(point.name, args[0] if args else kwargs["hidden_states"])
        return arch.blocks_of(model)[0].register_forward_pre_hook(pre, with_kwargs=True)
    if point.kind == "mlp_post":
        def pre_post(module, args):
            if mine():
                store(point.name, args[0])
        return arch.mlp_out_proj_of(model, point.layer).register_forward_pre_hook(pre_post)
    if point.kind == "attn_pattern":
        def recompute(module, args, kwargs, output):
            if mine():
                store(point.name, arch.attention_pattern(module, args, kwargs))
        return arch.attn_of(model, point.layer).register_forward_hook(recompute, with_kwargs=True)
    module = (arch.mlp_of(model, point.layer) if point.kind == "mlp_out"
              else arch.blocks_of(model)[point.layer])

    def post(module, args, output):
        if mine():
            store(point.name, _first(output))
    return module.register_forward_hook(post)


def _register_stop(lm: LabModel, layer: int, tid: int):
    def stop(*_):
        if threading.get_ident() == tid:
            raise _StopForward
    if layer < 0:
        return lm.arch.blocks_of(lm.model)[0].register_forward_pre_hook(stop)
    return lm.arch.blocks_of(lm.model)[layer].register_forward_hook(stop)


@contextmanager
def capture(lm: LabModel, names: list[str], stop_early: bool = False,
            detach: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that each forward run inside fills with {hook name: activation}.

    A later forward overwrites an earlier one's entries. With `stop_early`, the forward
    stops after the deepest requested block; run it with `forward(...)`, which expects that.
    Every hook is removed on exit, also when the forward raises.
    """
    points = [parse_point(lm, n) for n in names]
    cache: dict[str, torch.Tensor] = {}
    tid = threading.get_ident()

    def store(name, value):
        cache[name] = value.detach() if detach else value

    handles = []
    try:
        with lm.lock:
            for p in points:   # one at a time: a failing register still leaves the others removable
                handles.append(_register(lm, p, store, tid))
            deepest = max(p.layer for p in points) if points else lm.n_layers - 1
            if stop_early and deepest < lm.n_layers - 1:
                handles.append(_register_stop(lm, deepest, tid))
        yield cache
    except _StopForward:
        pass  # a bare model call inside the block was stopped on purpose
    finally:
        with lm.lock:
            for h in handles:
                h.remove()


def forward(lm: LabModel, input_ids: torch.Tensor | None = None,
            inputs_embeds: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None, past_key_values=None):
    """Run the transformer body (no LM head: the experiments never need logits).

    `past_key_values` (a transformers Cache) continues a prefix: its keys and values are
    read, and this forward's are appended to it (also when the forward is stopped early).
    Returns the body's output, or None when a `capture(stop_early=True)` stopped it.
    """
    body = lm.arch.body_of(lm.model)
    try:
        return body(input_ids=input_ids, inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask, past_key_values=past_key_values,
                    use_cache=past_key_values is not None)
    except _StopForward:
        return None


def run_with_hooks(lm: LabModel, names: list[str], input_ids: torch.Tensor | None = None,
                   inputs_embeds: torch.Tensor | None = None, stop_early: bool = True,
                   detach: bool = False) -> dict[str, torch.Tensor]:
    """One forward, returning the requested activations (stopping after the deepest)."""
    with capture(lm, names, stop_early=stop_early, detach=detach) as cache:
        forward(lm, input_ids=input_ids, inputs_embeds=inputs_embeds)
    missing = [n for n in names if n not in cache]
    if missing:
        raise RuntimeError(f"hooks did not fire: {missing}")
    return dict(cache)


# ---------------------------------------------------------------- editing an activation

def _replace_first(output, patch):
    return (patch(output[0]), *output[1:]) if isinstance(output, tuple) else patch(output)


def register_patch(lm: LabModel, point: HookPoint, patch, tid: int):
    """A hook that replaces the activation of `point` by `patch(x)` in thread `tid`'s forwards
    (the feature view's splice, steering's added vector); the caller removes the handle."""
    arch, model = lm.arch, lm.model

    def pre_embed(module, args, kwargs):
        if threading.get_ident() != tid:
            return None
        if args:
            return (patch(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": patch(kwargs["hidden_states"])}

    def pre_neurons(module, args):
        return (patch(args[0]), *args[1:]) if threading.get_ident() == tid else None

    def post(module, args, output):
        return _replace_first(output, patch) if threading.get_ident() == tid else None

    if point.kind == "embed":
        return arch.blocks_of(model)[0].register_forward_pre_hook(pre_embed, with_kwargs=True)
    if point.kind == "mlp_post":
        return arch.mlp_out_proj_of(model, point.layer).register_forward_pre_hook(pre_neurons)
    module = (arch.mlp_of(model, point.layer) if point.kind == "mlp_out"
              else arch.blocks_of(model)[point.layer])
    return module.register_forward_hook(post)
