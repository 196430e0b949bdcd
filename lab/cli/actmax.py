"""`actmax` and `repro`: activation maximization and its reproducibility, headless.

    python -m lab actmax --model smollm2-135m --layer 4 --dim 90 --json
    python -m lab repro  --model smollm2-135m --layer 8 --dim 91 --restarts 10 --json
"""
from __future__ import annotations

import sys

from lab.cli import emit
from lab.models import DEVICES, MODEL_NAMES, load_model


def _common(p, layer: int, dim: int, restarts: int) -> None:
    from lab.actmax import DEFAULT_L2, REDUCES
    p.add_argument("--model", default="smollm2-135m", help=f"one of {MODEL_NAMES} or a folder")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--layer", type=int, default=layer,
                   help="hidden_states index: 0 = embeddings, L = output of block L-1")
    p.add_argument("--dim", type=int, default=dim, help="residual dimension to maximize")
    p.add_argument("--tokens", type=int, default=5, help="number of optimized input vectors")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--l2", type=float, default=DEFAULT_L2, help="weight of ||x||^2")
    p.add_argument("--restarts", type=int, default=restarts)
    p.add_argument("--reduce", choices=REDUCES, default="mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--history", metavar="CSV", help="also write the tidy step history here")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    p.add_argument("--json", action="store_true")


def register(sub) -> None:
    a = sub.add_parser("actmax", help="gradient ascent on input embeddings for one residual dim")
    _common(a, layer=4, dim=90, restarts=1)
    a.set_defaults(func=_actmax)
    r = sub.add_parser("repro", help="activation maximization from many starts: do they agree?")
    _common(r, layer=8, dim=91, restarts=10)
    r.set_defaults(func=_repro)


def _run(args):
    from lab.actmax import ActMaxConfig, maximize
    cfg = ActMaxConfig(layer=args.layer, dim=args.dim, n_tokens=args.tokens, steps=args.steps,
                       lr=args.lr, l2=args.l2, restarts=args.restarts, reduce=args.reduce,
                       seed=args.seed)  # validates before the model loads
    lm = load_model(args.model, args.device)
    cfg.check(lm)
    every = max(1, cfg.steps // 20)

    def progress(info):
        if args.progress and (info.step % every == 0 or info.step == info.steps):
            print(f"step {info.step}/{info.steps}  target mean {info.target.mean():.3f}",
                  file=sys.stderr)
    result = maximize(lm, cfg, on_step=progress)
    if args.history:
        result.history.to_csv(args.history, index=False)
    return lm, result


def _brief(result) -> dict:
    per = result.per_restart()
    return {"model": result.model, "layer": result.config.layer, "dim": result.config.dim,
            "seconds": round(result.seconds, 2), "best_cosine": round(result.best_cosine, 4),
            "initial": per.initial.round(4).tolist(), "final": per.final.round(4).tolist(),
            "gain": per.gain.round(2).tolist(), "nearest_tokens": per.nearest_tokens.tolist(),
            "gap_meter": {k: round(v, 4) for k, v in result.gap.summary().items()}}


def _actmax(args) -> int:
    _, result = _run(args)
    emit(result.to_json() if args.json else _brief(result), args.json)
    return 0


def _repro(args) -> int:
    from lab.actmax import reproducibility
    lm, result = _run(args)
    rep = reproducibility(lm, result)
    if args.json:
        emit({**result.to_json(), "reproducibility": rep.to_json()}, True)
    else:
        s = rep.summary().set_index("vectors")
        emit({**_brief(result),
              "unique_tokens": f"{s.loc['optimized', 'unique']} of {s.loc['optimized', 'decoded']}",
              "null_unique_tokens": f"{s.loc['null control', 'unique']} of {s.loc['null control', 'decoded']}",
              "mean_jaccard": round(s.loc["optimized", "mean_jaccard"], 3),
              "null_mean_jaccard": round(s.loc["null control", "mean_jaccard"], 3),
              "mean_cosine": round(s.loc["optimized", "mean_cosine"], 3),
              "tokens_unchanged_from_start": f"{rep.same_as_start} of {s.loc['optimized', 'decoded']}",
              "mean_cosine_of_moves": round(rep.mean_step_cosine, 3),
              "top_tokens": rep.optimized.frequencies.head(5)[["token", "count"]].values.tolist()},
             False)
    return 0
