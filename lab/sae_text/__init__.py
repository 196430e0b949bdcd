"""A sparse autoencoder on one text: the Palinka experiment (seed 002).

    acts = text_activations(lm, text, layer, site)   one layer over the text [tokens, d_in]
    SAETrainer(acts, cfg.sae).epoch() x epochs       Progress per epoch; its partial
                                                     (`Training`) is what a Stop keeps
    latent stats, selectivity + permutation control  -> SAETextResult (`partial_result`)

The word lists can change after training without retraining: `result.rescore(selectivity)`
scores the same code again (the page memoises it per run).
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch

from lab.corpus.sources import text_hash
from lab.experiment import config_record, param, record, report, share_seed, validate, versions
from lab.paths import read_text
from lab.sae import (SAEConfig, SAETrainer, SparseAutoencoder, class_counts,
                     data_warning, encode_rows, history_frame, latent_stats,
                     to_zip_bytes)
from lab.sae_text.capture import MIN_TOKENS, TextActivations, check_layer, text_activations
from lab.selectivity import (Selectivity, SelectivityConfig, label_tokens, selectivity_from_masks,
                             token_latent_frame)

NAME = "sae"
DEFAULT_TEXT = "palinka.txt"


def default_layer(n_layers: int) -> int:
    """Block 6 (the original notes'), or the last block of a smaller model."""
    return min(6, n_layers - 1)


def layer_value(layer: int, n_layers: int) -> int | None:
    """The config's `layer` for block `layer`: None for the default block, so one job has one
    config (the runner's key; a page's untouched settings equal SAETextConfig(), the run
    `python -m lab warm` precomputes)."""
    return None if layer == default_layer(n_layers) else layer


def default_text() -> str:
    return read_text(DEFAULT_TEXT)


@dataclass(frozen=True)
class SAETextConfig:
    text: str = param("", "The text to run through the model; empty: the bundled ~230-token "
                          "text on pálinka and the countries it comes from, written for this lab.",
                      file=True)
    layer: int | None = param(None, "Which block's activations the SAE reconstructs (default: "
                                    "block 6, or the last block of a smaller model).", min=0)
    site: Literal["mlp_out", "mlp_post"] = param(
        "mlp_out", "Which activations: 'mlp_out' is the MLP's output (blocks.L.hook_mlp_out, "
                   "d_model wide, the original notes' 'MLP activations'); 'mlp_post' its hidden neurons "
                   "after the nonlinearity (blocks.L.mlp.hook_post, d_mlp wide).")
    drop_first: bool = param(True, "Drop the first token: position 0 is an attention sink whose "
                                   "activations are often tens of times larger than the rest "
                                   "(e.g. SmolLM2 layers 1, 2, 8 and 29); it would dominate the "
                                   "loss.")
    sae: SAEConfig = param(SAEConfig(), "The sparse autoencoder and its training.")
    selectivity: SelectivityConfig = param(SelectivityConfig(), "Which latents fire on the target "
                                           "words, against a permutation control.")
    seed: int = param(0, "Seeds the SAE's initial weights, its train/validation split and "
                         "shuffling, and the permutation control.", min=0)

    def __post_init__(self):
        validate(self)
        share_seed(self, "sae", "selectivity")

    def layer_of(self, lm) -> int:
        """The block this config reads in `lm` (checked against the model)."""
        layer = default_layer(lm.n_layers) if self.layer is None else self.layer
        check_layer(lm, layer)
        return layer


@dataclass
class Training:
    """A run while its SAE trains: what a Stop keeps (`partial_result` turns it into a result).

    The job runner trains in a worker thread while a page may convert a stopped run: `lock`
    is held for each epoch, so a conversion sees the SAE and its rows at an epoch boundary."""
    text: str
    layer: int
    acts: TextActivations
    sae: SparseAutoencoder                           # the model being trained, updated in place
    rows: list[dict] = field(default_factory=list)   # one SAETrainer row per finished epoch
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def history(self) -> pd.DataFrame:
        return history_frame(list(self.rows))

    @property
    def warning(self) -> str | None:
        return data_warning(self.acts.n_tokens, self.sae.n_latents)


def run(lm, cfg: SAETextConfig, on_progress=None) -> "SAETextResult":
    text = cfg.text or default_text()
    layer = cfg.layer_of(lm)
    acts = text_activations(lm, text, layer, cfg.site, cfg.drop_first)
    label_tokens(text, acts.spans, cfg.selectivity)   # a bad word list fails before training
    trainer = SAETrainer(acts.acts, cfg.sae)
    state = Training(text, layer, acts, trainer.sae)
    epochs = cfg.sae.epochs
    report(on_progress, 0, epochs, "epoch", "Training...", state)
    for _ in range(epochs):
        with state.lock:
            row = trainer.epoch()
            state.rows.append(row)
        report(on_progress, row["epoch"], epochs, "epoch",
               f"Epoch {row['epoch']}/{epochs}: loss {row['loss']:.4g}, nMSE {row['nmse']:.3g}, "
               f"L0 {row['l0']:.1f} ({row['seconds']:.1f} s)", state)
    return partial_result(lm, cfg, state)


def partial_result(lm, cfg: SAETextConfig, state: Training) -> "SAETextResult":
    """Latent statistics and selectivity of the SAE as trained so far (all of it, or to a Stop)."""
    with state.lock:   # a copy: a stopped run's worker may still finish its current epoch
        sae, rows = copy.deepcopy(state.sae), tuple(state.rows)
    result = SAETextResult(cfg, lm.name, state.text, state.layer, state.acts, sae, rows,
                           latent_stats(sae, state.acts.acts), encode_rows(sae, state.acts.acts))
    return result.rescore(cfg.selectivity)


@dataclass(frozen=True, eq=False)
class SAETextResult:
    config: SAETextConfig
    model: str
    text: str                       # the text used (the bundled one when config.text is empty)
    layer: int
    acts: TextActivations
    sae: SparseAutoencoder
    rows: tuple[dict, ...]          # one SAETrainer.epoch() row per finished epoch
    stats: pd.DataFrame             # latent_stats: one row per latent
    z: torch.Tensor                 # [n_tokens, latents] the code of every token
    target: np.ndarray | None = None   # [n_tokens] bool: tokens of the target words
    control: np.ndarray | None = None  # [n_tokens] bool: tokens of the control words
    selectivity: Selectivity | None = None

    def rescore(self, sel: SelectivityConfig) -> "SAETextResult":
        """The same SAE and code scored for other word lists (no retraining)."""
        config = dataclasses.replace(self.config, selectivity=sel)   # shares the run's seed
        sel = config.selectivity
        target, control, missing = label_tokens(self.text, self.acts.spans, sel)
        return dataclasses.replace(self, config=config, target=target, control=control,
                                   selectivity=selectivity_from_masks(self.z, target, control,
                                                                      sel, missing))

    # --- what the run amounts to ---
    @property
    def history(self) -> pd.DataFrame:
        return history_frame(list(self.rows))

    @property
    def counts(self) -> dict[str, int]:
        return class_counts(self.stats)

    @property
    def warning(self) -> str | None:
        """Too few tokens per latent, in words (None when there are enough)."""
        return data_warning(self.acts.n_tokens, self.sae.n_latents)

    @property
    def epochs_done(self) -> int:
        return len(self.rows)

    @property
    def finished(self) -> bool:
        return self.epochs_done == self.config.sae.epochs

    @property
    def seconds(self) -> float:
        return self.rows[-1]["seconds"] if self.rows else 0.0

    def alive_latents(self) -> list[int]:
        """Latents that fire on some token, best selectivity score first."""
        alive = self.stats.loc[self.stats["cls"] != "dead", "latent"]
        table = self.selectivity.table
        return table.loc[table["latent"].isin(alive), "latent"].tolist()

    def token_frame(self, latents) -> pd.DataFrame:
        """Tidy token x latent activations of `latents` (the heatmap's data)."""
        return token_latent_frame(self.z, self.acts.tokens, latents, self.target, self.control)

    def summary(self) -> dict:
        return {**{f"{k}_latents": v for k, v in self.counts.items()},
                "mean_density": float(self.stats["density"].mean()),
                "n_tokens": int(self.z.shape[0]), "n_latents": int(self.z.shape[1]),
                "tokens_per_latent": self.z.shape[0] / max(self.z.shape[1], 1),
                **self.selectivity.summary()}

    def final(self) -> dict[str, dict[str, float]]:
        """The last epoch's metrics per split (train, val)."""
        last = self.history.groupby("split").last().drop(columns="epoch")
        return {s: {k: float(v) for k, v in row.items()} for s, row in last.iterrows()}

    # --- the contract ---
    def metadata(self) -> dict:
        """What travels with the saved SAE (its config.json)."""
        name = DEFAULT_TEXT if not self.config.text else "the SAE page's text"
        return {"model": self.model, "layer": self.layer, "hook": self.acts.hook,
                "seed": self.config.seed, "config": config_record(self.config),
                "epochs_done": self.epochs_done, "status": "done" if self.finished else "stopped",
                "n_tokens": self.acts.n_tokens, "dropped_first_token": self.acts.dropped_first,
                "prepend_bos": False, "training_data": [{"name": name, "sha256": text_hash(self.text),
                                                         "tokens": self.acts.n_tokens}],
                "versions": versions()}

    def to_record(self) -> dict:
        top = self.selectivity.top()
        numbers = {"layer": self.layer, "hook": self.acts.hook,
                   "dropped_first_token": self.acts.dropped_first,
                   "epochs_done": self.epochs_done, "finished": self.finished,
                   "train_seconds": round(self.seconds, 2), "final": self.final(),
                   **self.summary(), "verdict": self.selectivity.sentence(),
                   "warning": self.warning, "top_latents": _plain_rows(top)}
        rec = record(NAME, self.config, self.model, **numbers)
        # lab.experiment.config_record keeps tuples (the word lists): JSON would return lists
        return {**rec, "config": _lists(rec["config"])}

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"history": self.history, "latents": self.stats,
                "selectivity": self.selectivity.table}

    def brief(self) -> dict:
        sae, sel, final = self.config.sae, self.selectivity, self.final()
        kind = f"top-{sae.k}" if sae.activation == "topk" else f"relu + l1 {sae.l1:g}"
        top, dropped = sel.top(), " (first token dropped)" if self.acts.dropped_first else ""
        return {"model": self.model, "hook": self.acts.hook,
                "tokens": f"{self.acts.n_tokens}{dropped}",
                "latents": f"{self.sae.n_latents} ({kind}, {'tied' if sae.tied else 'untied'})",
                "epochs": f"{self.epochs_done} of {sae.epochs} ({self.seconds:.1f} s)",
                **{f"{s} nmse": f"{m['nmse']:.4g} (L0 {m['l0']:.1f})" for s, m in final.items()},
                "dead / always-on / selective": " / ".join(map(str, self.counts.values())),
                **({"warning": self.warning} if self.warning else {}),
                "selectivity": sel.sentence(),
                "top latents": ", ".join(f"{int(r.latent)} ({r.score:.3g}, p_fwer {r.p_fwer:.3g})"
                                         for r in top.itertuples())}

    def export(self, folder) -> None:
        """The SAE itself (sae.safetensors + config.json) into `folder` (the CLI's --out)."""
        self.sae.save(folder, self.metadata())

    def zip_bytes(self) -> bytes:
        return to_zip_bytes(self.sae, self.metadata())


@dataclass(frozen=True)
class RescoreConfig:
    """A finished (or stopped) SAE-page run scored for other word lists: the runner's key. The
    run is named by its config and the epochs it trained (a stopped run differs from the
    finished one); the run's result itself is handed over as `result`, outside the key."""
    run: SAETextConfig
    epochs_done: int
    selectivity: SelectivityConfig


def rescore_config(result: SAETextResult, sel: SelectivityConfig) -> RescoreConfig:
    return RescoreConfig(result.config, result.epochs_done, sel)


def rescore_run(lm, cfg: RescoreConfig, on_progress=None, *, result: SAETextResult) -> SAETextResult:
    """The runner's entry for a rescore: `result` scored for `cfg.selectivity` (no retraining)."""
    if (result.config, result.epochs_done) != (cfg.run, cfg.epochs_done):
        raise ValueError("this rescore names another run than the one it was given")
    report(on_progress, 0, 1, "scores", f"scoring latents with {cfg.selectivity.n_shuffles} shuffles")
    return result.rescore(cfg.selectivity)


def _lists(x):
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    return [_lists(v) for v in x] if isinstance(x, (list, tuple)) else x


def _plain_rows(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain Python values (numpy scalars do not go through json)."""
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()}
            for r in frame.to_dict(orient="records")]
