"""The one list of experiments: the app's menu, the home page, the CLI's commands, the smoke
tests and the job runner all read it. Adding an experiment = its lab module, its view, one
line here.

Importing this module is cheap (no torch): the app draws its menu from it before the heavy
imports. `Experiment.module` is imported on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Experiment:
    name: str       # registry key and CLI command: `python -m lab NAME`
    title: str      # page title and menu label
    icon: str       # Streamlit material icon of the menu entry
    summary: str    # one sentence: the home page's list and the CLI's help
    module: str     # the lab module with `run(lm, cfg, on_progress)` and the config class
    config: str     # name of the config class in that module
    view: str       # the page file, relative to the project root
    # the smallest settings that still exercise the whole run (the smoke test's config):
    # field paths ("sae.epochs") -> values, applied to the config's defaults
    smoke: dict = field(default_factory=dict, compare=False)
    entry: str = "run"   # the module's function `entry(lm, cfg, on_progress, **reuse)`

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def config_class(self) -> type:
        return getattr(self.load(), self.config)

    def run(self, lm, cfg, on_progress=None, **reuse):
        """The module's `run`; `reuse` passes work already done that the module accepts
        (e.g. hidden's captured `states`), never settings: those are all in `cfg`."""
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{self.name} takes a {self.config}, got {type(cfg).__name__}")
        return getattr(self.load(), self.entry)(lm, cfg, on_progress, **reuse)

    def partial_result(self, lm, cfg, partial: Any):
        """What a stopped run shows: the module's `partial_result`, else the partial itself."""
        convert = getattr(self.load(), "partial_result", None)
        return partial if convert is None or partial is None else convert(lm, cfg, partial)

    def smoke_config(self):
        from lab.experiment import build
        return build(self.config_class, self.smoke)

    @property
    def url_path(self) -> str:
        """The page's address: its file stem (AppTest and deep links rely on this)."""
        return self.view.rsplit("/", 1)[-1].removesuffix(".py")


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("hidden", "Hidden states", ":material/bar_chart:",
               "How the residual stream's values are distributed at every layer, and how alike layers are.",
               "lab.hidden", "HiddenConfig", "views/hidden_states.py", smoke={"max_tokens": 32}),
    Experiment("lens", "Layer by layer", ":material/visibility:",
               "What each layer would predict if decoding stopped there (the logit lens), and where each attention head looks.",
               "lab.lens", "LensConfig", "views/lens.py", smoke={"max_tokens": 32}),
    Experiment("actmax", "Activation maximization", ":material/trending_up:",
               "Which input makes one chosen activation fire hardest? Gradient ascent on input embeddings.",
               "lab.actmax", "ActMaxConfig", "views/activation_max.py",
               smoke={"hook": "blocks.1.hook_resid_post", "index": 5, "steps": 3}),
    Experiment("repro", "Reproducibility", ":material/repeat:",
               "Does that answer survive a different random start? Many restarts against random vectors.",
               "lab.actmax.repro", "ReproConfig", "views/reproducibility.py",
               smoke={"actmax.hook": "blocks.1.hook_resid_post", "actmax.index": 5,
                      "actmax.steps": 3, "actmax.restarts": 2}),
    Experiment("sae", "Sparse autoencoder", ":material/grain:",
               "Rewrite one layer's activations as a few features; find a geography feature and test whether it is real.",
               "lab.sae_text", "SAETextConfig", "views/sae_text.py",
               smoke={"sae.epochs": 2, "sae.expansion": 1, "selectivity.n_shuffles": 100}),
    Experiment("feature", "Feature view", ":material/frame_inspect:",
               "One SAE latent's evidence: its top examples over a corpus, what it writes to the output, and what removing it changes.",
               "lab.feature", "FeatureConfig", "views/feature.py"),
    Experiment("laminar", "Laminar profile", ":material/layers:",
               "A fresh sparse autoencoder at every layer: how sparsity and reconstruction change with depth.",
               "lab.laminar", "LaminarConfig", "views/laminar.py",
               smoke={"n_windows": 2, "window_len": 16, "sae.epochs": 2, "sae.expansion": 2,
                      "sae.batch_size": 16}),
    Experiment("steer", "Steering", ":material/edit_note:", "Watch the model continue a prompt, then push it with a vector (an SAE latent or a contrast of prompts) beside a random control.", "lab.steer", "SteerConfig", "views/steer.py", smoke={"max_new_tokens": 6, "sweep": (0.0,)}),
)


# Work a page needs that is not an experiment of its own (no menu entry, no CLI command, no
# smoke test): queued, prioritized and cached by the runner like the experiments above.
TASKS: tuple[Experiment, ...] = (
    Experiment("sae-rescore", "Rescore an SAE", "", "The SAE page's run scored for other word lists.",
               "lab.sae_text", "RescoreConfig", "", entry="rescore_run"),
    Experiment("laminar-rates", "This machine's speed", "", "A forward and two SAE epochs, timed.",
               "lab.laminar.cost", "RatesConfig", "", entry="measure"),
)


def get(name: str) -> Experiment:
    for e in EXPERIMENTS:
        if e.name == name:
            return e
    raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(e.name for e in EXPERIMENTS)}")


def for_config(cfg) -> Experiment:
    """The experiment (or task) whose config class `cfg` is an instance of."""
    for e in EXPERIMENTS + TASKS:
        if type(cfg).__name__ == e.config and isinstance(cfg, e.config_class):
            return e
    raise ValueError(f"no experiment takes a {type(cfg).__name__}")
