"""SAEs in SAELens's folder format: reading one (`_load_saelens`, called by lab.sae.load, the
process's one loader), `check_fits`, and writing one (`save_saelens`).

    folder/cfg.json                  d_in, d_sae, architecture, activation, hook_name, ...
    folder/sae_weights.safetensors   W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae],
                                     b_dec [d_in] (+ threshold [d_sae] for JumpReLU)

    encode(x) = act(norm_in(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)
    decode(z) = norm_out(z @ W_dec + b_dec)

act: ReLU ("standard"), Top-K (ReLU of the k largest), JumpReLU (x where x > threshold).
norm_in/out as SAELens's `normalize_activations` says: "none" and "expected_average_only_in"
(SAELens folds that scale into the weights, so at inference it is the identity),
"constant_norm_rescale" (x * sqrt(d_in) / |x|) and "layer_norm".

lab.sae.load opens a source: a folder in that format, a folder of this lab's own format
(config.json + sae.safetensors, converted on load with its input scale folded into the
weights), or a Hugging Face hub id `owner/repo/folder/in/repo`.
The lab's SAEs also save in SAELens's format (`save_saelens`), so one trained here opens
in SAELens. SAELens's hook names are TransformerLens's; lab.hooks maps them (`from_saelens`, `to_saelens`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lab import hooks
from lab.sae.saelens_model import ACTIVATIONS, NORMS, SAELensSAE, from_lab

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
LAB_CFG, LAB_WEIGHTS = "config.json", "sae.safetensors"
__all__ = ["ACTIVATIONS", "NORMS", "LoadedSAE", "SAELensSAE", "check_fits", "from_lab",
           "lab_hook", "save_saelens", "saelens_config", "saelens_hook"]


@dataclass(frozen=True, eq=False)
class LoadedSAE:
    """An SAE ready to read or edit one hook point of a model."""

    sae: SAELensSAE      # encode(x [..., d_in]) -> [..., n_latents]; decoder_weight [n_latents, d_in]
    hook: str            # the lab's hook name, e.g. "blocks.6.hook_mlp_out"
    d_in: int
    n_latents: int
    source: str          # the folder or hub id it came from
    model: str = ""      # the model it was trained on, as its config says ("" if unknown)
    format: str = "saelens"   # "saelens" or "lab"
    training_data: tuple[dict, ...] | None = None   # [{name, sha256, tokens}]; None: unknown
    n_train_tokens: int = 0   # rows it was trained on (0: unknown)
    prepend_bos: bool = False  # was a BOS token put first when it was trained?
    source_hook: str = ""     # the hook name as the folder gives it (SAELens's spelling)

    def describe(self) -> str:
        kind = f"top-{self.sae.k}" if self.sae.activation == "topk" else self.sae.activation
        trained = f", trained on {self.model}" if self.model else ""
        return f"{self.n_latents} latents ({kind}) on {self.hook}{trained}"


# ---------------------------------------------------------------- hook names (lab.hooks spells them)

lab_hook = hooks.from_saelens         # SAELens's name -> the lab's
saelens_hook = hooks.to_saelens       # the lab's name -> (SAELens's, its layer)


# ---------------------------------------------------------------- checks

def check_fits(loaded: LoadedSAE, lm) -> None:
    """One sentence when the SAE's hook or width does not fit `lm`."""
    pre = hooks.saelens_input_layer(loaded.source_hook)
    if pre is not None and pre >= lm.n_layers:
        raise ValueError(f"the SAE reads {loaded.source_hook}, but {lm.name} has blocks "
                         f"0..{lm.n_layers - 1}: hook_resid_pre exists for those only")
    width = hooks.parse_hook(lm, loaded.hook).width(lm)
    if width != loaded.d_in:
        raise ValueError(f"the SAE reads {loaded.d_in}-wide activations at {loaded.hook}, but "
                         f"{lm.name}'s are {width} wide: it was made for another model")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    if not path.exists():
        raise ValueError(f"{path.parent} has no {path.name}")
    try:
        return {k: v.float() for k, v in load_file(str(path)).items()}
    except Exception as e:   # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__})") from None


def _activation(cfg: dict) -> tuple[str, int | None]:
    arch = cfg.get("architecture", "standard")
    fn = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch == "jumprelu":
        return "jumprelu", None
    if arch == "topk" or (arch == "standard" and fn == "topk"):
        return "topk", int(k) if k else None
    if arch == "standard" and fn == "relu":
        return "relu", None
    raise ValueError(f"unknown SAE activation (architecture {arch!r}, activation {fn!r}); "
                     "supported: standard ReLU, topk, jumprelu")


def _load_saelens(folder: Path, source: str) -> LoadedSAE:
    cfg = _read_json(folder / CFG)
    meta = cfg.get("metadata") or cfg.get("meta") or {}
    activation, k = _activation(cfg)
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{source} rescales its activations by the decoder norms, which the "
                         "lab does not support")
    if cfg.get("hook_head_index") is not None or meta.get("hook_head_index") is not None:
        raise ValueError(f"{source} reads one attention head (hook_head_index), which the lab "
                         "cannot splice")
    try:
        d_in, n = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{folder / CFG} lacks integer d_in and d_sae") from None
    sae = SAELensSAE(d_in, n, activation, k, bool(cfg.get("apply_b_dec_to_input", True)),
                     cfg.get("normalize_activations") or "none")
    weights = _read_weights(folder / WEIGHTS)
    scale = weights.pop("scaling_factor", weights.pop("finetuning_scaling_factor", None))
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        raise ValueError(f"{source} has a finetuning scaling factor, which the lab does not support")
    _fill(sae, weights, source)
    name = cfg.get("hook_name") or cfg.get("hook_point") or meta.get("hook_name")
    if not name:
        raise ValueError(f"{folder / CFG} names no hook point (hook_name): the lab cannot tell "
                         "where the SAE reads")
    model = cfg.get("model_name") or meta.get("model_name") or ""
    bos = cfg.get("prepend_bos", meta.get("prepend_bos", True))   # SAELens's default is True
    trained = _training_data(cfg.get("training_data", meta.get("training_data")))
    return LoadedSAE(sae, lab_hook(name), d_in, n, source, model, "saelens", trained,
                     sum(int(t.get("tokens") or 0) for t in trained or ()), bool(bos), name)


def _training_data(value) -> tuple[dict, ...] | None:
    """A folder's record of its training texts, when it is a list of {name, sha256}."""
    if not isinstance(value, list) or not all(isinstance(t, dict) and t.get("sha256") for t in value):
        return None
    return tuple(value)


def _fill(sae: SAELensSAE, weights: dict[str, torch.Tensor], source: str) -> None:
    """Copy the weights in, checking each name and shape (one sentence when wrong)."""
    names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if sae.activation == "jumprelu" else [])
    for name in names:
        want = getattr(sae, name)
        if name not in weights:
            raise ValueError(f"{source}: the weights have no {name} (found: {', '.join(sorted(weights))})")
        got = weights[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(f"{source}: {name} has shape {tuple(got.shape)}, but d_in "
                             f"{sae.d_in} and d_sae {sae.n_latents} need {tuple(want.shape)}")
        check_finite(got, name, source)
        with torch.no_grad():
            want.copy_(got)


def check_finite(t: torch.Tensor, name: str, source: str) -> None:
    """One sentence when a weight holds NaN or infinity (it would poison every latent)."""
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise ValueError(f"{source}: {name} has {bad} NaN or infinite values; the SAE's weights "
                         "must be finite numbers")


def first_sentence(e: Exception) -> str:
    """The first line of `e`'s message; a line ending in ':' (torch's "Error(s) in loading
    state_dict for ...:") joined to the next, which says what is wrong."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


# ---------------------------------------------------------------- saving

def saelens_config(sae: SAELensSAE, hook: str, model: str = "", prepend_bos: bool = False,
                   **extra) -> dict:
    """cfg.json for `sae` in the flat (pre-6) layout, which SAELens 5 and 6 both read.
    `prepend_bos` says what the lab did: its SAEs train and run without a BOS first."""
    name, layer = saelens_hook(hook)
    arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}[sae.activation]
    cfg = {"architecture": arch, "d_in": sae.d_in, "d_sae": sae.n_latents, "dtype": "float32",
           "device": "cpu", "model_name": model, "hook_name": name, "hook_layer": layer,
           "hook_head_index": None, "activation_fn_str": "topk" if arch == "topk" else "relu",
           "activation_fn_kwargs": {"k": sae.k} if arch == "topk" else {},
           "apply_b_dec_to_input": sae.apply_b_dec_to_input, "finetuning_scaling_factor": False,
           "normalize_activations": sae.normalize, "prepend_bos": bool(prepend_bos),
           "sae_lens_training_version": None, **extra}
    return {**cfg, "k": sae.k} if arch == "topk" else cfg


def save_saelens(sae, folder: str | Path, hook: str, model: str = "", prepend_bos: bool = False,
                 **extra) -> Path:
    """Write `sae` (a SAELensSAE or the lab's SparseAutoencoder) in SAELens's format."""
    from safetensors.torch import save_file
    if not isinstance(sae, SAELensSAE):
        sae = from_lab(sae)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if sae.activation == "jumprelu" else [])
    save_file({n: getattr(sae, n).detach().float().contiguous().cpu() for n in names},
              str(folder / WEIGHTS))
    cfg = saelens_config(sae, hook, model, prepend_bos, **extra)
    (folder / CFG).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return folder
