"""`laminar`: a fresh SAE on every layer's MLP output over an article (seed 004), headless,
for long sweeps on a bigger machine. Progress per layer on stderr; rows to --csv."""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from lab.cli import emit


def register(sub) -> None:
    from lab.laminar import PRESETS
    p = sub.add_parser("laminar", help="SAE at every layer: density and reconstruction vs depth")
    p.add_argument("--model", required=True, help="model name or folder (e.g. smollm2-135m)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--url", help="Wikipedia article URL or title (https, wikipedia.org only)")
    src.add_argument("--text-file", help="UTF-8 text file (default: the bundled LED text)")
    p.add_argument("--preset", default="quick", choices=list(PRESETS),
                   help="quick: the trend in ~2 min on 2 CPU cores; seed: 10 x 1024 tokens, 75 epochs")
    p.add_argument("--windows", type=int, help="number of token windows (overrides the preset)")
    p.add_argument("--window-len", type=int, help="tokens per window (overrides the preset)")
    p.add_argument("--epochs", type=int, help="SAE epochs per layer (overrides the preset)")
    p.add_argument("--activation", choices=["relu", "topk"], help="relu (L1, default) or topk")
    p.add_argument("--l1", type=float, help="L1 weight, normalized units (overrides the preset)")
    p.add_argument("--expansion", type=int, help="latents / d_model (overrides the preset)")
    p.add_argument("--layers", help="comma-separated layer indices (default: all)")
    p.add_argument("--fit", action="store_true",
                   help="when the corpus is too short, use the largest number of windows that fits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="device for the language model")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; "
                                                 "1 is often faster on a busy shared machine)")
    p.add_argument("--csv", help="write the per-layer rows to this CSV file")
    p.add_argument("--quiet", action="store_true", help="no per-layer progress on stderr")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)


def _config(args):
    from lab.laminar import preset
    changes = {"seed": args.seed}
    for field, value in (("n_windows", args.windows), ("window_len", args.window_len),
                         ("epochs", args.epochs), ("activation", args.activation),
                         ("l1", args.l1), ("expansion", args.expansion)):
        if value is not None:
            changes[field] = value
    if args.layers:
        try:
            changes["layers"] = tuple(int(x) for x in args.layers.split(","))
        except ValueError:
            raise ValueError(f"--layers must be comma-separated integers, got {args.layers!r}") from None
    return preset(args.preset, **changes)


def _corpus(args):
    from lab import corpus
    if args.url:
        return corpus.fetch_wikipedia(args.url)
    if args.text_file:
        text = Path(args.text_file).read_text(encoding="utf-8")
        return corpus.text_article(text, Path(args.text_file).name, source="file")
    return corpus.bundled_article()


def _run(args) -> int:
    from lab import corpus, laminar
    from lab.models import load_model

    cfg = _config(args)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    article = _corpus(args)
    lm = load_model(args.model, args.device)
    cfg.layers_of(lm)
    ids = corpus.tokenize(lm.tokenizer, article.text)
    try:
        windows = corpus.sample_windows(ids, cfg.n_windows, cfg.window_len, cfg.seed)
    except corpus.CorpusTooShort as e:
        if not args.fit or not e.offers:
            raise ValueError(f"{e} (pass --fit to use what fits)") from None
        cfg = replace(cfg, n_windows=e.offers[0][0], window_len=e.offers[0][1])
        windows = corpus.sample_windows(ids, cfg.n_windows, cfg.window_len, cfg.seed)
        print(f"corpus too short: using {cfg.n_windows} x {cfg.window_len} windows", file=sys.stderr)

    def on_layer(row, _rows):
        if not args.quiet:
            print(f"layer {row['layer']}: density {row['density']:.4f} nmse {row['nmse']:.4f} "
                  f"held-out {row['val_nmse']:.4f} ({row['seconds']:.1f} s)", file=sys.stderr)

    t0 = time.perf_counter()
    rows = laminar.sweep(lm, windows, cfg, on_layer=on_layer)
    wall = time.perf_counter() - t0
    if args.csv:
        rows.to_csv(args.csv, index=False)
    payload = {"model": lm.name, "preset": args.preset, "config": vars(cfg) | {"layers": cfg.layers},
               "corpus": article.meta() | {"tokens": int(ids.numel())},
               "wall_seconds": round(wall, 2), "threads": _threads(),
               "rows": rows.to_dict(orient="records")}
    if not args.json:
        payload["rows"] = f"{len(rows)} layers" + (f" (written to {args.csv})" if args.csv else "")
    emit(payload, args.json)
    return 0


def _threads() -> int:
    import torch
    return torch.get_num_threads()
