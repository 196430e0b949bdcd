"""Activation maximization: gradient ascent on input embeddings, nearest-token decoding,
the gap between the optimum and real tokens, and how much random restarts agree.

    x  [restarts, n_tokens, d_model]   the optimized input embeddings (one row per restart)
    a  = hidden_states[layer][r, :, dim] reduced over positions (mean, or the last one)
    loss_r = -a_r + l2 * ||x_r||^2,  and Adam minimizes sum_r loss_r

Restarts run as one batch. The batch loss is a *sum* over restarts, so restart r's gradient
depends on restart r alone, and Adam works element by element: the batch follows exactly
the trajectories the restarts would follow one by one (tests check this). Restart r starts
from a generator seeded with (seed, r), so a restart's start does not depend on how many
restarts run beside it.

The forward stops right after the target block (lab.hooks stop_early), weights stay frozen
(only `x` has requires_grad), and the model adds its own position information exactly as
it does for real tokens: GPT-2 adds its learned position embeddings (wpe) to
`inputs_embeds`; Llama-family models add nothing to the residual stream and rotate queries
and keys (rotary) inside attention.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from lab.hooks import capture, forward
from lab.models import LabModel

MAX_RESTARTS = 64          # a batch of 64 x 5 tokens is still interactive on a laptop CPU
MAX_TOKENS = 64            # longer inputs stop being "a few tokens" and slow every step
REDUCES = ("mean", "last")
TOP_K = 5                  # nearest vocabulary tokens reported per optimized vector
N_RANDOM = 100             # random real-token sequences in the gap meter
# Default penalty weight, per restart on the *summed* squares ||x||^2. The seeds name the
# penalty (-a + lambda ||x||^2) but not lambda. Its job is to keep x at the scale of real
# token embeddings, so that cosine decoding and the gap meter compare like with like. Measured
# on SmolLM2 (layer 8, dim 91, 10 restarts x 500 steps, lr 1e-3): lambda = 0, 0.01, 0.1, 1
# give final activations 342, 341, 343, 339 (no cost to the target) and mean vector norms
# 3.43, 3.41, 3.26, 2.45 against 3.20 for real tokens: 0.1 is where x stays token-sized.
DEFAULT_L2 = 0.1


@dataclass(frozen=True)
class ActMaxConfig:
    """One activation-maximization run (validated here; `check(lm)` adds model ranges)."""

    layer: int                # hidden_states index: 0 = embeddings, L >= 1 = output of block L-1
    dim: int                  # residual-stream dimension to drive up, 0..d_model-1
    n_tokens: int = 5         # length of the optimized input sequence
    steps: int = 500          # Adam steps
    lr: float = 1e-3          # Adam learning rate (the seeds' value)
    l2: float = DEFAULT_L2    # weight of ||x||^2, summed over one restart's embeddings
    restarts: int = 1         # independent random starts, optimized together as one batch
    reduce: str = "mean"      # "mean" over positions, or the "last" position only
    seed: int = 0             # restart r starts from a generator seeded with (seed, r)
    neighbours: int = 5       # dims on each side of `dim` whose mean activation is tracked

    def __post_init__(self):
        _int_in("layer", self.layer, 0, None)
        _int_in("dim", self.dim, 0, None)
        _int_in("n_tokens", self.n_tokens, 1, MAX_TOKENS)
        _int_in("steps", self.steps, 1, None)
        _int_in("restarts", self.restarts, 1, MAX_RESTARTS)
        _int_in("neighbours", self.neighbours, 0, None)
        _int_in("seed", self.seed, 0, None)
        if not _finite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not _finite(self.l2) or self.l2 < 0:
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if self.reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}, got {self.reduce!r}")

    def check(self, lm: LabModel) -> "ActMaxConfig":
        """Raise ValueError when layer, dim or n_tokens do not fit this model."""
        if self.layer > lm.n_layers:
            raise ValueError(f"layer {self.layer} out of range for {lm.name}: valid 0..{lm.n_layers} "
                             f"(0 = embeddings, L = output of block L-1)")
        if self.dim >= lm.d_model:
            raise ValueError(f"dim {self.dim} out of range for {lm.name}: valid 0..{lm.d_model - 1}")
        if self.n_tokens > lm.n_ctx:
            raise ValueError(f"n_tokens {self.n_tokens} exceeds {lm.name}'s context of {lm.n_ctx}")
        return self

    @property
    def hook(self) -> str:
        return hook_for_layer(self.layer)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int_in(name: str, value, lo: int, hi: int | None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")


def hook_for_layer(layer: int) -> str:
    """hidden_states[layer] as a hook name: 0 -> block 0's input, L -> block L-1's raw output."""
    return "hook_embed" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


# ---------------------------------------------------------------- forward pieces

def layer_activations(lm: LabModel, layer: int, input_ids: torch.Tensor | None = None,
                      inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """hidden_states[layer] [batch, pos, d_model] from one forward that stops there.

    Raw residual: for layer == n_layers this is the last block's output *before* the final
    norm (HF's last hidden_states entry has the norm applied). Keeps the autograd graph.
    """
    hook = hook_for_layer(layer)
    with capture(lm, [hook], stop_early=True) as cache:
        forward(lm, input_ids=input_ids, inputs_embeds=inputs_embeds)
    return cache[hook]


def _reduce(h: torch.Tensor, how: str) -> torch.Tensor:
    """[batch, pos, ...] -> [batch, ...]: mean over positions or the last position."""
    return h.mean(1) if how == "mean" else h[:, -1]


def neighbour_dims(cfg: ActMaxConfig, d_model: int) -> list[int]:
    """Dims within `neighbours` of the target, the target itself excluded."""
    lo, hi = max(0, cfg.dim - cfg.neighbours), min(d_model - 1, cfg.dim + cfg.neighbours)
    return [d for d in range(lo, hi + 1) if d != cfg.dim]


def _stream_seed(*words: int) -> int:
    """A 32-bit seed from a tuple of ints: independent streams for (seed, restart, ...)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def random_embeddings(lm: LabModel, seed: int, restarts: int, n_tokens: int,
                      stream: int = 0) -> torch.Tensor:
    """[restarts, n_tokens, d_model] Gaussian vectors scaled to the std of W_E.

    Row r comes from its own generator seeded with (seed, r, stream): row r is the same
    whatever `restarts` is. stream 0 = optimization starts, 1 = the null control.
    """
    std = lm.W_E.detach().float().std().item()
    rows = []
    for r in range(restarts):
        g = torch.Generator().manual_seed(_stream_seed(seed, r, stream))
        rows.append(torch.randn(n_tokens, lm.d_model, generator=g))
    return (torch.stack(rows) * std).to(device=lm.device, dtype=lm.W_E.dtype)


def initial_embeddings(lm: LabModel, cfg: ActMaxConfig) -> torch.Tensor:
    """The starts of a run: [restarts, n_tokens, d_model]."""
    return random_embeddings(lm, cfg.seed, cfg.restarts, cfg.n_tokens, stream=0)


# ---------------------------------------------------------------- optimization

@dataclass(frozen=True)
class StepInfo:
    """What `on_step` receives after each forward: the state *before* that step's update."""

    step: int                 # 0..steps; `step` updates have been applied to `embeds`
    steps: int                # total steps of the run
    target: np.ndarray        # [restarts] target activation
    neighbours: np.ndarray    # [restarts] mean activation of the neighbouring dims
    loss: np.ndarray          # [restarts] -target + l2 * ||x||^2
    embeds: torch.Tensor | None  # [restarts, n_tokens, d_model] a copy, safe to keep


OnStep = Callable[[StepInfo], None]
HISTORY_COLUMNS = ["step", "restart", "target", "neighbours", "loss"]


def history_frame(steps: list[StepInfo] | list[tuple]) -> pd.DataFrame:
    """Tidy history: one row per (step, restart)."""
    rows = [(s.step, r, float(s.target[r]), float(s.neighbours[r]), float(s.loss[r]))
            for s in steps for r in range(len(s.target))]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def optimize(lm: LabModel, cfg: ActMaxConfig, on_step: OnStep | None = None,
             start: torch.Tensor | None = None) -> tuple[torch.Tensor, pd.DataFrame]:
    """Run Adam on the embeddings; return (final embeds [R, T, D], tidy history).

    `start` overrides the seeded starts (same shape): used to run restarts one by one.
    The history has steps 0..cfg.steps; row `steps` is measured after the last update.
    """
    cfg.check(lm)
    x = (initial_embeddings(lm, cfg) if start is None else start).detach().clone()
    if x.shape != (cfg.restarts, cfg.n_tokens, lm.d_model):
        raise ValueError(f"start must have shape {(cfg.restarts, cfg.n_tokens, lm.d_model)}, "
                         f"got {tuple(x.shape)}")
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    nb = torch.tensor(neighbour_dims(cfg, lm.d_model), dtype=torch.long, device=x.device)
    target_t, nb_t, loss_t = [], [], []
    with capture(lm, [cfg.hook], stop_early=True) as cache:
        for step in range(cfg.steps + 1):
            last = step == cfg.steps
            with torch.set_grad_enabled(not last):   # the final forward only measures
                forward(lm, inputs_embeds=x)
                h = cache[cfg.hook]                                    # [R, T, D]
                target = _reduce(h[..., cfg.dim], cfg.reduce)          # [R]
                loss = -target + cfg.l2 * x.pow(2).sum((1, 2))         # [R]
            if not last:
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()   # a sum: each restart's gradient is its own
            with torch.no_grad():
                neigh = _reduce(h.detach()[..., nb], cfg.reduce).mean(-1)  # [R] (nan if none)
            target_t.append(target.detach())
            nb_t.append(neigh)
            loss_t.append(loss.detach())
            if on_step is not None:
                on_step(StepInfo(step, cfg.steps, target_t[-1].cpu().numpy(), neigh.cpu().numpy(),
                                 loss_t[-1].cpu().numpy(), x.detach().clone()))
            if not last:
                opt.step()
    steps = [StepInfo(s, cfg.steps, t.cpu().numpy(), n.cpu().numpy(), lo.cpu().numpy(), None)
             for s, (t, n, lo) in enumerate(zip(target_t, nb_t, loss_t))]
    return x.detach(), history_frame(steps)


class Recorder:
    """Collects `StepInfo`s as they come (for pages: partial results survive a Stop).

    Use `recorder.add` as (part of) `on_step`; after an interruption `summarize` turns what
    was recorded into a full `ActMaxResult`.
    """

    def __init__(self, cfg: ActMaxConfig, model: str = ""):
        self.cfg = cfg
        self.model = model    # name of the model it ran on: a partial result belongs to it
        self.steps: list[StepInfo] = []
        self.start: torch.Tensor | None = None   # step 0's embeddings: where each restart began
        self.started = time.perf_counter()
        self.seconds = 0.0

    def add(self, info: StepInfo) -> None:
        if self.start is None:
            self.start = info.embeds
        # Keep only the newest embeddings: the others are never needed, and 500 copies add up.
        if self.steps:
            last = self.steps[-1]
            self.steps[-1] = StepInfo(last.step, last.steps, last.target, last.neighbours,
                                      last.loss, None)
        self.steps.append(info)
        self.seconds = time.perf_counter() - self.started

    @property
    def done(self) -> int:
        """Steps whose forward has run (0..steps)."""
        return self.steps[-1].step if self.steps else 0

    @property
    def history(self) -> pd.DataFrame:
        return history_frame(self.steps)

    @property
    def embeds(self) -> torch.Tensor | None:
        return self.steps[-1].embeds if self.steps else None


# ---------------------------------------------------------------- decoding

def nearest(lm: LabModel, vectors: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k vocabulary tokens by cosine similarity: vectors [N, D] -> (ids [N, k], cos [N, k])."""
    W = torch.nn.functional.normalize(lm.W_E.detach().float(), dim=-1)          # [V, D]
    v = torch.nn.functional.normalize(vectors.detach().float().to(W.device), dim=-1)  # [N, D]
    cos, ids = (v @ W.T).topk(min(k, W.shape[0]), dim=-1)
    return ids.cpu(), cos.cpu()


def token_texts(lm: LabModel, ids) -> list[str]:
    """Readable text of each token id (decoded, so a leading space shows as a space)."""
    tok = lm.tokenizer
    out = []
    for i in np.asarray(ids).ravel().tolist():
        text = tok.decode([i]) if tok is not None and i < len(tok) else None
        if text and "\ufffd" in text:   # a piece of a multi-byte character: show the raw token
            text = tok.convert_ids_to_tokens(i)
        out.append(text if text else f"<{i}>")
    return out


def nearest_tokens(lm: LabModel, embeds: torch.Tensor, k: int = TOP_K) -> pd.DataFrame:
    """Tidy: restart, position, rank (1 = nearest), token_id, token, cosine."""
    R, T, D = embeds.shape
    ids, cos = nearest(lm, embeds.reshape(R * T, D), k)
    kk = ids.shape[1]
    grid = np.indices((R, T, kk)).reshape(3, -1)
    return pd.DataFrame({"restart": grid[0], "position": grid[1], "rank": grid[2] + 1,
                         "token_id": ids.reshape(-1).numpy(),
                         "token": token_texts(lm, ids.reshape(-1)),
                         "cosine": cos.reshape(-1).numpy().astype(float)})


def nearest_wide(nearest: pd.DataFrame, restart: int = 0) -> pd.DataFrame:
    """One restart's nearest tokens as a table: one row per position, "token (cosine)" by rank."""
    d = nearest[nearest.restart == restart]
    cells = d.assign(cell=[f"{t!r}  ({c:.3f})" for t, c in zip(d.token, d.cosine)])
    wide = cells.pivot(index="position", columns="rank", values="cell")
    wide.columns = [f"nearest {r}" for r in wide.columns]
    return wide.reset_index()


# ---------------------------------------------------------------- the gap meter

@dataclass(frozen=True)
class GapMeter:
    """How far the optimum is from anything real tokens reach."""

    optimum: np.ndarray       # [restarts] activation of the optimized embeddings
    snapped: np.ndarray       # [restarts] activation of their nearest real tokens, fed back
    snapped_ids: np.ndarray   # [restarts, n_tokens] those tokens
    random: np.ndarray        # [N_RANDOM] activation of random real-token sequences

    def frame(self) -> pd.DataFrame:
        """Tidy: source ("optimized embeddings" | "nearest tokens" | "random tokens"), item, activation."""
        parts = [("optimized embeddings", self.optimum), ("nearest tokens", self.snapped),
                 ("random tokens", self.random)]
        return pd.DataFrame([(src, i, float(v)) for src, vals in parts for i, v in enumerate(vals)],
                            columns=["source", "item", "activation"])

    def snapped_percentile(self) -> np.ndarray:
        """[restarts] share (0..100) of random sequences below each snapped activation."""
        return np.array([100.0 * (self.random < s).mean() for s in self.snapped])

    def summary(self) -> dict:
        return {"optimum_mean": float(self.optimum.mean()), "snapped_mean": float(self.snapped.mean()),
                "random_mean": float(self.random.mean()), "random_std": float(self.random.std()),
                "random_max": float(self.random.max()),
                "snapped_percentile_mean": float(self.snapped_percentile().mean())}


@torch.no_grad()
def gap_meter(lm: LabModel, cfg: ActMaxConfig, embeds: torch.Tensor, optimum: np.ndarray,
              n_random: int = N_RANDOM, snapped_ids: torch.Tensor | None = None) -> GapMeter:
    """Feed the nearest tokens back as real input; compare with random real-token sequences.

    `snapped_ids` [R, T]: the nearest tokens when already decoded (saves a vocabulary pass).
    """
    R, T, D = embeds.shape
    if snapped_ids is None:
        snapped_ids = nearest(lm, embeds.reshape(R * T, D), 1)[0].reshape(R, T)
    snapped_ids = torch.as_tensor(snapped_ids, dtype=torch.long)
    g = torch.Generator().manual_seed(_stream_seed(cfg.seed, 2))
    random_ids = torch.randint(0, lm.vocab_size, (n_random, T), generator=g)
    ids = torch.cat([snapped_ids, random_ids]).to(lm.device)       # one forward for both
    acts = _reduce(layer_activations(lm, cfg.layer, input_ids=ids)[..., cfg.dim], cfg.reduce)
    acts = acts.float().cpu().numpy()
    return GapMeter(np.asarray(optimum, dtype=float), acts[:R].astype(float),
                    snapped_ids.numpy(), acts[R:].astype(float))


# ---------------------------------------------------------------- the result

@dataclass(frozen=True)
class ActMaxResult:
    config: ActMaxConfig
    model: str
    embeds: torch.Tensor      # [restarts, n_tokens, d_model] optimized embeddings (cpu)
    start: torch.Tensor       # [restarts, n_tokens, d_model] where each restart began (cpu)
    history: pd.DataFrame     # step, restart, target, neighbours, loss
    nearest: pd.DataFrame     # restart, position, rank, token_id, token, cosine
    gap: GapMeter
    seconds: float            # wall time of the optimization loop
    steps_done: int           # == config.steps unless the run was stopped early
    token_norm: float         # mean L2 norm of the model's token embeddings, for scale

    @property
    def initial(self) -> np.ndarray:
        """[restarts] target activation at the start."""
        return self._at(self.history.step.min())

    @property
    def final(self) -> np.ndarray:
        """[restarts] target activation of the returned embeddings."""
        return self._at(self.history.step.max())

    def _at(self, step: int) -> np.ndarray:
        h = self.history[self.history.step == step].sort_values("restart")
        return h.target.to_numpy()

    @property
    def gain(self) -> np.ndarray:
        """[restarts] final / |initial|: the final activation in units of the starting size.

        |initial| rather than initial because random starts often sit slightly below 0, where
        a plain ratio flips sign; the seeds' "three orders of magnitude" is this ratio.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.final / np.abs(self.initial)

    @property
    def moved(self) -> np.ndarray:
        """[restarts] ||x - x0|| / ||x0||, averaged over positions: how far from the start.

        Small values mean the optimized vectors are still mostly their random start, so
        whatever they decode to says more about the start than about the dimension.
        """
        step = (self.embeds - self.start).norm(dim=-1) / self.start.norm(dim=-1)
        return step.mean(-1).numpy().astype(float)

    @property
    def best_cosine(self) -> float:
        return float(self.nearest.cosine.max())

    def per_restart(self) -> pd.DataFrame:
        """One row per restart: activations, gap meter, and the decoded text."""
        top = self.nearest[self.nearest["rank"] == 1].sort_values(["restart", "position"])
        text = top.groupby("restart").token.apply(lambda t: "|".join(t))
        cos = top.groupby("restart").cosine
        return pd.DataFrame({
            "restart": np.arange(self.config.restarts), "initial": self.initial,
            "final": self.final, "gain": self.gain, "nearest_tokens": text.to_numpy(),
            "vector_norm": self.embeds.norm(dim=-1).mean(-1).numpy().astype(float),
            "moved": self.moved,
            "snapped_activation": self.gap.snapped,
            "snapped_percentile": self.gap.snapped_percentile(),
            "mean_top1_cosine": cos.mean().to_numpy(), "best_cosine": cos.max().to_numpy()})

    def to_json(self) -> dict:
        """Everything needed to reproduce and read the run (no tensors)."""
        import dataclasses
        import transformers
        return {"model": self.model, "config": dataclasses.asdict(self.config),
                "seed": self.config.seed, "steps_done": self.steps_done,
                "seconds": round(self.seconds, 3),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "restarts": self.per_restart().to_dict(orient="records"),
                "gap_meter": self.gap.summary(), "best_cosine": self.best_cosine,
                "token_norm": self.token_norm,
                "nearest": self.nearest.to_dict(orient="records")}


def summarize(lm: LabModel, cfg: ActMaxConfig, embeds: torch.Tensor, history: pd.DataFrame,
              seconds: float = 0.0, start: torch.Tensor | None = None) -> ActMaxResult:
    """Decode and gap-meter optimized embeddings; also turns a stopped run into a result.

    `start`: the starting embeddings (recomputed from the config's seed when None).
    """
    if history.empty:
        raise ValueError("nothing was computed yet: no step has run")
    embeds = embeds.detach().cpu()
    start = (initial_embeddings(lm, cfg) if start is None else start).detach().cpu()
    last = history[history.step == history.step.max()].sort_values("restart")
    near = nearest_tokens(lm, embeds)
    top1 = near[near["rank"] == 1].sort_values(["restart", "position"]).token_id.to_numpy()
    gap = gap_meter(lm, cfg, embeds, last.target.to_numpy(),
                    snapped_ids=torch.tensor(top1).reshape(embeds.shape[:2]))
    token_norm = float(lm.W_E.detach().float().norm(dim=-1).mean())
    return ActMaxResult(cfg, lm.name, embeds, start, history.reset_index(drop=True), near, gap,
                        seconds, int(history.step.max()), token_norm)


def maximize(lm: LabModel, cfg: ActMaxConfig, on_step: OnStep | None = None,
             start: torch.Tensor | None = None) -> ActMaxResult:
    """Optimize, decode the result into tokens, and measure the gap to real text."""
    t0 = time.perf_counter()
    x0 = initial_embeddings(lm, cfg) if start is None else start
    embeds, history = optimize(lm, cfg, on_step, x0)
    return summarize(lm, cfg, embeds, history, time.perf_counter() - t0, x0)


# ---------------------------------------------------------------- reproducibility

@dataclass(frozen=True)
class TokenStats:
    """Agreement between restarts, from their decoded tokens and their vectors."""

    token_ids: np.ndarray     # [restarts, n_tokens] nearest token of every vector
    frequencies: pd.DataFrame  # token_id, token, count, frequency (numpy.unique, most common first)
    jaccard: np.ndarray       # [restarts, restarts] |A∩B| / |A∪B| of the restarts' token sets
    cosine: np.ndarray        # [restarts, restarts] cosine of the flattened [n_tokens*d_model] vectors

    @property
    def n_total(self) -> int:
        return int(self.token_ids.size)

    @property
    def n_unique(self) -> int:
        return int(len(self.frequencies))

    @staticmethod
    def _off_diagonal_mean(m: np.ndarray) -> float:
        mask = ~np.eye(len(m), dtype=bool)
        return float(m[mask].mean()) if mask.any() else float("nan")

    @property
    def mean_jaccard(self) -> float:
        return self._off_diagonal_mean(self.jaccard)

    @property
    def mean_cosine(self) -> float:
        return self._off_diagonal_mean(self.cosine)


def token_statistics(token_ids: np.ndarray, vectors: np.ndarray | torch.Tensor,
                     labels: list[str] | None = None) -> TokenStats:
    """Counts, Jaccard and cosine for token ids [R, T] and their vectors [R, T, D].

    `labels` gives the text of each id in `token_ids.ravel()` order (ids when None).
    """
    token_ids = np.asarray(token_ids)
    flat = token_ids.ravel()
    text = dict(zip(flat.tolist(), labels if labels is not None else map(str, flat.tolist())))
    uniq, counts = np.unique(flat, return_counts=True)
    order = np.lexsort((uniq, -counts))   # most common first, ties by id
    freq = pd.DataFrame({"token_id": uniq[order], "token": [text[i] for i in uniq[order].tolist()],
                         "count": counts[order], "frequency": counts[order] / flat.size})
    sets = [set(row.tolist()) for row in token_ids]
    jac = np.array([[len(a & b) / len(a | b) for b in sets] for a in sets])
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float64)).reshape(len(token_ids), -1)
    v = torch.nn.functional.normalize(v, dim=-1)
    return TokenStats(token_ids, freq, jac, (v @ v.T).numpy())


@dataclass(frozen=True)
class ReproResult:
    optimized: TokenStats     # the optimized embeddings of every restart
    null: TokenStats          # random unoptimized vectors of the same shape and scale
    same_as_start: int        # decoded tokens equal to the nearest token of their own start
    step_cosine: np.ndarray   # [restarts, restarts] cosine of the displacements x - x0

    @property
    def mean_step_cosine(self) -> float:
        """Do the restarts *move* the same way, even if they started far apart?"""
        return TokenStats._off_diagonal_mean(self.step_cosine)

    def summary(self) -> pd.DataFrame:
        rows = []
        for name, s in (("optimized", self.optimized), ("null control", self.null)):
            rows.append({"vectors": name, "decoded": s.n_total, "unique": s.n_unique,
                         "most_common_count": int(s.frequencies["count"].iloc[0]),
                         "mean_jaccard": s.mean_jaccard, "mean_cosine": s.mean_cosine})
        return pd.DataFrame(rows)

    def pairs(self) -> pd.DataFrame:
        """Tidy pairwise matrices: vectors, restart_a, restart_b, jaccard, cosine."""
        rows = []
        for name, s in (("optimized", self.optimized), ("null control", self.null)):
            n = len(s.jaccard)
            rows += [(name, a, b, float(s.jaccard[a, b]), float(s.cosine[a, b]))
                     for a in range(n) for b in range(n)]
        return pd.DataFrame(rows, columns=["vectors", "restart_a", "restart_b", "jaccard", "cosine"])

    def to_json(self) -> dict:
        return {"summary": self.summary().to_dict(orient="records"),
                "same_as_start": self.same_as_start,
                "mean_displacement_cosine": self.mean_step_cosine,
                "frequencies": self.optimized.frequencies.to_dict(orient="records"),
                "null_frequencies": self.null.frequencies.to_dict(orient="records"),
                "jaccard": self.optimized.jaccard.round(4).tolist(),
                "cosine": self.optimized.cosine.round(4).tolist(),
                "null_jaccard": self.null.jaccard.round(4).tolist()}


def _top1(lm: LabModel, vectors: torch.Tensor) -> np.ndarray:
    R, T, D = vectors.shape
    return nearest(lm, vectors.reshape(R * T, D), 1)[0].reshape(R, T).numpy()


def _stats_of(lm: LabModel, vectors: torch.Tensor) -> TokenStats:
    ids = _top1(lm, vectors)
    return token_statistics(ids, vectors.detach().cpu().numpy(), token_texts(lm, ids))


def reproducibility(lm: LabModel, result: ActMaxResult) -> ReproResult:
    """How much the restarts agree, against random unoptimized vectors (same shape, scale)."""
    cfg = result.config
    null = random_embeddings(lm, cfg.seed, cfg.restarts, cfg.n_tokens, stream=1)
    optimized = _stats_of(lm, result.embeds)
    kept = int((optimized.token_ids == _top1(lm, result.start)).sum())
    steps = torch.nn.functional.normalize((result.embeds - result.start).double().flatten(1), dim=-1)
    return ReproResult(optimized, _stats_of(lm, null), kept, (steps @ steps.T).numpy())
