"""Activation maximization: drive one unit up (a residual-stream dimension, an MLP neuron, or
an SAE latent) by optimizing the input; decode it into real tokens, compare it with the best
real text, and see how much random restarts agree (lab.actmax.repro).

    config.py    ActMaxConfig: the target (hook point + index, or an SAE latent), the method
                 (continuous, pez, discrete, epo), the optimizer, the corpus bar
    target.py    the target on a model (an SAE opened by lab.sae.load); batched scoring of token sequences (and cross-entropy)
    optimize.py  continuous: the batched Adam loop on input embeddings; the Recorder a Stop keeps
    pez.py       PEZ: a continuous copy whose nearest tokens run every forward
    discrete.py  GCG-style token swaps proposed by the one-hot gradient, scored in one batch
    epo.py       EPO-lite: a population over fluency weights; the activation-vs-ce frontier
    prompts.py   real-token prompts measured by feeding them: activation, ce, decode round trip
    bar.py       the bar to beat: the corpus's best windows at the same target
    decode.py    nearest tokens by cosine, the gap meter
    result.py    ActMaxResult; run / maximize / summarize / partial_result
    repro.py     ReproConfig (nests an ActMaxConfig), agreement statistics, its own run

`run` and `partial_result` here are activation maximization's (the registry's "actmax");
the reproducibility experiment's are in lab.actmax.repro ("repro").
"""
from lab.actmax.bar import Bar, corpus_bar
from lab.actmax.config import (DEFAULT_L2, MAX_RESTARTS, MAX_TOKENS, METHODS, REDUCES,
                               ActMaxConfig)
from lab.actmax.decode import (N_RANDOM, TOP_K, GapMeter, gap_meter, nearest, nearest_tokens,
                               nearest_wide, token_texts, top1)
from lab.actmax.optimize import (HISTORY_COLUMNS, Recorder, activations, initial_embeddings,
                                 optimize, random_embeddings)
from lab.actmax.prompts import Prompts, measure
from lab.actmax.repro import ReproConfig, ReproResult, TokenStats, reproducibility, token_statistics
from lab.actmax.result import ActMaxResult, maximize, partial_result, run, summarize
from lab.hooks import hook_kind, hook_layer   # (were lab.actmax's own; lab.hooks parses names)
from lab.actmax.target import (Scores, Target, evaluate, neighbour_indices, reduce_positions,
                               target_of)

__all__ = ["Bar", "corpus_bar", "DEFAULT_L2", "MAX_RESTARTS", "MAX_TOKENS", "METHODS", "REDUCES",
           "ActMaxConfig", "hook_kind", "hook_layer", "N_RANDOM", "TOP_K", "GapMeter", "gap_meter",
           "nearest", "nearest_tokens", "nearest_wide", "token_texts", "top1", "HISTORY_COLUMNS",
           "Recorder", "activations", "initial_embeddings", "optimize", "random_embeddings",
           "Prompts", "measure", "ReproConfig", "ReproResult", "TokenStats", "reproducibility",
           "token_statistics", "ActMaxResult", "maximize", "partial_result", "run", "summarize",
           "Scores", "Target", "evaluate", "neighbour_indices", "reduce_positions", "target_of"]
