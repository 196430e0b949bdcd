"""The shape of the curves, in words: the two questions the seed asks of a profile."""
from __future__ import annotations

import pandas as pd


def _spearman(a: pd.Series, b: pd.Series) -> float:
    if len(a) < 3:
        return float("nan")
    return float(a.rank().corr(b.rank()))


def shape_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model, the two questions the seed asks, answered from the rows:
    does density rise with depth (Spearman rank correlation with the layer index), and is
    the normalized MSE U-shaped (its minimum inside the middle third of the depth, with both
    ends higher than the minimum by at least 10% of the curve's range)."""
    out = []
    for model, g in rows.sort_values("layer").groupby("model", sort=False):
        nmse = g["nmse"].to_numpy()
        lo = int(nmse.argmin()) if len(nmse) else 0
        depth_min = float(g["relative_depth"].iloc[lo]) if len(nmse) else float("nan")
        margin = 0.1 * (nmse.max() - nmse.min()) if len(nmse) else 0.0
        u = (len(nmse) >= 3 and 1 / 3 <= depth_min <= 2 / 3
             and nmse[0] - nmse[lo] > margin and nmse[-1] - nmse[lo] > margin)
        out.append({"model": model, "layers": len(g),
                    "density_vs_depth_rho": _spearman(g["layer"], g["density"]),
                    "density_first": float(g["density"].iloc[0]),
                    "density_last": float(g["density"].iloc[-1]),
                    "nmse_min_layer": int(g["layer"].iloc[lo]) if len(nmse) else -1,
                    "nmse_min_depth": depth_min, "nmse_u_shaped": bool(u)})
    return pd.DataFrame(out)


def describe_shape(s: dict) -> str:
    """One sentence on a model's curves, from a shape_summary row."""
    rho = s["density_vs_depth_rho"]
    if rho != rho:  # NaN: too few layers
        return f"{s['model']}: too few layers ({s['layers']}) to call a trend."
    trend = ("rises with depth" if rho > 0.5 else "falls with depth" if rho < -0.5
             else "shows no clear trend with depth")
    u = "is U-shaped" if s["nmse_u_shaped"] else "is not U-shaped"
    return (f"{s['model']}: density {trend} (rank correlation {rho:+.2f}; "
            f"{s['density_first']:.3f} at the first layer, {s['density_last']:.3f} at the last); "
            f"normalized MSE {u} (lowest at layer {s['nmse_min_layer']}, "
            f"relative depth {s['nmse_min_depth']:.2f}).")
