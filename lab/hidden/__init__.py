"""Hidden-state distributions: one forward pass, every layer's residual stream, its statistics.

The states, in order (n = number of blocks, so n + 2 states in all):

    state 0        "embed"                    hook_embed: the input to block 0
    state L + 1    "block L"                  blocks.{L}.hook_resid_post: output of block L, raw
    state n + 1    "final norm"               the last block's output after the final norm,
                                              which is what HF returns as its last hidden state

The raw residual and the normed copy of the last state are both kept, labelled, because the
final norm rescales every token: "the last layer narrows again" can be a fact about the
residual stream or only about the norm, and the two states tell which.

    config.py    HiddenConfig (text, token limit, statistics settings), text checks
    capture.py   the forward pass -> HiddenStates (seconds: the expensive step)
    stats.py     analyze(states, cfg) -> HiddenResult (a fraction of that)
    result.py    HiddenResult: tables, to_record(), frames(), brief()

`run(lm, cfg)` is both steps. It keeps its last forwards (FORWARDS, bounded in bytes, keyed on
the model and `forward_config(cfg)`), so a statistics setting changed on the page, a new job
for the runner, reuses the forward instead of rerunning the model.
"""
from __future__ import annotations

from lab.cache import ResultCache
from lab.experiment import OnProgress, report
from lab.hidden.capture import (HiddenStates, capture_states, hook_points, state_labels,
                                tokenize)
from lab.hidden.config import (BIN_SCALES, EMPTY_TEXT, HiddenConfig, check_plain, check_text,
                               decode_upload, default_text)
from lab.hidden.result import HiddenResult
from lab.hidden.stats import analyze, bin_edges, symlog_constant
from lab.models import LabModel

__all__ = ["BIN_SCALES", "EMPTY_TEXT", "HiddenConfig", "HiddenResult", "HiddenStates", "analyze",
           "bin_edges", "capture", "capture_states", "check_plain", "check_text",
           "decode_upload", "default_text", "forward_config", "hook_points", "partial_result", "run", "state_labels",
           "symlog_constant", "tokenize"]


FORWARD_BYTES = 256 << 20   # the captured forwards kept for reuse, process-wide (one smollm2
FORWARDS = ResultCache(FORWARD_BYTES)   # forward of 1,024 tokens: 32 x 1,024 x 576 floats, 75 MB)


def forward_config(cfg: HiddenConfig) -> HiddenConfig:
    """`cfg` with only what the forward reads (text, token limit): a cache key for `capture`."""
    return HiddenConfig(text=cfg.text, max_tokens=cfg.max_tokens)


def capture(lm: LabModel, cfg: HiddenConfig) -> HiddenStates:
    """The forward pass of `cfg`'s text (the expensive half of `run`)."""
    return capture_states(lm, cfg.input_text(), cfg.max_tokens)


def run(lm: LabModel, cfg: HiddenConfig, on_progress: OnProgress | None = None, *,
        states: HiddenStates | None = None) -> HiddenResult:
    """One forward pass over `cfg`'s text, then its statistics. `states`: that forward
    already done: `capture(lm, c)` on this model for a `c` with `forward_config(c)` equal
    to `forward_config(cfg)`."""
    if states is None:
        key = (lm.name, str(lm.device), forward_config(cfg))
        states = FORWARDS.get(key)
        if states is None:
            report(on_progress, 0, 2, "stage", f"Running {lm.name} once over the text...")
            states = capture(lm, cfg)
            FORWARDS.put(key, states)
    elif states.model != lm.name:
        raise ValueError(f"The states were captured with {states.model}, not {lm.name}.")
    report(on_progress, 1, 2, "stage", f"Statistics of {states.n_states} states over "
                                       f"{states.n_tokens} tokens...", partial=states)
    result = analyze(states, cfg)
    report(on_progress, 2, 2, "stage", "Done.", partial=result)
    return result


def partial_result(lm: LabModel, cfg: HiddenConfig, partial) -> HiddenResult:
    """What a run stopped after its forward keeps: the statistics of the captured states."""
    return analyze(partial, cfg) if isinstance(partial, HiddenStates) else partial
