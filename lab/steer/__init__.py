"""Steering: watch the model continue a prompt, then push it with a vector at one hook.

    vector      an SAE latent's decoder direction (any SAE `lab.sae.load.load_sae` opens;
                'default': the SAE page's default SAE), or a contrast: the mean activation at
                the hook over prompt A's tokens minus over prompt B's (ActAdd; each side may
                be a list of prompts)
    controls    a random direction of the vector's norm (seeded), and the vector at
                coefficient 0 (which must repeat the unsteered text token for token)
    arms        unsteered, then steered and control at alpha and at every sweep coefficient,
                generated together as rows of one batch with a KV cache; each token streams
                to `on_progress` (partial = the result so far), so a page shows them as they
                come and a Stop ends the run within a token
    numbers     per continuation: the target words' mass (under its own model) and the
                perplexity under the unsteered model (the fluency cost); per token: the
                log-probability under the arm's model and under the unsteered one

    config.py    SteerConfig
    vectors.py   the vectors and the random control
    hook.py      adding a vector at a hook (thread-aware, removed in finally)
    generate.py  the batched generation loop, the unsteered scoring
    result.py    SteerResult: to_record(), frames(), brief()
"""
from __future__ import annotations

import time

import torch

from lab.experiment import OnProgress, report
from lab.models import LabModel
from lab.steer.config import DEFAULT_SAE, SteerConfig, contrast_sides
from lab.steer.generate import Row, generate, target_token_ids, unsteered_logp
from lab.steer.hook import steering
from lab.steer.result import ARMS, Arm, SteerResult
from lab.steer.vectors import Vector, build_vector, default_hook, random_like

__all__ = ["ARMS", "DEFAULT_SAE", "Arm", "Row", "SteerConfig", "SteerResult", "Vector",
           "build_vector", "contrast_sides", "default_hook", "generate", "partial_result",
           "prompt_ids", "random_like", "run", "steering", "target_token_ids", "unsteered_logp"]


def prompt_ids(lm: LabModel, cfg: SteerConfig) -> list[int]:
    """The prompt's tokens, checked to leave room for the new ones (one sentence if not)."""
    ids = list(lm.tokenizer(cfg.prompt, verbose=False)["input_ids"])
    if not ids:
        raise ValueError("the prompt produced no tokens: give some ordinary text")
    if len(ids) + cfg.max_new_tokens > lm.n_ctx:
        raise ValueError(f"max_new_tokens {cfg.max_new_tokens} is too many: the prompt's "
                         f"{len(ids)} tokens plus the new ones must fit {lm.name}'s context of "
                         f"{lm.n_ctx}")
    return ids


def plan(cfg: SteerConfig) -> list[tuple[str, float]]:
    """The rows of the batch, in order: unsteered, then (steered, control) per coefficient."""
    return [("unsteered", 0.0)] + [(arm, a) for a in cfg.alphas() for arm in ("steered", "control")]


def run(lm: LabModel, cfg: SteerConfig, on_progress: OnProgress | None = None) -> SteerResult:
    ids = prompt_ids(lm, cfg)
    n = cfg.max_new_tokens
    report(on_progress, 0, n, "token", "Building the steering vector...")
    vec = build_vector(lm, cfg, ids)
    rows = plan(cfg)
    deltas = torch.stack([torch.zeros_like(vec.steer) if arm == "unsteered" else
                          alpha * (vec.steer if arm == "steered" else vec.control)
                          for arm, alpha in rows])
    targets = target_token_ids(lm.tokenizer, cfg.target)
    t0 = time.perf_counter()
    pieces: dict[int, str] = {}

    def on_token(step: int, out: list[Row]) -> None:
        partial = _result(lm, cfg, vec, ids, rows, [r.snapshot() for r in out], step,
                          time.perf_counter() - t0, scored=None, pieces=pieces)
        report(on_progress, step, n, "token",
               f"Generating {len(rows)} continuations: {step} of {n} tokens", partial=partial)

    out = generate(lm, ids, n, vec.hook, deltas, sample=cfg.sample, temperature=cfg.temperature,
                   top_p=cfg.top_p, seed=cfg.seed, target_ids=targets, on_token=on_token)
    seconds = time.perf_counter() - t0
    result = _result(lm, cfg, vec, ids, rows, out, n, seconds, unsteered_logp(lm, ids, out),
                     pieces)
    report(on_progress, n, n, "token", "Done.", partial=result)
    return result


def partial_result(lm: LabModel, cfg: SteerConfig, partial: SteerResult) -> SteerResult:
    """A stopped run's result: the tokens so far, scored by the unsteered model."""
    if all(a.logp_unsteered is not None for a in partial.arms):
        return partial
    rows = [a.row for a in partial.arms]
    scored = unsteered_logp(lm, list(partial.prompt_ids), rows)
    arms = tuple(Arm(a.arm, a.alpha, a.row, a.pieces, a.text, tuple(s))
                 for a, s in zip(partial.arms, scored))
    return SteerResult(**{**partial.__dict__, "arms": arms})


def _result(lm, cfg, vec: Vector, ids, rows, out: list[Row], step: int, seconds: float,
            scored, pieces: dict[int, str] | None = None) -> SteerResult:
    tok, pieces = lm.tokenizer, {} if pieces is None else pieces

    def piece(t: int) -> str:
        if t not in pieces:
            pieces[t] = tok.decode([t])
        return pieces[t]
    arms = tuple(Arm(arm, alpha, row, tuple(piece(t) for t in row.tokens),
                     tok.decode(row.tokens), None if scored is None else tuple(scored[i]))
                 for i, ((arm, alpha), row) in enumerate(zip(rows, out)))
    return SteerResult(config=cfg, model=lm.name, hook=vec.hook, source=vec.source,
                       vector_norm=vec.norm, act_norm=vec.act_norm, prompt_ids=tuple(ids),
                       arms=arms, steps_done=step, seconds=seconds, sae=vec.sae)
