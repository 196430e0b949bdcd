"""Activation maximization: gradient ascent on input embeddings drives one unit of a hook point
up (a residual-stream dimension, or an MLP neuron); nearest-token decoding, the gap between
the optimum and real tokens, and how much random restarts agree (lab.actmax.repro).

    config.py    ActMaxConfig: the target (hook point + index) and the optimizer
    optimize.py  the batched Adam loop, seeded starts, the Recorder a Stop keeps
    decode.py    nearest tokens by cosine, the gap meter
    result.py    ActMaxResult; run / maximize / summarize / partial_result
    repro.py     ReproConfig (nests an ActMaxConfig), agreement statistics, its own run

`run` and `partial_result` here are activation maximization's (the registry's "actmax");
the reproducibility experiment's are in lab.actmax.repro ("repro").
"""
from lab.actmax.config import (DEFAULT_L2, MAX_RESTARTS, MAX_TOKENS, REDUCES, ActMaxConfig,
                               hook_kind, hook_layer)
from lab.actmax.decode import (N_RANDOM, TOP_K, GapMeter, gap_meter, nearest, nearest_tokens,
                               nearest_wide, token_texts, top1)
from lab.actmax.optimize import (HISTORY_COLUMNS, Recorder, activations, initial_embeddings,
                                 neighbour_indices, optimize, random_embeddings, reduce_positions)
from lab.actmax.repro import ReproConfig, ReproResult, TokenStats, reproducibility, token_statistics
from lab.actmax.result import ActMaxResult, maximize, partial_result, run, summarize

__all__ = ["DEFAULT_L2", "MAX_RESTARTS", "MAX_TOKENS", "REDUCES", "ActMaxConfig", "hook_kind",
           "hook_layer", "N_RANDOM", "TOP_K", "GapMeter", "gap_meter", "nearest", "nearest_tokens",
           "nearest_wide", "token_texts", "top1", "HISTORY_COLUMNS", "Recorder", "activations",
           "initial_embeddings", "neighbour_indices", "optimize", "random_embeddings",
           "reduce_positions", "ReproConfig", "ReproResult", "TokenStats", "reproducibility",
           "token_statistics", "ActMaxResult", "maximize", "partial_result", "run", "summarize"]
