"""`sae`: train a sparse autoencoder on one layer's activations over a text, then score
latents for a word list against a permutation control (the Palinka experiment, seed 002)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from lab.cli import emit


def register(sub) -> None:
    p = sub.add_parser("sae", help="sparse autoencoder on a text + selectivity with a permutation control")
    p.add_argument("--model", required=True, help="model name or folder (e.g. smollm2-135m)")
    p.add_argument("--layer", type=int, required=True, help="block index")
    p.add_argument("--text-file", help="UTF-8 text (default: the bundled pálinka text)")
    p.add_argument("--site", default="mlp_out", choices=["mlp_out", "mlp_post"],
                   help="blocks.L.hook_mlp_out (default) or blocks.L.mlp.hook_post")
    p.add_argument("--keep-first", action="store_true", help="keep position 0 (dropped by default)")
    p.add_argument("--activation", default="topk", choices=["topk", "relu"])
    p.add_argument("--k", type=int, default=32, help="active latents per token (topk)")
    p.add_argument("--latents", type=int, default=None, help="dictionary size (default 8 x width)")
    p.add_argument("--untied", action="store_true", help="separate decoder weight")
    p.add_argument("--l1", type=float, default=1e-3, help="L1 weight (relu)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", default="Romania, Hungary, Greece", help="comma-separated words")
    p.add_argument("--control", default="fruit, alcohol", help="comma-separated words")
    p.add_argument("--shuffles", type=int, default=1000, help="permutation draws")
    p.add_argument("--top", type=int, default=10, help="rows of the selectivity table")
    p.add_argument("--save", help="folder to save the SAE in (safetensors + config.json)")
    p.add_argument("--device", default="cpu", help="device for the language model")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import time

    from lab import sae as lsae
    from lab import selectivity as lsel
    from lab.models import load_model
    from lab.paths import read_text

    if not math.isfinite(args.lr):
        raise ValueError(f"--lr must be a finite number, got {args.lr}")
    cfg = lsae.SAEConfig(n_latents=args.latents, k=args.k, tied=not args.untied,
                         activation=args.activation, l1=args.l1, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, seed=args.seed)
    sel_cfg = lsel.SelectivityConfig(target=lsel.parse_words(args.target),
                                     control=lsel.parse_words(args.control),
                                     n_shuffles=args.shuffles, top=args.top, seed=args.seed)
    text = Path(args.text_file).read_text(encoding="utf-8") if args.text_file else read_text("palinka.txt")
    lm = load_model(args.model, args.device)
    if not 0 <= args.layer < lm.n_layers:
        raise ValueError(f"layer {args.layer} out of range for {lm.name}: valid 0..{lm.n_layers - 1}")
    ta = lsae.text_activations(lm, text, args.layer, args.site, drop_first=not args.keep_first)
    cfg.latents_for(ta.acts.shape[1])
    lsel.label_tokens(text, ta.spans, sel_cfg)   # bad word lists fail before training

    def progress(row: dict) -> None:
        if not args.quiet:
            print(f"epoch {row['epoch']}/{row['epochs']} loss {row['loss']:.4g} "
                  f"nmse {row['nmse']:.4g} l0 {row['l0']:.1f} ({row['seconds']:.1f} s)",
                  file=sys.stderr)

    t0 = time.perf_counter()
    sae, history = lsae.train_sae(ta.acts, cfg, on_epoch=progress)
    train_s = time.perf_counter() - t0
    res = lsel.analyze(sae, ta, text, sel_cfg)
    meta = {"model": lm.name, "layer": args.layer, "hook": ta.hook, "seed": args.seed,
            "config": vars(cfg), "n_tokens": ta.n_tokens, "dropped_first_token": ta.dropped_first}
    if args.save:
        sae.save(args.save, meta)
    final = history.groupby("split").last().drop(columns="epoch")
    top = res.selectivity.top()
    payload = {**meta, "n_latents": sae.n_latents, "train_seconds": round(train_s, 2),
               "final": {s: {k: float(v) for k, v in row.items()} for s, row in final.iterrows()},
               **res.summary(), "verdict": res.selectivity.sentence(), "warning": res.warning,
               "top_latents": top.to_dict(orient="records")}
    emit(payload, args.json)
    return 0
