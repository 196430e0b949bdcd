"""Laminar profile: a fresh sparse autoencoder on every layer's MLP output, against depth.

    cfg = LaminarConfig(url=..., n_windows=10, window_len=1024, sae=SAEConfig(...))   or preset()
    run(lm, cfg, on_progress) -> LaminarResult       the registry's entry point
        article = corpus.article_for(cfg.url, cfg.text)      fetched, pasted, or bundled
        windows = corpus_windows(tokenize(article), cfg)     [n_windows, window_len], or what fits
        acts    = capture_mlp_out(lm, windows)   one forward per window batch captures ALL layers
                                                 [layers, n_windows * (window_len - 1), d_model]
        rows    = sweep(lm, windows, cfg)        one row per layer: density, dead fraction, MSE,
                                                 normalized MSE (train and held out), seconds
    estimate(lm, cfg, measure_rates(lm, cfg))   the time before Run (FLOPs / measured rates)
    shape_summary(rows), describe_shape(row)     the curves' shape in words

Where it runs (config fields that leave the rows as they are): `sae_device` (the SAEs train on
cpu, cuda or mps; the activations stay there while they fit in `memory_fraction` of its free
memory, else they go over a batch at a time), `ray` (each layer a Ray task: lab.laminar.cluster,
imported only then), `run_dir` / `resume` / `keep_saes` (each finished layer written as it
completes, lab.laminar.store; a resumed sweep skips the layers already there).

Position 0 of every window is dropped: the first token of a sequence carries outlier
activations that have nothing to do with the text (the original notes say so; any attention sink does).
Raw MSE grows with a layer's activation scale; normalized MSE (MSE / variance of the
activations) is the one to compare across layers and models. The SAE comes from `lab.sae`,
which also normalizes its inputs to unit variance, so the same L1 weight means the same on
every layer.
"""
from lab.laminar.capture import capture_mlp_out
from lab.laminar.config import PRESETS, LaminarConfig, preset
from lab.laminar.cost import (Estimate, estimate, format_duration, forward_flops, layer_flops,
                              measure_rates, rates_config, RatesConfig, sae_flops)
from lab.laminar.result import LaminarResult, corpus_windows, run
from lab.laminar.shape import describe_shape, shape_summary
from lab.laminar.store import RunFolder
from lab.laminar.train import COLUMNS, code_density, fit_layer, frame, sweep, train_layer

__all__ = ["COLUMNS", "PRESETS", "Estimate", "LaminarConfig", "LaminarResult", "RunFolder",
           "capture_mlp_out", "code_density", "corpus_windows", "describe_shape", "estimate",
           "fit_layer", "format_duration", "forward_flops", "frame", "layer_flops",
           "measure_rates", "preset", "RatesConfig", "rates_config", "run", "sae_flops", "shape_summary", "sweep", "train_layer"]
