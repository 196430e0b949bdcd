"""What the board says about a group of shares (one experiment, one model, the same settings
but the seed).

- activation maximization (and reproducibility): the pairwise cosine matrix of everyone's
  optimized vectors beside the same matrix for random vectors of the same norms (the null),
  and how many pairs are more alike than the null's 95th percentile;
- SAE: each share's best latent, score and p-value, and whether the runs (seeds differ) agree
  on a latent: the best latent's decoder direction against the other runs' top latents;
- feature view: each share's verdict against its controls.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

NULL_VECTORS = 2000   # random vectors behind the null's 95th percentile (its error ~0.005 cosine)
MATCH = 0.7           # decoder directions this alike count as the same latent: the threshold
                      # SAE-universality work uses for "the same feature" (random directions in
                      # d_model >= 64 stay far below it; the null is shown beside it)


def settings_of(record: dict) -> dict:
    """The record's config without its seeds (nested configs share the parent's)."""
    return _without_seed(record["config"])


def _without_seed(x):
    if isinstance(x, dict):
        return {k: _without_seed(v) for k, v in x.items() if k != "seed"}
    return x


def group_key(record: dict) -> str:
    """Shares with the same key are the same run but for the seed."""
    return json.dumps({"experiment": record["experiment"], "model": record["model"],
                       "settings": settings_of(record)}, sort_keys=True, separators=(",", ":"))


@dataclass
class Group:
    key: str
    experiment: str
    model: str
    settings: dict
    shares: list[dict] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({s["seed"] for s in self.shares})


def groups(rows: list[dict]) -> list[Group]:
    """The board's shares by group, newest group activity first."""
    out: dict[str, Group] = {}
    for r in rows:
        rec = r["record"]
        g = out.setdefault(r["group_key"], Group(r["group_key"], rec["experiment"], rec["model"],
                                                 settings_of(rec)))
        g.shares.append(r)
    return sorted(out.values(), key=lambda g: -g.shares[-1]["id"])


def changed_settings(group: Group) -> dict:
    """The settings that differ from the experiment's defaults (what a heading names)."""
    from lab.experiment import config_record
    from lab.registry import get
    default = _without_seed(config_record(get(group.experiment).config_class()))
    return _diff(json.loads(json.dumps(default)), group.settings)


def _diff(default, got, prefix: str = "") -> dict:
    out = {}
    for k, v in got.items():
        d = default.get(k) if isinstance(default, dict) else None
        if isinstance(v, dict) and isinstance(d, dict):
            out |= _diff(d, v, f"{prefix}{k}.")
        elif v != d:
            out[f"{prefix}{k}"] = v
    return out


def label(share: dict, i: int) -> str:
    """A share's name on an axis: its place on the board, nickname and seed."""
    return f"{i + 1}. {share['nickname']} (seed {share['seed']})"


# ---------------------------------------------------------------- activation maximization

@dataclass
class Agreement:
    """Optima compared with each other, against random vectors of the same norms."""
    labels: list[str]           # one per optimum: "1. ana (seed 0)", "... restart 2"
    cosine: np.ndarray          # [n, n] optimized
    null_cosine: np.ndarray     # [n, n] one draw of the null, for the picture
    threshold: float            # the null's 95th percentile of a pair's cosine
    above: int                  # optimized pairs above it
    pairs: int
    mean: float                 # mean pair cosine, optimized
    null_mean: float
    seeds: int

    @property
    def n(self) -> int:
        return len(self.labels)

    def sentence(self) -> str:
        if self.n < 2:
            return ("1 optimum so far: the board compares optima once a second seed is shared.")
        return (f"{self.n} optima from {self.seeds} seed{'s' if self.seeds != 1 else ''}: "
                f"{self.above} of {self.pairs} pairs more alike than random (cosine above "
                f"{self.threshold:.3f}, the 95th percentile for random vectors of the same "
                f"norms; mean pair cosine {self.mean:.3f}, random {self.null_mean:.3f}).")


def optima(group: Group) -> tuple[np.ndarray, list[str]]:
    """Every restart of every share: vectors [n, n_tokens, d] and their labels."""
    vecs, labels = [], []
    for i, s in enumerate(group.shares):
        v = s["record"]["vectors"]
        for r, restart in enumerate(v):
            vecs.append(restart)
            labels.append(label(s, i) + (f" restart {r}" if len(v) > 1 else ""))
    return np.asarray(vecs, dtype=np.float64), labels


def cosine_matrix(v: np.ndarray) -> np.ndarray:
    """Cosine between the flattened [n_tokens * d] inputs."""
    flat = v.reshape(len(v), -1)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return flat @ flat.T


def same_norm_null(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian directions scaled to each optimum's norm at each position."""
    g = rng.standard_normal(v.shape)
    g /= np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
    return g * np.linalg.norm(v, axis=-1, keepdims=True)


def agreement(group: Group, seed: int = 0) -> Agreement:
    """The class's optima against the null (a fixed seed: the board says the same each time)."""
    v, labels = optima(group)
    n, rng = len(v), np.random.default_rng(seed)
    c = cosine_matrix(v)
    draws = [same_norm_null(v, rng) for _ in range(max(1, -(-NULL_VECTORS // max(n, 2))))] if n > 1 else [v]
    mats = [cosine_matrix(d) for d in draws]
    iu = np.triu_indices(n, 1)
    null_pairs = np.concatenate([m[iu] for m in mats]) if n > 1 else np.zeros(1)
    thr = float(np.quantile(null_pairs, 0.95))
    pairs = c[iu]
    return Agreement(labels, c, mats[0], thr, int((pairs > thr).sum()), len(pairs),
                     float(pairs.mean()) if len(pairs) else float("nan"),
                     float(null_pairs.mean()), len(group.seeds))


def actmax_table(group: Group) -> list[dict]:
    """One row per share: who, seed, final activation, nearest tokens."""
    out = []
    for i, s in enumerate(group.shares):
        rec = s["record"]
        rows = rec["restarts"]
        out.append({"#": i + 1, "nickname": s["nickname"], "seed": s["seed"],
                    "final activation": float(np.mean([r["final"] for r in rows])),
                    "nearest tokens": " / ".join(r["nearest_tokens"] for r in rows),
                    "best cosine to a token": rec["best_cosine"], "share": s["share_id"]})
    return out


# ---------------------------------------------------------------- SAE

@dataclass
class SAEAgreement:
    rows: list[dict]            # per share: best latent, score, p, its closest match elsewhere
    matches: int                # pairs whose best latents match (max cosine >= MATCH)
    pairs: int
    null_95: float              # random directions: 95th percentile of the same max cosine
    seeds: int

    def sentence(self) -> str:
        n = len(self.rows)
        if n < 2:
            return "1 SAE so far: the board compares decoder directions once a second seed is shared."
        return (f"{n} SAEs from {self.seeds} seed{'s' if self.seeds != 1 else ''}: in "
                f"{self.matches} of {self.pairs} pairs a run's best latent has a matching decoder "
                f"direction among the other run's top latents (max cosine at least {MATCH:g}; "
                f"random directions reach {self.null_95:.2f}).")


def _directions(rec: dict) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Unit decoder directions of the shared top latents, their ids, and the best one's."""
    dec = rec["decoder"]
    ids = [int(k) for k in dec]
    d = np.asarray([dec[k] for k in dec], dtype=np.float64)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    best = str(rec["best_latent"])
    b = d[list(dec).index(best)] if best in dec else d[0]
    return d, ids, b


def sae_agreement(group: Group, seed: int = 0) -> SAEAgreement:
    dirs = [_directions(s["record"]) for s in group.shares]
    n, rows, matches = len(dirs), [], 0
    best_match = np.full((n, n), -1.0)
    for i in range(n):
        for j in range(n):
            if i != j:
                best_match[i, j] = float((dirs[j][0] @ dirs[i][2]).max())
    for i, s in enumerate(group.shares):
        rec = s["record"]
        j = int(best_match[i].argmax()) if n > 1 else None
        rows.append({"#": i + 1, "nickname": s["nickname"], "seed": s["seed"],
                     "best latent": rec["best_latent"], "score": rec["best_score"],
                     "p": rec["best_p"], "p (family-wise)": rec["best_p_fwer"],
                     "max cosine elsewhere": None if j is None else best_match[i, j],
                     "closest run": None if j is None else label(group.shares[j], j),
                     "share": s["share_id"]})
    iu = np.triu_indices(n, 1)
    matches = int((np.maximum(best_match, best_match.T)[iu] >= MATCH).sum())
    width, k = dirs[0][0].shape[1], max(len(d[1]) for d in dirs)
    return SAEAgreement(rows, matches, len(iu[0]), _null_max_cosine(width, k, seed), len(group.seeds))


def _null_max_cosine(width: int, k: int, seed: int, draws: int = 500) -> float:
    """95th percentile of one random direction's max cosine against k random directions."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((draws, width))
    b = rng.standard_normal((draws, k, width))
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    return float(np.quantile(np.einsum("nd,nkd->nk", a, b).max(1), 0.95))


# ---------------------------------------------------------------- feature view

def feature_table(group: Group) -> list[dict]:
    out = []
    for i, s in enumerate(group.shares):
        rec = s["record"]
        out.append({"#": i + 1, "nickname": s["nickname"], "seed": s["seed"],
                    "latent": rec["latent"], "verdict": rec["verdict"], "share": s["share_id"]})
    return out


def feature_sentence(group: Group) -> str:
    """How many shares reach each verdict (its words before the first colon)."""
    kinds: dict[str, int] = {}
    for s in group.shares:
        head = s["record"]["verdict"].split(":")[0].strip() or "no verdict"
        kinds[head] = kinds.get(head, 0) + 1
    n = len(group.shares)
    parts = ", ".join(f"{c} {k!r}" for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]))
    return f"{n} feature view{'s' if n != 1 else ''} from {len(group.seeds)} seed(s): {parts}."


# ---------------------------------------------------------------- one line per share

def headline(rec: dict) -> str:
    """A share's main number in words (the CSV export's column)."""
    name = rec["experiment"]
    if name in ("actmax", "repro"):
        finals = [r["final"] for r in rec["restarts"]]
        return f"final activation {np.mean(finals):.4g}; nearest tokens " + " / ".join(
            r["nearest_tokens"] for r in rec["restarts"])
    if name == "sae":
        return (f"best latent {rec['best_latent']}: score {rec['best_score']:.4g}, p "
                f"{rec['best_p']:.3g}, family-wise p {rec['best_p_fwer']:.3g}")
    return f"latent {rec['latent']}: {rec['verdict']}"
