"""`hidden`: per-layer statistics of the residual stream and the layer x layer R^2 matrix."""
from __future__ import annotations

from pathlib import Path

from lab.cli import emit
from lab.hidden import HiddenConfig, decode_upload, default_text, hidden_states
from lab.models import DEVICES, MODEL_NAMES, load_model

_COLUMNS = ["label", "tokens", "mean", "std", "min", "max", "excess_kurtosis", "outlier_frac", "top_dims"]


def register(sub) -> None:
    p = sub.add_parser("hidden", help="hidden-state distributions of every layer over a text")
    p.add_argument("--model", required=True, help=f"one of {MODEL_NAMES} or a folder")
    p.add_argument("--text-file", type=Path, default=None,
                   help="a UTF-8 text file (default: the paragraph bundled with the lab)")
    p.add_argument("--keep-first-token", action="store_true",
                   help="keep token 0 in the statistics (it has no context and extreme values)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="cut the text to this many tokens (default and upper bound: the model's context)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--seed", type=int, default=0, help="picks the scatter sample (not printed here)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_hidden)


def _hidden(args) -> int:
    text = decode_upload(args.text_file.read_bytes()) if args.text_file else default_text()
    cfg = HiddenConfig(keep_first_token=args.keep_first_token, seed=args.seed)
    result = hidden_states(load_model(args.model, args.device), text, cfg, args.max_tokens)
    if args.json:
        payload = result.to_dict()
        payload.pop("cov")  # the command promises the summary and R^2; cov is in the page's JSON
        emit(payload, True)
        return 0
    note = " (truncated)" if result.truncated else ""
    print(f"model: {result.model}\ntokens: {result.n_tokens} used of {result.n_text_tokens}{note}, "
          f"token 0 {'kept' if args.keep_first_token else 'excluded'}\n")
    print(result.summary[_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\nR^2 (squared Pearson correlation over tokens x d_model):")
    print(result.matrix("r2").to_string(float_format=lambda v: f"{v:.2f}"))
    return 0
