"""What a laminar profile run is: the corpus, the windows, the layers and the SAE per layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lab.experiment import param, replace_paths, share_seed, validate
from lab.hidden.config import check_plain
from lab.models import LabModel, resolve_device
from lab.sae import SAEConfig
from lab.sae.devices import as_device

# The SAE every layer gets: tied ReLU + L1 (the original notes' ~8x latents and 75 epochs are the "full"
# preset; the defaults are the "quick" one, what the page and the CLI start from). The L1 weight
# is in lab.sae's normalized units (inputs at unit variance, MSE per element). Measured on
# smollm2-135m: at lab.sae's default 1e-3 with lr 1e-4 the code stays ~50% dense after 20
# epochs; 3e-3 with lr 1e-3 reaches a sparse code (1-7% of latents) within the quick preset's
# ~450 steps, which is also what makes training fast.
SAE = SAEConfig(activation="relu", l1=3e-3, lr=1e-3, expansion=2, k=32, tied=True, epochs=30,
                batch_size=64, val_fraction=0.1)


def run_option(f):
    """Mark a field as where-and-how-it-runs: out of equality and hash, so out of every cache
    key (the runner's, the disk cache's): the same sweep on Ray and in-process is one result."""
    f.compare = False
    return f


# The run options (`run_option`): the rows do not depend on them (tf32 and a Ray task's thread
# count to within float rounding, as the gpu and ray tests hold them).
RUN_OPTIONS = ("memory_fraction", "tf32", "ray", "ray_cpus", "run_dir", "resume", "keep_saes")


@dataclass(frozen=True)
class LaminarConfig:
    url: str = param("", "Wikipedia article (URL or title) to read; empty: the text, else the "
                         "bundled LED article")
    text: str = param("", "the corpus as plain text, used when no url is given (empty: the "
                          "bundled LED article)", file=True)
    n_windows: int = param(8, "token windows sampled from the corpus with the seed", min=1)
    window_len: int = param(128, "tokens per window; position 0 of each is dropped", min=2)
    fit: bool = param(False, "when the corpus is too short for the windows, use what fits "
                             "(fewer windows, else shorter ones) instead of stopping")
    layers: tuple[int, ...] | None = param(None, "block indices to profile (default: every layer)")
    forward_batch: int = param(2, "windows per forward pass (memory vs. speed)", min=1)
    sae: SAEConfig = param(SAE, "the SAE trained afresh on each layer's MLP output (its inputs "
                                "are scaled to unit variance per layer, so one L1 weight means "
                                "the same on every layer)")
    seed: int = param(0, "random seed: the windows, and each SAE's init, split and shuffling",
                      min=0)
    # where and how it runs: the rows do not depend on these (off the CPU up to float rounding;
    # tf32 more than that). All but sae_device are run options, out of the cache keys.
    sae_device: Literal["auto", "cpu", "cuda", "mps"] = param(
        "auto", "where each SAE trains: auto = the model's device (on Ray: a GPU when the "
                "cluster has them, else the CPU)")
    memory_fraction: float = run_option(param(
        0.5, "activations stay on the SAE's device while they fit in this fraction of its free "
             "memory; beyond it they stay on the CPU and go over one batch at a time", gt=0, max=1))
    tf32: bool = run_option(param(
        False, "CUDA only: TF32 matmuls in SAE training (faster on recent GPUs; the gpu test "
               "holds the rows to 1e-2 relative of float32)"))
    ray: str = run_option(param(
        "", "train each layer's SAE as a Ray task: 'local' starts Ray on this machine, 'auto' "
            "joins the cluster it belongs to, HOST:PORT or ray://HOST:10001 another one, 'env' "
            "the address in LAB_RAY_ADDRESS; empty: in this process, without Ray"))
    ray_cpus: int = run_option(param(
        0, "CPU cores (torch threads) per layer task on Ray; 0: as many as torch uses here, so "
           "the rows equal an in-process run's (a matmul's last bits, and so the rows, depend "
           "on the thread count)", min=0))
    run_dir: str = run_option(param(
        "", "folder that gets each finished layer as it completes (run.json, one JSON per "
            "layer, layers.csv); empty: none"))
    resume: str = run_option(param(
        "", "run folder of an interrupted sweep: its finished layers are kept and skipped, the "
            "others are trained and added there"))
    keep_saes: bool = run_option(param(
        False, "also save each layer's SAE in the run folder (the lab's format plus SAELens's "
               "files)"))

    def __post_init__(self):
        validate(self)
        share_seed(self, "sae")
        if self.url and self.text:
            raise ValueError("Give a Wikipedia url or a text, not both.")
        check_plain(self.text)   # a binary file read as text: the refusal lens and feature give
        if self.tf32 and self.sae_device in ("cpu", "mps"):
            raise ValueError(f"tf32 is a CUDA setting; the SAEs train on {self.sae_device}.")
        if self.run_dir and self.resume and self.run_dir != self.resume:
            raise ValueError("Give run_dir for a new sweep or resume for an old one, not two folders.")
        if self.keep_saes and not self.folder:
            raise ValueError("keep_saes needs a run folder (run_dir or resume) to save the SAEs in.")
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)
                                        or min(self.layers) < 0):
            raise ValueError("layers must be distinct non-negative layer indices (or None for all)")

    @property
    def writes_files(self) -> bool:
        """A run that must run to write its folder: never served from a cache."""
        return bool(self.folder)

    @property
    def folder(self) -> str:
        """The run folder ("" for none): the one resumed, else run_dir."""
        return self.resume or self.run_dir

    @property
    def n_tokens(self) -> int:
        """Activation rows per layer (position 0 of each window dropped)."""
        return self.n_windows * (self.window_len - 1)

    def layers_of(self, lm: LabModel) -> list[int]:
        layers = list(range(lm.n_layers)) if self.layers is None else sorted(self.layers)
        if layers[-1] >= lm.n_layers:
            raise ValueError(f"layer {layers[-1]} out of range for {lm.name}: valid 0..{lm.n_layers - 1}")
        return layers

    def device_of(self, lm: LabModel) -> torch.device:
        """Where the SAEs train in this process: the model's device for "auto"; a named one must
        be present here (one sentence if not)."""
        try:
            device = lm.device if self.sae_device == "auto" else resolve_device(self.sae_device)
        except ValueError as e:
            raise ValueError(f"sae_device: {e}") from None
        device = as_device(device)
        if self.tf32 and device.type != "cuda":
            raise ValueError(f"tf32 is a CUDA setting; the SAEs would train on {device.type}.")
        return device


# "quick" (the defaults): the trend in ~2 min on 2 CPU cores (smollm2-135m, measured 2 min 17 s);
# "full": the original notes' 10 x 1024 tokens, 8x latents and 75 epochs; "tiny": mechanics, for tests.
PRESETS: dict[str, LaminarConfig] = {
    "quick": LaminarConfig(),
    "full": replace_paths(LaminarConfig(), {"n_windows": 10, "window_len": 1024, "sae.expansion": 8,
                                            "sae.epochs": 75, "sae.batch_size": 256}),
    "tiny": replace_paths(LaminarConfig(), {"n_windows": 2, "window_len": 16, "sae.expansion": 2,
                                            "sae.epochs": 2, "sae.batch_size": 16}),
}


def preset(name: str, **changes) -> LaminarConfig:
    """A preset with `changes` (nested paths as keyword names: `preset("tiny", **{"sae.k": 8})`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return replace_paths(PRESETS[name], changes)
